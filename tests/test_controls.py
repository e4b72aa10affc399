"""Hard controls: instrument names, the sampler's instrument mask, caption words for the model, and gen with them."""

from __future__ import annotations

import json
from pathlib import Path

import mido
import numpy as np
import pytest
from clirun import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from midillm_lite.amt import gm, ops, vocab
from midillm_lite.amt.codec import decode_tokens
from midillm_lite.amt.grid import SOURCE_DEFAULT, SOURCE_FLAG
from midillm_lite.amt.midi import ACCENT_VELOCITY, read_midi
from midillm_lite.amt.tokens_file import read_tokens
from midillm_lite.amt.vocab import DRUM_INSTRUMENT
from midillm_lite.controls import ControlFlags, decode_grid, parse_instruments, parse_key
from midillm_lite.errors import UserError
from midillm_lite.sampling import (
    MAX_MELODIC_INSTRUMENTS,
    SLOT_NOTE,
    NoteState,
    SamplingParams,
    allowed_ranges,
    sample_next,
)

PROMPT = "A cheerful rock song with bright electric guitars"


def test_instrument_names_families_numbers_and_drums():
    assert parse_instruments("violin") == {40}
    assert parse_instruments("Acoustic Guitar (nylon), drums") == {24, DRUM_INSTRUMENT}
    assert parse_instruments("strings") == set(range(40, 48))  # a family: all eight of its programs
    assert parse_instruments("violins, 0, 127") == {40, 0, 127}
    assert parse_instruments("brass section") == {61} and parse_instruments("brass") == set(range(56, 64))


@pytest.mark.parametrize("text", ["", ",", "kazoo", "128", "-1", "violinn x"])
def test_unknown_instruments_are_one_clear_error(text):
    with pytest.raises(UserError, match="instruments"):
        parse_instruments(text)


def test_unknown_instrument_suggests_close_names():
    with pytest.raises(UserError, match="violin"):
        parse_instruments("violn")


@given(st.sets(st.integers(0, DRUM_INSTRUMENT), min_size=1, max_size=6))
def test_every_gm_name_reads_back(programs):
    text = ",".join(gm.instrument_name(p) for p in programs)
    assert parse_instruments(text) == programs


def test_keys():
    assert parse_key("bb major") == "Bb major" and parse_key("F sharp minor") == "F# minor"
    with pytest.raises(UserError, match="key"):
        parse_key("H major")


def test_controls_are_told_to_the_model_unless_the_prompt_says_them():
    flags = ControlFlags.parse(tempo="100", meter="3/4", key="D minor")
    assert flags.for_prompt("A gentle piece.").model_prompt == "A gentle piece, in D minor, at 100 BPM, in 3/4 time."
    said = "A waltz in D minor in 3/4 at 96 BPM"
    controls = flags.for_prompt(said)
    assert controls.model_prompt == said and controls.grid.bpm == 100  # the flag still sets the grid
    assert ControlFlags.parse().for_prompt("x").model_prompt == "x"


# --- the mask -----------------------------------------------------------------------------------

instrument_sets = st.frozensets(st.integers(0, DRUM_INSTRUMENT), min_size=1, max_size=20)


@st.composite
def note_slot_states(draw) -> NoteState:
    """A state at a note slot, with any instruments already playing (up to the channel limit)."""
    playing = draw(st.lists(st.integers(0, DRUM_INSTRUMENT), max_size=MAX_MELODIC_INSTRUMENTS + 3))
    state = NoteState()
    for instrument in playing:
        state.extend([vocab.TIME_OFFSET, vocab.DUR_OFFSET, ops.note_token(instrument, 60)])
    return state.extend([vocab.TIME_OFFSET, vocab.DUR_OFFSET])


@settings(max_examples=80, deadline=None)
@given(note_slot_states(), instrument_sets)
def test_the_mask_allows_exactly_the_chosen_instruments_that_fit(state, chosen):
    assert state.slot == SLOT_NOTE
    allowed = {ops.instrument_of(t) for lo, hi in allowed_ranges(state, True, chosen) for t in range(lo, hi, 128)}
    unmasked = {ops.instrument_of(t) for lo, hi in allowed_ranges(state) for t in range(lo, hi, 128)}
    assert allowed == (unmasked & chosen or chosen)
    for lo, hi in allowed_ranges(state, True, chosen):  # whole instruments only
        assert (lo - vocab.NOTE_OFFSET) % vocab.MAX_PITCH == 0 and (hi - lo) % vocab.MAX_PITCH == 0


@settings(max_examples=20, deadline=None)
@given(instrument_sets, st.integers(0, 2**32))
def test_a_masked_sampler_never_plays_another_instrument(chosen, seed):
    rng = np.random.default_rng(seed)
    row = rng.standard_normal(vocab.MIDI_VOCAB_SIZE).astype(np.float32)
    row[ops.note_range(0)[0] : ops.note_range(0)[1]] += 30  # the model wants piano, loudly
    params = SamplingParams(instruments=chosen).validate()
    state = NoteState()
    for _ in range(60):
        amt_id = sample_next(row, state, params, rng)
        if ops.is_note(amt_id):
            assert ops.instrument_of(amt_id) in chosen
        state.update(amt_id)


def test_a_mask_needs_strict_sampling():
    with pytest.raises(UserError, match="strict"):
        SamplingParams(strict=False, instruments=frozenset({0})).validate()


# --- gen with controls (tiny random model) --------------------------------------------------------

FAST = ["--max-tokens", "60", "--threads", "2", "--quiet"]


@pytest.fixture(scope="module")
def model(tiny_gguf) -> str:
    return str(tiny_gguf())


@pytest.mark.slow
def test_gen_with_instruments_tempo_and_meter(model, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["gen", PROMPT, "-m", model, "-n", "2", "--seed", "3", "-o", str(out), *FAST,
            "--instruments", "violin,drums", "--tempo", "90", "--meter", "3/4", "--dynamics"]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    stats = json.loads((out / "generation_stats.json").read_text())
    assert stats["controls"]["instruments"] == ["Violin", "Drums"]
    assert stats["controls"]["model_prompt"] == PROMPT + ", at 90 BPM, in 3/4 time."
    assert stats["prompt"] == stats["controls"]["model_prompt"] and (out / "prompt.txt").read_text() == PROMPT + "\n"
    for i, entry in enumerate(stats["outputs"], start=1):
        assert entry["grid"]["meter"] == "3/4" and entry["grid"]["tempo_source"] == "flag"
        tokens = read_tokens(out / f"gen_{i}_tokens.txt")
        assert {ops.instrument_of(t) for t in tokens if ops.is_note(t)} <= {40, DRUM_INSTRUMENT}
        midi = mido.MidiFile(out / f"gen_{i}.mid")
        tempo = next(m.tempo for m in midi.tracks[0] if m.type == "set_tempo")
        assert abs(mido.tempo2bpm(tempo) - 90) < 0.01
        # The MIDI file on its tempo grid holds the tokens' notes: same onsets and instrument-pitches, same durations.
        notes = decode_tokens(tokens).notes
        back = read_midi(out / f"gen_{i}.mid").notes
        assert sorted((n.onset, n.instrument, n.pitch) for n in back) == sorted(
            (n.onset, n.instrument, n.pitch) for n in notes
        )
        assert sorted(n.end for n in back) == sorted(n.end for n in notes)
        assert entry["grid"]["dynamics"] == "beat accents" and stats["controls"]["dynamics"] == "beat accents"
        played = {m.velocity for t in midi.tracks for m in t if m.type == "note_on"}
        assert played and played <= set(ACCENT_VELOCITY.values())  # accented (which levels: where notes fall)


@pytest.mark.slow
def test_gen_estimates_a_tempo_when_none_is_given(model, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["gen", PROMPT, "-m", model, "-n", "1", "--seed", "3", "-o", str(out), *FAST], capsys)
    assert code == 0, err
    stats = json.loads((out / "generation_stats.json").read_text())
    grid = stats["outputs"][0]["grid"]
    assert grid["tempo_source"] in ("estimate", "default") and grid["meter_source"] in ("estimate", "default")
    assert grid["meter"] in ("3/4", "4/4", "6/8") and (grid["meter_source"] == "estimate" or grid["meter"] == "4/4")
    assert stats["controls"]["meter_source"] == "estimate per output" and stats["controls"]["dynamics"] is None
    assert stats["controls"]["tempo_source"] == "estimate per output" and stats["sampling"]["instruments"] is None


@pytest.mark.parametrize(
    "flags",
    [["--tempo", "0"], ["--tempo", "-5"], ["--tempo", "nan"], ["--tempo", "10000"], ["--meter", "0/4"],
     ["--meter", "7/0"], ["--meter", "x"], ["--instruments", "kazoo"], ["--key", "H major"],
     ["--instruments", "violin", "--free"]],
)  # fmt: skip
def test_bad_controls_fail_before_anything_is_written(flags, tmp_path, capsys, model):
    out = tmp_path / "never"
    code, _, err = run_cli(["gen", PROMPT, "-m", model, "-o", str(out), *FAST, *flags], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and flags[0] in err
    assert not list(Path(out).glob("gen_*")) if out.exists() else True


def test_decode_grid_is_none_without_options_and_gen_like_with_any():
    assert decode_grid() is None  # today's decode: 120 BPM 4/4, no grid in the summary
    auto = decode_grid(tempo="auto")
    assert auto is not None and auto.bpm is None and auto.meter is None and not auto.dynamics
    accented = decode_grid(dynamics=True)
    assert accented.dynamics and accented.bpm is None and accented.meter_source == SOURCE_DEFAULT
    with pytest.raises(UserError, match="tempo"):
        decode_grid(tempo="0")
    with pytest.raises(UserError, match="meter"):
        decode_grid(meter="7/0")


@given(st.floats(20, 400, allow_nan=False), st.sampled_from(["3/4", "4/4", "6/8", "auto", None]), st.booleans())
def test_decode_grid_keeps_what_was_given_as_flags(bpm, meter, dynamics):
    request = decode_grid(tempo=repr(bpm), meter=meter, dynamics=dynamics)
    assert request.bpm == bpm and request.tempo_source == SOURCE_FLAG and request.dynamics == dynamics
    if meter in (None, "auto"):
        assert request.meter is None
    else:
        assert f"{request.meter[0]}/{request.meter[1]}" == meter and request.meter_source == SOURCE_FLAG


def test_dynamics_flag_reaches_the_grid_and_the_stats():
    controls = ControlFlags.parse(dynamics=True).for_prompt("a waltz in 3/4")
    assert controls.grid.dynamics and controls.to_dict()["dynamics"] == "beat accents"
    assert controls.to_dict()["meter_source"] == "prompt"
    plain = ControlFlags.parse().for_prompt("a waltz")
    assert not plain.grid.dynamics and plain.to_dict()["dynamics"] is None
    assert plain.to_dict()["meter_source"] == "estimate per output"
