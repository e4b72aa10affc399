"""Infilling and accompaniment on a tiny random-weight model: control insertion in the engine, and the outputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from clirun import run_cli

from midillm_lite import engine
from midillm_lite.amt import ops
from midillm_lite.amt.anticipation import prepare_accompaniment, prepare_infill
from midillm_lite.amt.midi import read_midi
from midillm_lite.amt.tokens_file import read_tokens
from midillm_lite.amt.vocab import ANTICIPATE, CONTROL_OFFSET, MIDI_ANTICIPATE_ID, TEXT_VOCAB_SIZE
from midillm_lite.generate import Generator
from midillm_lite.sampling import NoteState, SamplingParams

pytestmark = pytest.mark.slow
SONG = Path(__file__).parent / "data" / "strawberry.mid"
LLAMA_THREADS = 1
CONTROL = [ops.as_control(t) for t in (120, 10_050, 11_060)]  # a control triplet: 1.2 s, 0.5 s, piano C#0


@pytest.fixture(scope="module")
def model(tiny_gguf):
    with engine.load_model(tiny_gguf(), n_threads=LLAMA_THREADS, device="cpu") as loaded:
        yield loaded


def test_anticipation_prompt_ends_with_anticipate(model):
    auto = engine.build_prompt(model, "piano")
    antic = engine.build_prompt(model, "piano", anticipate=True)
    assert antic[:-1] == auto[:-1] and antic[-1] == MIDI_ANTICIPATE_ID == TEXT_VOCAB_SIZE + ANTICIPATE


def test_injected_controls_are_decoded_where_they_stand(model):
    """Greedy run A inserts a control after its first note; run B has that note and control as its prefix: the
    tokens after them agree, so the injected tokens went into the cache at their positions."""
    prompt = engine.build_prompt(model, "a calm piano piece", anticipate=True)
    greedy = SamplingParams(temperature=0)
    calls: list[int] = []

    def inject(seq, tokens, state):
        calls.append(len(tokens))
        return CONTROL if len(tokens) == 3 else []

    a = engine.generate_tokens(model, prompt, n=2, params=greedy, seed=1, max_new_tokens=21, inject=inject).run()
    first = a.tokens[0][:3]
    assert all(seq[3:6] == CONTROL for seq in a.tokens)
    assert all(not ops.is_control(t) for seq in a.tokens for t in seq[:3] + seq[6:]), "the model sampled a control"
    assert sorted(set(calls)) == [n for n in range(1, 21) if n not in (4, 5, 6)], "called after each sampled token"
    b = engine.generate_tokens(model, prompt, params=greedy, seed=1, max_new_tokens=15, prefix_amt=first + CONTROL)
    assert b.run().tokens[0] == a.tokens[0][6:]


def test_initial_state_sets_the_time_floor(model):
    prompt = engine.build_prompt(model, "a calm piano piece", anticipate=True)
    floor = 4321
    gen = engine.generate_tokens(model, prompt, n=2, seed=3, max_new_tokens=30,
                                 initial_state=NoteState(last_onset=floor)).run()  # fmt: skip
    assert all(ops.time_ticks(t) >= floor for seq in gen.tokens for t in seq[::3])


def test_free_mode_never_samples_controls_when_anticipating(model):
    prompt = engine.build_prompt(model, "a calm piano piece", anticipate=True)
    params = SamplingParams(strict=False, temperature=3.0, top_p=1.0, events_only=True)
    gen = engine.generate_tokens(model, prompt, n=3, params=params, seed=5, max_new_tokens=60).run()
    assert all(0 <= t < CONTROL_OFFSET for seq in gen.tokens for t in seq)


@pytest.fixture(scope="module")
def generator(tiny_gguf):
    with Generator(tiny_gguf(), threads=LLAMA_THREADS, device="cpu") as gen:
        yield gen


def test_infill_keeps_every_note_and_writes_inside_the_span(generator):
    plan = prepare_infill(SONG, from_seconds=150, to_seconds=165)
    result = generator.generate("a pop song", n=3, seed=11, max_tokens=240, anticipation=plan)
    original = Counter(read_midi(SONG).notes)
    for output in result.outputs:
        notes = Counter(read_midi_bytes(output.midi))
        rewritten = Counter(n for n in original if 15_000 <= n.onset < 16_500)
        assert not (original - rewritten) - notes, "a kept note changed"
        new = notes - (original - rewritten)
        assert all(15_000 <= n.onset < 16_500 for n in new)
        inserted = [t for t in output.tokens if ops.is_control(t)]
        assert len(inserted) % 3 == 0
        assert output.new_notes == sum(new.values())
    again = generator.generate("a pop song", n=3, seed=11, max_tokens=240, anticipation=plan)
    assert [o.tokens for o in again.outputs] == [o.tokens for o in result.outputs]
    stats = result.stats()["anticipation"]
    assert stats["mode"] == "infill" and stats["span_seconds"] == [150, 165] and stats["delta_seconds"] == 5


def test_accompaniment_keeps_the_melody(generator):
    plan = prepare_accompaniment(SONG, keep_instruments=frozenset({0}), to_seconds=20)
    result = generator.generate("a band", n=2, seed=2, max_tokens=150, anticipation=plan)
    for output in result.outputs:
        assert not Counter(plan.kept) - Counter(read_midi_bytes(output.midi))
    assert result.stats()["anticipation"]["kept_instruments"] == ["Acoustic Grand Piano"]


def read_midi_bytes(midi) -> list:
    from midillm_lite.amt.midi import midi_to_notes

    return midi_to_notes(midi).notes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--infill", str(SONG), "--from", "30", "--to", "20"], "must come after"),
        (["--infill", str(SONG), "--from", "300", "--to", "310"], "after the end of"),
        (["--infill", str(SONG), "--from", "30"], "--infill needs --from and --to"),
        (["--infill", str(SONG), "--from", "20", "--to", "30", "--continue", str(SONG)], "not both"),
        (["--accompany", str(SONG), "--keep-instruments", "violin"], "has no Violin"),
        (["--accompany", str(SONG), "--keep-tracks", "40"], "no notes in track 40"),
        (["--keep-instruments", "piano"], "--keep-instruments needs --accompany"),
        (["--infill", "missing.mid", "--from", "1", "--to", "2"], "no such file"),
        (["--to", "3"], "--to needs --infill or --accompany"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, stderr = run_cli(["gen", "a pop song", "-o", str(out), "--model", "none.gguf", *args], capsys)
    assert code != 0 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists()


def test_cli_infill_is_not_for_a_cluster(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a pop song\n")
    args = ["gen", "--prompts-file", str(prompts), "--cluster", "ray", "--infill", str(SONG), "--from", "20", "--to",
            "30", "-o", str(tmp_path / "out")]  # fmt: skip
    code, _, stderr = run_cli(args, capsys)
    assert code != 0 and "--infill and --accompany go with one PROMPT, not with --cluster" in stderr, stderr
    assert not (tmp_path / "out").exists()


def test_cli_infill_end_to_end(tiny_gguf, tmp_path, capsys):
    out = tmp_path / "infill"
    args = ["gen", "a pop song", "--model", str(tiny_gguf()), "--infill", str(SONG), "--from", "150", "--to", "160",
            "-n", "2", "--seed", "4", "--max-tokens", "90", "--threads", "1", "-o", str(out), "--json",
            "--no-png"]  # fmt: skip
    code, stdout, stderr = run_cli(args, capsys)
    assert code in (0, 1), stderr
    stats = json.loads(stdout)
    assert stats["anticipation"]["mode"] == "infill" and stats["anticipation"]["span_seconds"] == [150, 160]
    saved = json.loads((out / "generation_stats.json").read_text())
    assert saved["anticipation"] == stats["anticipation"]
    kept = Counter(n for n in read_midi(SONG).notes if not 15_000 <= n.onset < 16_000)
    for path in sorted(out.glob("gen_*.mid")) + sorted(out.glob("rejected/gen_*.mid")):
        assert not kept - Counter(read_midi(path).notes)
    assert all(read_tokens(p) for p in out.glob("gen_*_tokens.txt"))


def test_cli_accompaniment_of_a_long_piece_says_where_to_go_on(tiny_gguf, tmp_path, capsys):
    """The song is 270 s: one pass accompanies its first 95 s, and gen says so on stderr (not only in the stats)."""
    out = tmp_path / "band"
    args = ["gen", "a band", "--model", str(tiny_gguf()), "--accompany", str(SONG), "--keep-instruments", "piano",
            "--seed", "2", "--max-tokens", "30", "--threads", "1", "-o", str(out), "--no-png"]  # fmt: skip
    code, _, stderr = run_cli(args, capsys)
    assert code in (0, 1), stderr
    said = "warning: accompanying 0-95 s (one pass writes 95 s); go on from 95 s with the output as the input"
    assert said in stderr.splitlines(), stderr
    assert json.loads((out / "generation_stats.json").read_text())["warnings"] == [said.removeprefix("warning: ")]
