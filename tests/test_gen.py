"""`midillm-lite gen` end to end on a tiny random-weight model made by the conversion stage: files, seeds, bad input."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
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
from midillm_lite.errors import UserError

DATA = Path(__file__).parent / "data"
PROMPT = "A cheerful rock song with bright electric guitars"
FAST = ["--max-tokens", "30", "--threads", "2", "--quiet"]
PROGRESS_LINE = re.compile(r"generating: (\d+) tokens, \d+ notes, ")  # gen's plain progress line (no terminal)
STARTED_WITHIN_S = 120  # a loaded machine may take long to load the model and start; it fails only past this


@pytest.fixture(scope="module")
def model(tiny_gguf) -> str:
    return str(tiny_gguf())


def gen(args: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(["gen", *args], capsys)


def token_files(folder: Path) -> list[list[int]]:
    return [read_tokens(p) for p in sorted(folder.glob("gen_*_tokens.txt"))]


@pytest.mark.e2e  # `make check`'s one end-to-end run: tiny checkpoint -> convert -> gen -> files that decode
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


def test_greedy_outputs_are_identical_and_said_to_be(model, tmp_path, capsys):
    # With temperature 0 every sequence follows the argmax: equal outputs prove the shared prompt cache is right.
    args = [PROMPT, "-m", model, "-n", "3", "--temperature", "0", "-o", str(tmp_path / "g"), "--max-tokens", "30"]
    code, stdout, stderr = gen(args, capsys)
    outputs = token_files(tmp_path / "g")
    assert code == 0 and outputs[0] == outputs[1] == outputs[2]
    assert "warning: a temperature of 0 is greedy decoding: all 3 outputs will be the same" in stderr
    assert "3 outputs in" in stdout
    assert json.loads((tmp_path / "g" / "generation_stats.json").read_text())["warnings"] == [
        "a temperature of 0 is greedy decoding: all 3 outputs will be the same"
    ]


def test_seconds_limit(model, tmp_path, capsys):
    code, _, _ = gen([PROMPT, "-m", model, "-n", "2", "--seconds", "5", "-o", str(tmp_path / "s"),
                      "--max-tokens", "600", "--quiet"], capsys)  # fmt: skip
    stats = json.loads((tmp_path / "s" / "generation_stats.json").read_text())
    # A random model's first arrival time may already lie past 5 s: that output has no notes, so it failed.
    assert code == (1 if all(o["failed"] for o in stats["outputs"]) else 0)
    for tokens in token_files(tmp_path / "s") + token_files(tmp_path / "s" / "rejected"):
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
                        "--seed", "5", "-o", str(tmp_path / "c"), *FAST], capsys)  # fmt: skip
    assert code == 0, err
    original = [n for n in read_midi(source).notes if n.onset < 2000]
    combined = read_midi(tmp_path / "c" / "gen_1.mid").notes
    # A random model's arrival times race towards 100 s, where strict mode ends an output: count what it made.
    generated = len(read_tokens(tmp_path / "c" / "gen_1_tokens.txt")) // TOKENS_PER_NOTE
    assert 0 < generated <= 10 and len(combined) == len(original) + generated
    new = sorted(set(combined) - set(original))
    assert new and min(n.onset for n in new) >= max(n.onset for n in original) - 5000
    stats = json.loads((tmp_path / "c" / "generation_stats.json").read_text())
    assert stats["continuation"]["window_notes"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["", ], "the description is empty"),
        (["   ", ], "the description is empty"),
        ([PROMPT, "-n", "0"], "integer in 1..32"),
        ([PROMPT, "-n", "100000"], "integer in 1..32"),
        ([PROMPT, "--temperature", "nan"], "'--temperature': 'nan' is not a finite number"),
        ([PROMPT, "--top-p", "0"], "number in (0, 1]"),
        ([PROMPT, "--top-p", "1.5"], "number in (0, 1]"),
        ([PROMPT, "--seconds", "0"], "number in (0, 100]"),
        ([PROMPT, "--from", "3"], "--from needs --continue"),
        ([], "give exactly one of"),
        ([PROMPT, "--interactive"], "give exactly one of"),
        ([PROMPT * 5000], "shorten the description"),
        ([PROMPT, "--max-tokens", "-5"], "integer in 3..131072"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(model, tmp_path, capsys, args, message):
    code, _stdout, stderr = gen([*args, "-m", model, "-o", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2 and message in stderr and stderr.count("\n") == 1, stderr
    assert not list(tmp_path.rglob("*.mid"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["  "], "the description is empty"),
        ([PROMPT, "-n", "0"], "integer in 1..32"),
        ([PROMPT, "--top-p", "0"], "number in (0, 1]"),
        ([PROMPT, "--top-k", "-2"], "integer in 0..55030"),
        ([PROMPT, "--temperature", "inf"], "is not a finite number"),
        ([PROMPT, "--max-tokens", "0"], "integer in 3..131072"),
        ([PROMPT, "--seconds", "-1"], "number in (0, 100]"),
        ([PROMPT, "--from", "3"], "--from needs --continue"),
        ([PROMPT, "--continue", "none.mid"], "no such file"),
    ],
)  # fmt: skip
def test_arguments_are_checked_before_the_model(tmp_path, capsys, monkeypatch, args, message):
    # The model named does not exist and loading is booby-trapped: only an argument check can answer.
    def no_loading(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr("midillm_lite.generate.load_model", no_loading)
    monkeypatch.setattr("midillm_lite.generate.find_model", no_loading)
    monkeypatch.chdir(tmp_path)
    code, _stdout, stderr = gen([*args, "-m", str(tmp_path / "none.gguf")], capsys)
    assert code == 2 and message in stderr and stderr.count("\n") == 1, stderr


def test_a_batch_output_root_that_is_a_file_is_refused_before_the_model(tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("a waltz\n")
    (tmp_path / "root").write_text("a file")
    code, _, stderr = gen(["--prompts-file", str(tmp_path / "prompts.txt"), "-o", str(tmp_path / "root"),
                           "-m", str(tmp_path / "none.gguf")], capsys)  # fmt: skip
    assert code == 2 and "is a file" in stderr, stderr


def test_outputs_without_notes_are_failed_and_said(model, tmp_path, capsys, monkeypatch):
    from midillm_lite.amt.codec import Decoded

    monkeypatch.setattr("midillm_lite.generate.decode_tokens", lambda tokens: Decoded(notes=[]))
    out = tmp_path / "f"
    code, stdout, stderr = gen([PROMPT, "-m", model, "-n", "2", "-o", str(out), "--max-tokens", "30"], capsys)
    assert code == 1, stderr  # errors.EXIT_NO_MUSIC: nothing usable came out
    assert "no usable output: all 2 outputs failed (no notes)" in stderr and "(`midillm-lite models`)" in stderr
    stats = json.loads((out / "generation_stats.json").read_text())
    said = [f"its {o['tokens']} tokens decode to no notes" for o in stats["outputs"]]
    assert [o["failed"] for o in stats["outputs"]] == said and all(o["tokens"] > 0 for o in stats["outputs"])
    assert [o["rejected"] for o in stats["outputs"]] == [None, None]
    assert sorted(p.name for p in (out / "rejected").glob("*.mid")) == ["gen_1.mid", "gen_2.mid"]
    assert "2 outputs in" in stdout and f"failed: {said[0]}" in stdout


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


def _default_sigint() -> None:
    """A shell starts background jobs with SIGINT ignored, and Python keeps that: give the child Ctrl-C back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)  # the end of the stream


def wait_for_progress(lines: queue.Queue, seen: list[str], at_least: int) -> None:
    """Block until gen's stderr reports `at_least` tokens sampled (its first plain progress line comes after the
    first decode); fail after STARTED_WITHIN_S, with what it printed."""
    deadline = time.monotonic() + STARTED_WITHIN_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            pytest.fail(f"gen ended before reporting progress:\n{''.join(seen)}")
        seen.append(line)
        if (match := PROGRESS_LINE.match(line)) and int(match[1]) >= at_least:
            return
    pytest.fail(f"no progress line within {STARTED_WITHIN_S} s:\n{''.join(seen)}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_partial_outputs(model, tmp_path, sig):
    out = tmp_path / "partial"
    proc = subprocess.Popen(
        [sys.executable, "-m", "midillm_lite", "gen", PROMPT, "-m", model, "-n", "4", "-o", str(out),
         "--max-tokens", "2046", "--threads", "2", "--seed", "3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint,
    )  # fmt: skip
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=read_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        wait_for_progress(lines, seen, at_least=4)  # every output has a token: sampling is under way
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()  # no-op once it has exited
    reader.join(timeout=10)
    while not lines.empty():
        line = lines.get_nowait()
        seen += [line] if line is not None else []
    stderr = "".join(seen)
    assert proc.returncode == 130, stderr
    assert "interrupted: partial outputs written" in stderr and "Traceback" not in stderr
    stats = json.loads((out / "generation_stats.json").read_text())
    assert stats["interrupted"] and all(o["partial"] for o in stats["outputs"])
    for entry in stats["outputs"]:  # an output without notes yet is failed, so it lies under rejected/
        midi = Path(entry["file"])
        tokens = read_tokens(midi.with_name(f"{midi.stem}_tokens.txt"))
        assert 0 < len(tokens) < 2046
        assert len(read_midi(midi).notes) == len(decode_tokens(tokens).notes)
    assert not list(out.glob(".*.part"))


def test_bench_prints_a_row_per_n(model, capsys):
    code, stdout, stderr = run_cli(["bench", "-m", model, "--n", "1,2", "--steps", "6", "--threads", "1", "--json"],
                                   capsys)  # fmt: skip
    rows = json.loads(stdout)
    assert code == 0, stderr
    assert [r["n"] for r in rows] == [1, 2] and all(r["gen_tps"] > 0 for r in rows)
    code, _, stderr = run_cli(["bench", "-m", model, "--n", "0,x"], capsys)
    assert code == 2 and "'--n'" in stderr and "integer in 1..32" in stderr and stderr.count("\n") == 1


def test_a_checkpoint_folder_as_model_is_converted_once_with_progress(tiny_checkpoint, tmp_path):
    env = {**os.environ, "MIDILLM_HOME": str(tmp_path / "home")}
    runs = []
    for name in ("a", "b"):
        run = subprocess.run(
            [sys.executable, "-m", "midillm_lite", "gen", PROMPT, "-m", str(tiny_checkpoint), "-n", "1",
             "-o", str(tmp_path / name), "--max-tokens", "30", "--threads", "2"],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        assert run.returncode in (0, 1), run.stderr  # 1: a random model's one output may hold no notes
        runs.append(run.stderr)
    converted = list((tmp_path / "home" / "models").glob("local--*-q4_k_m.gguf"))
    assert len(converted) == 1 and (tmp_path / "a" / "generation_stats.json").is_file()
    assert "converting" in runs[0] and "convert: " in runs[0] and "MiB" in runs[0]  # progress off a terminal
    assert "converting" not in runs[1] and "convert: " not in runs[1]  # the second run reuses the file


# --- broken models (issue 14) ----------------------------------------------------------------------------------------


def test_degenerate_reason():
    from midillm_lite.generate import degenerate_reason

    same = [0, 10000, 11000] * 4
    assert "NaN or infinite at 2 steps" in degenerate_reason(same[:6], 2)
    assert "all 4 notes are the same" in degenerate_reason(same, 0)
    assert degenerate_reason(same[:9], 0) is None  # three equal notes can be a deliberate repeat
    assert degenerate_reason([*same, 1, 10001, 11002], 0) is None


@pytest.mark.slow
def test_random_weights_are_reported_not_silent(tiny_gguf, tmp_path, capsys):
    # Issue 14: a GGUF with a valid header but random tensor bytes gave all `0 10000 11000` notes, exit 0, no word.
    import numpy as np

    from midillm_lite.modelinfo import read_gguf_metadata

    source = tiny_gguf()
    data = bytearray(source.read_bytes())
    start = read_gguf_metadata(source).data_offset
    data[start:] = np.random.default_rng(0).integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(bytes(data))
    out = tmp_path / "run"
    code, _, err = run_cli(["gen", "x", "-m", str(broken), "-n", "2", "--max-tokens", "12", "-o", str(out), "--threads",
                            "1", "--quiet"], capsys)  # fmt: skip
    assert code == 0 and err.startswith("warning: the model's logits were NaN or infinite at 12 steps"), err
    stats = json.loads((out / "generation_stats.json").read_text())
    assert all("weights are broken" in o["degenerate"] for o in stats["outputs"])


@pytest.mark.slow
def test_stats_hash_the_file_that_was_loaded(tiny_gguf, tmp_path, monkeypatch):
    # Issue 14: the hash was taken after the run, of whatever the file held by then.
    from midillm_lite import generate
    from midillm_lite.fsutil import sha256_file

    model = tmp_path / "m.gguf"
    model.write_bytes(tiny_gguf().read_bytes())
    loaded = sha256_file(model)[: generate.HASH_PREFIX]
    with generate.Generator(model, threads=1) as gen:
        model.write_bytes(b"replaced after loading")
        result = gen.generate("x", n=1, max_tokens=3, seed=1)
    assert result.stats()["model"]["sha256_prefix"] == loaded
    model.write_bytes(tiny_gguf().read_bytes())
    real_load = generate.load_model

    def load_while_rewritten(path, **kwargs):
        loaded_model = real_load(path, **kwargs)
        os.utime(path, ns=(0, 0))  # the file changed under the load (here: its mtime, the cheapest change)
        return loaded_model

    monkeypatch.setattr(generate, "load_model", load_while_rewritten)
    with pytest.raises(UserError, match="changed on disk while it was loading"):
        generate.Generator(model, threads=1)


@pytest.mark.slow
def test_cancel_from_another_thread_keeps_a_partial_result(tiny_gguf):
    # The serve and cluster schedulers cancel a request with an Event; what was sampled so far is kept.
    import threading

    from midillm_lite import generate

    cancel = threading.Event()
    steps = []

    def on_step(progress, timings):
        steps.append(timings.steps)
        if timings.steps == 5:
            threading.Thread(target=cancel.set).start()

    with generate.Generator(tiny_gguf(), threads=1) as gen:
        result = gen.generate("x", n=2, max_tokens=200, seed=1, strict=False, on_step=on_step, cancel=cancel)
        full = gen.generate("x", n=2, max_tokens=200, seed=1, strict=False)
    assert result.interrupted and not full.interrupted
    assert 5 <= len(steps) < 200
    for part, whole in zip(result.outputs, full.outputs, strict=True):
        assert part.partial and 0 < len(part.tokens) < len(whole.tokens)
        assert part.tokens == whole.tokens[: len(part.tokens)]  # the same music, cut short
