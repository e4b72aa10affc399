"""`midillm-lite gen` end to end on a tiny random-weight model made by the conversion stage: files, seeds, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mido
import pytest
from clirun import run_cli

from devkit.checkpoints import VOCAB_GGUF
from midillm_lite.amt.codec import decode_tokens
from midillm_lite.amt.midi import read_midi
from midillm_lite.amt.tokens_file import read_tokens
from midillm_lite.amt.vocab import DUR_OFFSET, NOTE_OFFSET, REST, SEPARATOR, TIME_OFFSET, TOKENS_PER_NOTE

DATA = Path(__file__).parent / "data"
PROMPT = "A cheerful rock song with bright electric guitars"
FAST = ["--max-tokens", "30", "--threads", "2", "--quiet"]


@pytest.fixture(scope="module")
def model(tiny_gguf) -> str:
    return str(tiny_gguf())


def gen(args: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(["gen", *args], capsys)


def token_files(folder: Path) -> list[list[int]]:
    return [read_tokens(p) for p in sorted(folder.glob("gen_*_tokens.txt"))]


def test_outputs_layout_and_content(model, tmp_path, capsys):
    out = tmp_path / "run"
    code, _stdout, stderr = gen([PROMPT, "--model", model, "-n", "3", "--seed", "7", "-o", str(out), *FAST], capsys)
    assert code == 0, stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [*(f"gen_{i}{s}" for i in (1, 2, 3) for s in (".mid", ".png", "_tokens.txt")),
                     "generation_stats.json", "prompt.txt"]  # fmt: skip
    assert (out / "prompt.txt").read_text() == PROMPT + "\n"
    outputs = token_files(out)
    assert [len(t) for t in outputs] == [30, 30, 30]
    assert len({tuple(t) for t in outputs}) == 3  # the outputs differ from each other
    for i, tokens in enumerate(outputs, start=1):
        assert all(0 <= t < SEPARATOR and t != REST for t in tokens)
        kinds = [(TIME_OFFSET <= t < DUR_OFFSET, DUR_OFFSET <= t < NOTE_OFFSET, t >= NOTE_OFFSET) for t in tokens]
        assert all(k[i % TOKENS_PER_NOTE] for i, k in enumerate(kinds))  # strict: slot grammar
        onsets = tokens[0::3]
        assert onsets == sorted(onsets)  # strict: time never runs backwards
        assert not decode_tokens(tokens).repairs
        back = read_midi(out / f"gen_{i}.mid").notes
        assert len(back) == 10 and mido.MidiFile(out / f"gen_{i}.mid").type == 1
    stats = json.loads((out / "generation_stats.json").read_text())
    assert stats["prompt"] == PROMPT and stats["sampling"]["seed"] == 7 and stats["sampling"]["top_p"] == 0.98
    assert stats["model"]["quant"] == "f32" and len(stats["model"]["sha256_prefix"]) == 16
    assert [o["repairs"] for o in stats["outputs"]] == [{}, {}, {}]
    assert stats["timings"]["tokens_generated"] == 90 and not stats["interrupted"]


def test_same_seed_same_tokens_for_one_and_many_outputs(model, tmp_path, capsys):
    for n in ("1", "3"):
        runs = []
        for name in ("a", "b"):
            code, _, err = gen([PROMPT, "-m", model, "-n", n, "--seed", "11", "-o", str(tmp_path / n / name), *FAST],
                               capsys)  # fmt: skip
            assert code == 0, err
            runs.append(token_files(tmp_path / n / name))
        assert runs[0] == runs[1] and len(runs[0]) == int(n)


def test_json_summary(model, tmp_path, capsys):
    code, stdout, _ = gen([PROMPT, "-m", model, "-n", "2", "--json", "-o", str(tmp_path / "j"), *FAST], capsys)
    result = json.loads(stdout)
    assert code == 0 and result["folder"] == str(tmp_path / "j")
    assert [Path(o["file"]).name for o in result["outputs"]] == ["gen_1.mid", "gen_2.mid"]


def test_greedy_outputs_are_identical(model, tmp_path, capsys):
    # With temperature 0 every sequence follows the argmax: equal outputs prove the shared prompt cache is right.
    code, _, _ = gen([PROMPT, "-m", model, "-n", "3", "--temperature", "0", "-o", str(tmp_path / "g"), *FAST], capsys)
    outputs = token_files(tmp_path / "g")
    assert code == 0 and outputs[0] == outputs[1] == outputs[2]


def test_seconds_limit(model, tmp_path, capsys):
    code, _, _ = gen([PROMPT, "-m", model, "-n", "2", "--seconds", "5", "-o", str(tmp_path / "s"),
                      "--max-tokens", "600", "--quiet"], capsys)  # fmt: skip
    assert code == 0
    for tokens in token_files(tmp_path / "s"):
        assert len(tokens) % 3 == 0 and all(t - TIME_OFFSET < 500 for t in tokens[0::3])


def test_default_folder_and_prompts_file(model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two pieces\nA slow piano ballad\n\nA fast fiddle reel\n")
    code, _, err = gen(["--prompts-file", str(prompts), "-m", model, "-n", "1", *FAST], capsys)
    assert code == 0, err
    folders = sorted((tmp_path / "midillm-out").iterdir())
    assert len(folders) == 2 and {f.name.split("-", 2)[2] for f in folders} == {
        "a-slow-piano-ballad",
        "a-fast-fiddle-reel",
    }
    code, _, err = gen([PROMPT, "-m", model, "-n", "1", *FAST], capsys)
    assert code == 0 and len(list((tmp_path / "midillm-out").iterdir())) == 3


def test_interactive_reads_prompts_until_an_empty_line(model, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "midillm_lite", "gen", "-i", "-m", model, "-n", "1", "-o", str(tmp_path), *FAST],
        input="a waltz\na march\n\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert len(list(tmp_path.iterdir())) == 2


def test_continuation_holds_the_original_and_the_new_music(model, tmp_path, capsys):
    source = DATA / "strawberry.mid"
    code, _, err = gen(["continue this", "-m", model, "-n", "1", "--continue", str(source), "--from", "20",
                        "-o", str(tmp_path / "c"), *FAST], capsys)  # fmt: skip
    assert code == 0, err
    original = [n for n in read_midi(source).notes if n.onset < 2000]
    combined = read_midi(tmp_path / "c" / "gen_1.mid").notes
    assert len(combined) == len(original) + 10
    new = sorted(set(combined) - set(original))
    assert new and min(n.onset for n in new) >= max(n.onset for n in original) - 5000
    stats = json.loads((tmp_path / "c" / "generation_stats.json").read_text())
    assert stats["continuation"]["window_notes"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["", ], "the description is empty"),
        (["   ", ], "the description is empty"),
        ([PROMPT, "-n", "0"], "between 1 and"),
        ([PROMPT, "-n", "100000"], "between 1 and"),
        ([PROMPT, "--temperature", "nan"], "temperature must be a finite number"),
        ([PROMPT, "--top-p", "0"], "top-p must be in (0, 1]"),
        ([PROMPT, "--top-p", "1.5"], "top-p must be in (0, 1]"),
        ([PROMPT, "--seconds", "0"], "--seconds must be positive"),
        ([PROMPT, "--from", "3"], "--from needs --continue"),
        ([], "give exactly one of"),
        ([PROMPT, "--interactive"], "give exactly one of"),
        ([PROMPT * 5000], "shorten the description"),
        ([PROMPT, "--max-tokens", "-5"], "must not be negative"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(model, tmp_path, capsys, args, message):
    code, _stdout, stderr = gen([*args, "-m", model, "-o", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2 and message in stderr and stderr.count("\n") == 1, stderr
    assert not list(tmp_path.rglob("*.mid"))


def test_bad_models_and_folders(model, tmp_path, capsys):
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(Path(model).read_bytes()[:5000])
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [
        (["-m", str(VOCAB_GGUF)], "is not a MIDI-LLM GGUF"),
        (["-m", str(truncated)], "truncated or corrupt"),
        (["-m", str(tmp_path / "none.gguf")], "no such model file"),
        (["-m", "../../etc/passwd-model"], "no such model file"),
        (["-m", "not a model"], "is not a model file, a registry name"),
        (["-m", model, "-o", str(taken)], "is not empty; use --force"),
        (["-m", model, "-o", str(taken / "keep.txt")], "is a file"),
    ]
    for args, message in cases:
        code, _, stderr = gen([PROMPT, *args, "--quiet"], capsys)
        assert code == 2 and message in stderr and stderr.count("\n") == 1, (args, stderr)
    assert (taken / "keep.txt").read_text() == "mine"
    code, _, _ = gen([PROMPT, "-m", model, "-o", str(taken), "--force", *FAST], capsys)
    assert code == 0 and (taken / "keep.txt").exists() and (taken / "gen_4.mid").exists()


def test_no_model_anywhere_says_how_to_get_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MIDILLM_HOME", str(tmp_path))
    monkeypatch.setattr("midillm_lite.models.REPO_MODELS", tmp_path / "none")
    code, _, stderr = gen([PROMPT, "--quiet"], capsys)
    assert code == 2 and "no model found" in stderr and "midillm-lite convert" in stderr


def test_output_folder_that_cannot_be_made(model, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should go")
    code, _, stderr = gen([PROMPT, "-m", model, "-o", str(blocker / "x"), "--quiet"], capsys)
    assert code == 2 and "cannot create" in stderr and stderr.count("\n") == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_partial_outputs(model, tmp_path, sig):
    out = tmp_path / "partial"
    proc = subprocess.Popen(
        [sys.executable, "-m", "midillm_lite", "gen", PROMPT, "-m", model, "-n", "4", "-o", str(out),
         "--max-tokens", "2046", "--threads", "2", "--seed", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("model: ")  # loaded; sampling is under way
    time.sleep(1.0)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted: partial outputs written" in stderr and "Traceback" not in stderr
    stats = json.loads((out / "generation_stats.json").read_text())
    assert stats["interrupted"] and all(o["partial"] for o in stats["outputs"])
    for i in range(1, 5):
        tokens = read_tokens(out / f"gen_{i}_tokens.txt")
        assert 0 < len(tokens) < 2046
        assert len(read_midi(out / f"gen_{i}.mid").notes) == len(decode_tokens(tokens).notes)
    assert not list(out.glob(".*.part"))


def test_bench_prints_a_row_per_n(model, capsys):
    code, stdout, stderr = run_cli(["bench", "-m", model, "--n", "1,2", "--steps", "6", "--threads", "1", "--json"],
                                   capsys)  # fmt: skip
    rows = json.loads(stdout)
    assert code == 0, stderr
    assert [r["n"] for r in rows] == [1, 2] and all(r["gen_tps"] > 0 for r in rows)
    code, _, stderr = run_cli(["bench", "-m", model, "--n", "0,x"], capsys)
    assert code == 2 and "--n takes comma-separated integers" in stderr
