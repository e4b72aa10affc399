"""The tempo grid: exact tick arithmetic, flag and prompt parsing, the writer's round trip, and tempo estimation."""

from __future__ import annotations

import math
from collections import defaultdict

import mido
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midillm_lite.amt import gm
from midillm_lite.amt.codec import Note
from midillm_lite.amt.grid import (
    BEAT,
    DOWNBEAT,
    MAX_BPM,
    MAX_TICKS_PER_BEAT,
    MIN_BPM,
    OFFBEAT,
    SOURCE_DEFAULT,
    SOURCE_ESTIMATE,
    SOURCE_FLAG,
    SOURCE_PROMPT,
    SOURCE_WORD_ESTIMATE,
    TEMPO_SEARCH_US,
    TEMPO_WORDS,
    Grid,
    GridRequest,
    exact_tempo,
    meter_in_text,
    parse_meter,
    parse_tempo,
    tempo_in_text,
    tempo_word_in_text,
)
from midillm_lite.amt.meter import MIN_METER_FIT, estimate_meter
from midillm_lite.amt.midi import (
    ACCENT_VELOCITY,
    DEFAULT_VELOCITY,
    midi_bytes,
    midi_to_notes,
    notes_to_midi,
    parse_midi_bytes,
)
from midillm_lite.amt.tempo import estimate_tempo
from midillm_lite.amt.vocab import DRUM_INSTRUMENT
from midillm_lite.errors import UserError

bpms = st.floats(min_value=MIN_BPM, max_value=MAX_BPM, allow_nan=False)
meters = st.tuples(st.integers(1, 32), st.sampled_from([1, 2, 4, 8, 16, 32]))


@given(bpms)
def test_exact_tempo_puts_every_10ms_step_on_a_whole_tick(bpm):
    mpb, tpb = exact_tempo(bpm)
    assert 0 < tpb <= MAX_TICKS_PER_BEAT
    assert (10_000 * tpb) % mpb == 0  # 10 ms = a whole number of ticks of mpb/tpb microseconds
    assert abs(mpb - 60e6 / bpm) <= TEMPO_SEARCH_US


def test_common_tempos_are_written_exactly():
    assert exact_tempo(120) == (500_000, 50)  # today's files, unchanged
    assert exact_tempo(100)[0] == 600_000 and exact_tempo(60)[0] == 1_000_000
    assert abs(60e6 / exact_tempo(90)[0] - 90) < 0.01  # 90 BPM has no whole-microsecond beat: the nearest that fits


@pytest.mark.parametrize("text", ["0", "-5", "nan", "NaN", "inf", "10000", "19.9", "fast", ""])
def test_bad_tempo_flags(text):
    with pytest.raises(UserError, match="tempo"):
        parse_tempo(text)


@pytest.mark.parametrize("text", ["0/4", "7/0", "x", "3/5", "4", "33/4", "4/64", "-3/4", ""])
def test_bad_meter_flags(text):
    with pytest.raises(UserError, match="meter"):
        parse_meter(text)


@given(bpms)
def test_tempo_flag_reads_numbers_and_auto(bpm):
    assert parse_tempo(repr(bpm)) == bpm and parse_tempo("auto") is None and parse_tempo(" AUTO ") is None


@given(meters)
def test_meter_flag_reads_every_valid_meter(meter):
    assert parse_meter(f"{meter[0]}/{meter[1]}") == meter and parse_meter("auto") is None


# Text around a stated tempo or meter: anything without digits or a slash, so it cannot state another one.
filler = st.text(st.characters(blacklist_categories=("Nd", "Cs"), blacklist_characters="/"), max_size=40)


@given(filler, st.integers(30, 300), filler, st.sampled_from(["BPM", "bpm", " beats per minute", " Bpm"]))
def test_a_stated_bpm_is_found_anywhere(before, bpm, after, unit):
    assert tempo_in_text(f"{before} at {bpm}{unit} {after}") == bpm


@given(filler, meters.filter(lambda m: m[1] >= 2), filler)
def test_a_stated_meter_is_found_anywhere(before, meter, after):
    assert meter_in_text(f"{before} in {meter[0]}/{meter[1]} time {after}") == meter


@given(st.text(st.characters(blacklist_categories=("Nd", "Cs")), max_size=80))
def test_text_without_digits_states_no_tempo_or_meter(text):
    assert tempo_in_text(text) is None and meter_in_text(text) is None


def test_caption_styles():
    assert tempo_in_text("Moves at a moderate tempo of 96 BPM in 3/4 time.") == 96
    assert tempo_in_text("with a tempo of 140 and a 4/4 time signature") == 140
    assert meter_in_text("with a tempo of 140 and a 4/4 time signature") == (4, 4)
    assert tempo_in_text("a 12/8 blues from 1959") is None and meter_in_text("a 12/8 blues") == (12, 8)
    assert meter_in_text("dated 12/25/1999") is None  # a date is not a meter
    assert tempo_word_in_text("A fast-paced rock song") == "fast"
    assert tempo_word_in_text("Prestissimo!") == "prestissimo" and tempo_word_in_text("breakfast") is None


def test_request_sources():
    stated = GridRequest.from_prompt("a waltz in 3/4 at 150 BPM")
    assert (stated.bpm, stated.tempo_source, stated.meter, stated.meter_source) == (150, SOURCE_PROMPT, (3, 4),
                                                                                    SOURCE_PROMPT)  # fmt: skip
    flagged = GridRequest.from_prompt("a waltz in 3/4 at 150 BPM", bpm=90, meter=(6, 8))
    assert (flagged.bpm, flagged.tempo_source, flagged.meter, flagged.meter_source) == (90, SOURCE_FLAG, (6, 8),
                                                                                        SOURCE_FLAG)  # fmt: skip
    assert GridRequest.from_prompt("a piece").resolve([]) == Grid()  # nothing to go on: 120 BPM 4/4, by default
    assert GridRequest.from_prompt("a piece", dynamics=True).resolve([]) == Grid(dynamics=True)


def pulse(bpm: float, seconds: float, rng: np.random.Generator, jitter_s: float = 0.01) -> list[int]:
    """Onsets (10 ms steps) on every beat and on half of the off-beats, with timing jitter."""
    beat = 60 / bpm
    times = []
    for b in range(int(seconds / beat)):
        times.append(b * beat)
        if rng.random() < 0.5:
            times.append((b + 0.5) * beat)
    return [max(0, round(100 * (t + rng.normal(0, jitter_s)))) for t in times]


def same_tempo(estimate: float, truth: float) -> bool:
    return any(abs(estimate / (truth * r) - 1) <= 0.04 for r in (1, 2, 0.5, 1.5, 2 / 3))


@pytest.mark.parametrize("bpm", [66, 90, 117, 150, 180])
def test_estimate_finds_a_jittered_pulse(bpm):
    estimate = estimate_tempo(pulse(bpm, 60, np.random.default_rng(bpm)))
    assert estimate is not None and same_tempo(estimate.bpm, bpm) and estimate.fit > 0.4


def test_a_tempo_word_narrows_the_estimate_to_its_band():
    onsets = pulse(140, 60, np.random.default_rng(0))
    low, high = TEMPO_WORDS["fast"]
    estimate = estimate_tempo(onsets, band=(low, high))
    assert estimate is not None and low <= estimate.bpm <= high and same_tempo(estimate.bpm, 140)
    grid = GridRequest.from_prompt("a fast reel").resolve(onsets)
    assert grid.tempo_source == SOURCE_WORD_ESTIMATE and grid.bpm == estimate.bpm
    low, high = TEMPO_WORDS["slow"]  # music that does not fit what the word says: the word's range still holds
    assert low <= GridRequest.from_prompt("a slow air").resolve(onsets).bpm <= high


def test_no_estimate_from_too_few_or_patternless_onsets():
    assert estimate_tempo([0, 50, 100]) is None
    rng = np.random.default_rng(1)
    noise = sorted(rng.integers(0, 6000, 400).tolist())  # uniformly random onsets over a minute
    estimate = estimate_tempo(noise)
    assert estimate is None or estimate.fit < 0.5
    grid = GridRequest.from_prompt("x").resolve(pulse(100, 30, rng))
    assert grid.tempo_source == SOURCE_ESTIMATE and same_tempo(grid.bpm, 100)
    assert GridRequest.from_prompt("x").resolve([0, 10]).tempo_source == SOURCE_DEFAULT


# --- the writer on a grid ---------------------------------------------------------------------------

instruments = st.sampled_from([0, 24, 40, 73, DRUM_INSTRUMENT])
note_lists = st.lists(
    st.builds(Note, st.integers(0, 10_000), st.integers(0, 1_000), instruments, st.integers(0, 127)), max_size=40
)


def reread(notes: list[Note], grid: Grid) -> tuple[list[Note], mido.MidiFile]:
    midi = parse_midi_bytes(midi_bytes(notes_to_midi(notes, grid).midi))
    return midi_to_notes(midi).notes, midi


def timed(midi: mido.MidiFile):
    """(absolute tick, message) of every message in every track."""
    for track in midi.tracks:
        now = 0
        for message in track:
            now += message.time
            yield now, message


def overlapping_same_key(notes: list[Note]) -> bool:
    by_key = defaultdict(list)
    for n in notes:
        by_key[(n.instrument, n.pitch)].append(n)
    return any(
        (a is not b and a.onset <= b.onset < a.end) or (a is not b and a.onset == b.onset)
        for group in by_key.values()
        for a in group
        for b in group
    )


@settings(max_examples=150, deadline=None)
@given(note_lists, bpms, meters)
def test_every_note_keeps_its_time_on_any_grid(notes, bpm, meter):
    back, midi = reread(notes, Grid(bpm, meter))
    assert sorted((n.onset, n.instrument, n.pitch) for n in back) == sorted(
        (n.onset, n.instrument, n.pitch) for n in notes
    )  # at equal onsets the reader goes track by track, so compare as multisets
    if not overlapping_same_key(notes):  # MIDI cannot pair overlapping same-key notes unambiguously
        assert sorted(back) == sorted(notes)
    assert sorted(n.end for n in back) == sorted(n.end for n in notes)  # the set of ends always survives
    tempo = next(m for m in midi.tracks[0] if m.type == "set_tempo")
    signature = next(m for m in midi.tracks[0] if m.type == "time_signature")
    assert math.isclose(mido.tempo2bpm(tempo.tempo), bpm, rel_tol=1e-3)
    # Exact, not merely within the reader's 5 ms rounding: every note-on tick is an onset's 10 ms in whole ticks.
    starts = sorted(n.onset for n in notes)
    ticks = sorted(tick for tick, m in timed(midi) if m.type == "note_on")
    assert [t * tempo.tempo for t in ticks] == [s * 10_000 * midi.ticks_per_beat for s in starts]
    assert (signature.numerator, signature.denominator) == meter


def test_named_tracks_with_programs_at_time_zero_in_first_appearance_order():
    notes = [Note(0, 10, 40, 60), Note(5, 10, DRUM_INSTRUMENT, 36), Note(7, 10, 0, 64), Note(9, 10, 40, 62)]
    midi = notes_to_midi(notes, Grid(96, (3, 4))).midi
    names = [next(m.name for m in t if m.type == "track_name") for t in midi.tracks]
    assert names == ["midillm-lite", gm.instrument_name(40), "Drums", gm.instrument_name(0)]
    for track in midi.tracks[1:]:
        change = next(m for m in track if m.type == "program_change")
        assert change.time == 0 and sum(m.time for m in track[: track.index(change) + 1]) == 0


def test_a_beat_on_the_grid_is_a_beat_in_the_file():
    grid = Grid(90, (3, 4))
    notes = [Note(round(100 * b * 60 / 90), 20, 0, 60) for b in range(0, 12, 3)]  # one note per bar at 90 BPM
    midi = notes_to_midi(notes, grid).midi
    ticks = []
    now = 0
    for message in midi.tracks[1]:
        now += message.time
        if message.type == "note_on":
            ticks.append(now)
    bar = 3 * midi.ticks_per_beat
    assert [t / bar for t in ticks] == pytest.approx([0, 1, 2, 3], abs=1e-3)  # on the DAW's bar lines
    assert grid.bar_seconds() == pytest.approx(2.0, abs=1e-4) and Grid(120, (6, 8)).bar_seconds() == 1.5


# --- meter estimation -------------------------------------------------------------------------------


def bars(bpm: float, meter: str, count: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(onsets, durations) of accompaniment in a meter, in 10 ms steps with timing jitter: long bass notes and
    fuller chords on the downbeat, lighter chords on other beats, single short notes between.

    3/4: bass + chord, chord, chord; 4/4: bass + chord, chord, bass + chord (lighter), chord; 6/8: bass + chord
    on eighths 1 and 4, single eighths between. Every eighth (quarter in 3/4) sounds, so onsets alone do not
    give the meter away; where the weight lies does.
    """
    quarter = 60 / bpm
    patterns = {  # (position in quarters, notes starting there, length in quarters)
        "3/4": [(0, 4, 3), (1, 2, 1), (2, 2, 1)],
        "4/4": [(0, 4, 2), (1, 2, 1), (2, 3, 1.5), (3, 2, 1)],
        "6/8": [(0, 4, 1.5), (0.5, 1, 0.5), (1, 1, 0.5), (1.5, 3, 1.5), (2, 1, 0.5), (2.5, 1, 0.5)],
    }
    bar = {"3/4": 3, "4/4": 4, "6/8": 3}[meter]
    onsets, durations = [], []
    for b in range(count):
        for position, notes, length in patterns[meter]:
            onset = max(0, round(100 * ((b * bar + position) * quarter + rng.normal(0, 0.005))))
            onsets += [onset] * notes
            durations += [round(100 * length * quarter)] * notes
    return onsets, durations


@pytest.mark.parametrize("meter", ["3/4", "4/4", "6/8"])
@pytest.mark.parametrize("bpm", [72, 110, 150])
def test_meter_estimate_finds_the_meter_the_weight_falls_in(meter, bpm):
    onsets, durations = bars(bpm, meter, 16, np.random.default_rng(bpm))
    estimate = estimate_meter(onsets, durations, bpm)
    assert estimate is not None and f"{estimate.meter[0]}/{estimate.meter[1]}" == meter
    assert estimate.fit >= MIN_METER_FIT


def test_meter_estimate_needs_bars_and_evidence():
    onsets, durations = bars(120, "3/4", 3, np.random.default_rng(0))
    assert estimate_meter(onsets, durations, 120) is None  # three bars: too few to tell
    assert estimate_meter([], [], 120) is None
    even = [25 * k for k in range(200)]  # one equal note on every eighth at 120 BPM: no accent anywhere
    estimate = estimate_meter(even, [20] * len(even), 120)
    assert estimate is not None and estimate.fit < MIN_METER_FIT


def test_resolve_estimates_the_meter_unless_the_prompt_or_a_flag_says_it():
    onsets, durations = bars(100, "3/4", 20, np.random.default_rng(1))
    grid = GridRequest.from_prompt("a waltz").resolve(onsets, durations)
    assert same_tempo(grid.bpm, 100) and grid.meter == (3, 4) and grid.meter_source == SOURCE_ESTIMATE
    assert grid.meter_fit >= MIN_METER_FIT and grid.to_dict()["meter_fit"] == round(grid.meter_fit, 3)
    stated = GridRequest.from_prompt("a waltz in 4/4").resolve(onsets, durations)
    assert (stated.meter, stated.meter_source, stated.meter_fit) == ((4, 4), SOURCE_PROMPT, None)
    flagged = GridRequest.from_prompt("a waltz", bpm=100, meter=(6, 8)).resolve(onsets, durations)
    assert (flagged.meter, flagged.meter_source) == ((6, 8), SOURCE_FLAG)
    at_flag_tempo = GridRequest.from_prompt("a waltz", bpm=100).resolve(onsets, durations)
    assert at_flag_tempo.meter == (3, 4) and at_flag_tempo.meter_source == SOURCE_ESTIMATE
    even = [25 * k for k in range(200)]
    weak = GridRequest.from_prompt("x", bpm=120).resolve(even, [20] * len(even))
    assert weak.meter == (4, 4) and weak.meter_source == SOURCE_DEFAULT and weak.meter_fit < MIN_METER_FIT


# --- dynamics ---------------------------------------------------------------------------------------


def test_metric_levels_on_simple_and_compound_meters():
    four = Grid(120, (4, 4))  # beats every 0.5 s, bars every 2 s
    assert [four.metric_level(t) for t in (0, 50, 100, 150, 200, 25, 12, 401)] == [
        DOWNBEAT, BEAT, BEAT, BEAT, DOWNBEAT, OFFBEAT, OFFBEAT, DOWNBEAT]  # fmt: skip
    six = Grid(120, (6, 8))  # two dotted-quarter beats a bar: 0.75 s each, bars every 1.5 s
    assert [six.metric_level(t) for t in (0, 25, 50, 75, 150)] == [DOWNBEAT, OFFBEAT, OFFBEAT, BEAT, DOWNBEAT]
    waltz = Grid(90, (3, 4))  # beats of 666.67 ms: the nearest 10 ms step to a beat is on it
    assert [waltz.metric_level(t) for t in (0, 67, 133, 200, 100)] == [DOWNBEAT, BEAT, BEAT, DOWNBEAT, OFFBEAT]


def velocities(midi: mido.MidiFile, grid: Grid) -> dict[int, int]:
    """Onset (10 ms steps) -> velocity of every note-on (one note per onset in the tests that use it)."""
    return {tick // grid.ticks_per_step: m.velocity for tick, m in timed(midi) if m.type == "note_on"}


def test_dynamics_accent_downbeats_over_beats_over_offbeats_drums_alike():
    for instrument in (0, DRUM_INSTRUMENT):
        notes = [Note(25 * k, 20, instrument, 60) for k in range(16)]  # eighths at 120 BPM: two bars of 4/4
        grid = Grid(120, (4, 4), dynamics=True)
        by_onset = velocities(notes_to_midi(notes, grid).midi, grid)
        assert by_onset[0] == by_onset[200] == ACCENT_VELOCITY[DOWNBEAT]
        assert by_onset[50] == by_onset[100] == by_onset[150] == ACCENT_VELOCITY[BEAT]
        assert by_onset[25] == by_onset[75] == ACCENT_VELOCITY[OFFBEAT]
        assert ACCENT_VELOCITY[DOWNBEAT] > ACCENT_VELOCITY[BEAT] > ACCENT_VELOCITY[OFFBEAT]
        plain = Grid(120, (4, 4))
        assert set(velocities(notes_to_midi(notes, plain).midi, plain).values()) == {DEFAULT_VELOCITY}


@settings(max_examples=60, deadline=None)
@given(note_lists, bpms, meters)
def test_dynamics_move_no_note(notes, bpm, meter):
    plain, plain_midi = reread(notes, Grid(bpm, meter))
    accented, accented_midi = reread(notes, Grid(bpm, meter, dynamics=True))
    assert accented == plain  # same onsets, durations, instruments and pitches, in the same order
    plain_ticks = [(t, m.type, m.channel, m.note) for t, m in timed(plain_midi) if m.type.startswith("note")]
    accented_ticks = [(t, m.type, m.channel, m.note) for t, m in timed(accented_midi) if m.type.startswith("note")]
    assert accented_ticks == plain_ticks  # and every message at the same tick: only velocities differ
