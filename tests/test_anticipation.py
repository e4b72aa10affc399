"""AMT anticipation without a model: layout, span and part selection and the control schedule against the AMT
reference (tests/reference_amt.py), kept notes read back unchanged on real music, and bad requests."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_amt import (
    REF_CONTROL_OFFSET,
    ref_anticipate,
    ref_clip,
    ref_extract_instruments,
    ref_generate,
    ref_pad,
    ref_sort,
)

from midillm_lite.amt import anticipation as A
from midillm_lite.amt import ops
from midillm_lite.amt.codec import Note, encode_notes
from midillm_lite.amt.midi import midi_to_notes, notes_to_midi, read_midi
from midillm_lite.amt.vocab import DELTA, DUR_OFFSET, MAX_DUR, NOTE_OFFSET, REST, TIME_OFFSET, TIME_RESOLUTION
from midillm_lite.errors import UserError
from midillm_lite.sampling import NoteState

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MUSIC = sorted({p.name: p for p in [*DATA.glob("*.mid"), *SHARED.glob("*.mid")]}.values())
INSTRUMENTS = [0, 1, 33, 73, 128]  # few, so that extraction and same-key overlaps happen often
GRAIN = 50  # ticks: onsets, steps and deltas are multiples, so a control's time minus delta often equals an event's


def notes_strategy(max_onset: int = 3000, max_size: int = 40):
    note = st.builds(
        Note,
        onset=st.integers(0, max_onset // GRAIN).map(lambda k: k * GRAIN),  # on a grain, so that times tie often
        duration=st.integers(0, MAX_DUR - 1),
        instrument=st.sampled_from(INSTRUMENTS),
        pitch=st.integers(40, 44),
    )
    return st.lists(note, max_size=max_size).map(lambda ns: sorted(ns, key=lambda n: n.onset))


def events(notes) -> list[int]:
    return encode_notes(notes).tokens


# --- against the reference -----------------------------------------------------------------------------------------
@given(notes_strategy(), notes_strategy(max_onset=4000), st.integers(0, 16).map(lambda k: k * GRAIN))
def test_anticipate_matches_the_reference(history, controls, delta):
    ctrl = A.control_tokens(controls)
    assert A.anticipate(events(history), ctrl, delta) == ref_anticipate(events(history), ctrl, delta)


@given(notes_strategy(), st.integers(0, 4000))
def test_pad_matches_the_reference(history, end):
    assert A.pad(events(history), end) == ref_pad(events(history), end)


@given(notes_strategy(max_onset=6000, max_size=60), st.integers(0, 6000), st.integers(1, 3000),
       st.sets(st.sampled_from(INSTRUMENTS)))  # fmt: skip
def test_span_and_part_selection_match_the_reference(notes, start, length, keep):
    end = start + length
    split = A.split_notes(notes, start, end, A.instrument_mask(notes, frozenset(keep)))
    tokens = events(notes)
    inside_events, inside_controls = ref_extract_instruments(ref_clip(tokens, start, end - 1), keep)
    future = [REF_CONTROL_OFFSET + t for t in ref_clip(tokens, end, 10**6)]
    assert events(split.history) == ref_clip(tokens, 0, start - 1)
    assert events(split.rewritten) == inside_events
    assert A.control_tokens(sorted(split.controls, key=lambda n: n.onset)) == ref_sort(inside_controls + future)


def script_strategy():
    """(history, controls, start, end, sampled triplets as a model would give them: times from start on)."""

    @st.composite
    def build(draw):
        start = draw(st.integers(0, 60).map(lambda k: k * GRAIN))
        end = start + draw(st.integers(1, 50).map(lambda k: k * GRAIN))
        history = [n for n in draw(notes_strategy(max_onset=3000)) if n.onset < start]
        controls = [n for n in draw(notes_strategy(max_onset=7000, max_size=60)) if n.onset >= end]
        steps = draw(st.lists(st.integers(0, 6).map(lambda k: k * GRAIN), max_size=30))
        times, now = [], start
        for step in steps:
            now += step
            times.append(now)
        times.append(max(now, end))  # the last one reaches the span's end and stops sampling
        notes = [Note(t, draw(st.integers(0, 200)), 0, 60) for t in times]
        return history, controls, start, end, [events([n]) for n in notes]

    return build()


@given(script_strategy())
@settings(max_examples=200)
def test_layout_and_schedule_place_controls_where_amt_does(case):
    """A scripted sampling run as the engine drives it (inject after every token) equals AMT's sample.generate."""
    history, controls, start, end, script = case
    ctrl = A.control_tokens(controls)
    prefix, pending = A.layout(events(history), ctrl, start)
    state = NoteState(last_onset=start).extend(prefix)
    schedule = A.ControlSchedule(pending, n=1)
    tokens: list[int] = []
    for triplet in script:
        if ops.time_ticks(triplet[0]) >= end:
            break
        for token in triplet:
            tokens.append(token)
            state.update(token)
            added = schedule(0, tokens, state)
            assert not added or state.slot == 0, "controls go between triplets only"
            tokens += added
            state.extend(added)
    assert prefix + tokens == ref_generate(events(history), ctrl, start, end, script)


# --- kept notes are kept -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=MUSIC, ids=lambda p: p.name)
def music(request) -> tuple[Path, list[Note]]:
    return request.param, read_midi(request.param).notes


def new_notes_strategy(notes: list[Note], start: int, end: int):
    """Adversarial new notes: many on the keys and times of the given notes, some outside the span."""
    near = st.sampled_from(notes).flatmap(
        lambda n: st.builds(
            Note,
            onset=st.integers(n.onset - 300, n.onset + 300).map(lambda t: min(max(t, start), end - 1)),
            duration=st.integers(0, MAX_DUR - 1),
            instrument=st.sampled_from([n.instrument, n.instrument, 127, 126, 125, 124]),
            pitch=st.just(n.pitch),
        )
    )
    anywhere = st.builds(Note, onset=st.integers(max(0, start - 500), end + 500), duration=st.integers(0, 999),
                         instrument=st.integers(0, 128), pitch=st.integers(0, 127))  # fmt: skip
    return st.lists(st.one_of(near, anywhere), max_size=120)


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_kept_notes_read_back_unchanged(music, data):
    """Kept + new notes written to MIDI and read back: every kept note exactly as read from the file (100%)."""
    _, notes = music
    last = max(n.end for n in notes)
    start = data.draw(st.integers(0, last - 1), label="start")
    end = start + data.draw(st.integers(1, A.MAX_SPAN), label="length")
    # Mostly some instruments kept inside the span: the kept notes new ones can collide with most.
    keep = frozenset(
        data.draw(
            st.sets(st.sampled_from(sorted({n.instrument for n in notes})), min_size=1) | st.just(set()), label="keep"
        )
    )
    plan = A.plan(notes, start, end, keep=A.instrument_mask(notes, keep))
    around = [n for n in plan.kept if start - 300 <= n.onset < end + 300]  # the kept notes new ones can hit
    new = data.draw(new_notes_strategy(around or notes, start, end), label="new")
    relative = [Note(n.onset - plan.window_start, n.duration, n.instrument, n.pitch) for n in new]
    combined, repairs = plan.reassemble(relative)
    back = Counter(midi_to_notes(notes_to_midi(combined).midi).notes)
    assert not Counter(plan.kept) - back, "a kept note changed"
    added = Counter(combined) - Counter(plan.kept)
    assert all(start <= n.onset < end for n in added)
    assert sum(added.values()) + sum(repairs.values()) - repairs["shortened_before_kept"] == len(new)
    assert Counter(plan.kept) + Counter(n for n in notes if start <= n.onset < end and n.instrument not in keep) == (
        Counter(notes)
    )


def test_infill_plan_on_real_music(music):
    path, notes = music
    plan = A.prepare_infill(path, from_seconds=12.5, to_seconds=20)
    assert plan.mode == A.MODE_INFILL and plan.keep == frozenset()
    assert plan.kept == [n for n in notes if not 1250 <= n.onset < 2000]
    # The window starts at the first history note it holds; the span and DELTA past it fit AMT's 100 s.
    assert plan.window_start <= plan.start and plan.end + DELTA - plan.window_start <= 100 * TIME_RESOLUTION
    tokens = plan.prefix + plan.pending
    assert len(tokens) % 3 == 0 and all(0 <= t < ops.CONTROL_END for t in tokens)
    assert all(ops.control_time_ticks(t) < plan.end_relative + DELTA for t in tokens[::3] if ops.is_control(t))
    ahead = [n for n in notes if 2000 <= n.onset < 2000 + DELTA]
    assert plan.to_dict()["controls"] == len(ahead) and plan.to_dict()["history_notes"] == plan.history_notes


@pytest.mark.parametrize(("start", "end"), [(150, 165), (0, 10), (250, 280), (100, 195)])
def test_long_piece_windows(start, end):
    notes = read_midi(DATA / "strawberry.mid").notes  # 270 s
    plan = A.plan(notes, start * TIME_RESOLUTION, end * TIME_RESOLUTION)
    times = [ops.time_ticks(ops.as_event(t)) for t in (plan.prefix + plan.pending)[::3]]
    assert all(0 <= t < 100 * TIME_RESOLUTION for t in times)
    assert plan.history_notes <= A.HISTORY_TOKENS // 3


def test_accompaniment_keeps_the_named_instruments(music):
    path, notes = music
    piano = frozenset({notes[0].instrument})
    plan = A.prepare_accompaniment(path, keep_instruments=piano, to_seconds=30)
    assert plan.mode == A.MODE_ACCOMPANY and plan.keep == piano and plan.start == 0
    assert plan.kept == [n for n in notes if n.onset >= 3000 or n.instrument in piano]
    everything = A.prepare_accompaniment(path, to_seconds=30)
    assert everything.kept == notes


def test_accompaniment_of_a_long_piece_says_where_to_go_on():
    plan = A.prepare_accompaniment(DATA / "strawberry.mid", keep_instruments=frozenset({0}))
    assert (plan.start, plan.end) == (0, A.MAX_SPAN)
    assert plan.warnings and "go on from 95 s" in plan.warnings[0]


def test_keep_tracks_keeps_those_tracks_notes(tmp_path):
    midi = notes_to_midi([Note(0, 50, 0, 60), Note(100, 50, 0, 62), Note(0, 100, 33, 40), Note(200, 50, 33, 41)]).midi
    path = tmp_path / "two.mid"
    midi.save(path)
    plan = A.prepare_accompaniment(path, keep_tracks=[2])  # tracks: conductor, piano, bass
    assert plan.keep == frozenset({33}) and sorted(plan.kept) == [Note(0, 100, 33, 40), Note(200, 50, 33, 41)]
    with pytest.raises(UserError, match=r"no notes in track 0; its tracks with notes are: 1 .*, 2 "):
        A.prepare_accompaniment(path, keep_tracks=[0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: A.prepare_infill(p, from_seconds=20, to_seconds=20), "the span is empty"),
        (lambda p: A.prepare_infill(p, from_seconds=30, to_seconds=20), "must come after"),
        (lambda p: A.prepare_infill(p, from_seconds=400, to_seconds=410), "after the end of"),
        (lambda p: A.prepare_infill(p, from_seconds=-1, to_seconds=10), "from_seconds must be"),
        (lambda p: A.prepare_infill(p, from_seconds=float("nan"), to_seconds=10), "from_seconds must be"),
        (lambda p: A.prepare_infill(p, from_seconds=0, to_seconds=float("nan")), "to_seconds must be"),
        (lambda p: A.prepare_infill(p, from_seconds=0, to_seconds=200), "at most 95 s"),
        (lambda p: A.prepare_infill(p, from_seconds=0, to_seconds=95), "nothing to keep"),
        (lambda p: A.prepare_accompaniment(p, keep_instruments=frozenset({40})), "has no Violin; its instruments"),
        (lambda p: A.prepare_accompaniment(p, keep_tracks=[99]), "no notes in track 99"),
        (lambda p: A.prepare_accompaniment(p, keep_tracks=[1], keep_instruments=frozenset({0})), "not both"),
        (lambda p: A.prepare_accompaniment(p, from_seconds=300), "no notes of the kept parts from 300 s"),
    ],
)
def test_bad_requests_are_one_clear_error(call, message, tmp_path):
    path = tmp_path / "short.mid"
    notes_to_midi([Note(t * 100, 80, 0, 60 + t % 12) for t in range(90)]).midi.save(path)  # 90 s of piano
    with pytest.raises(UserError, match=message) as info:
        call(path)
    assert "\n" not in str(info.value)


def test_unreadable_midi_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.mid"
    path.write_bytes(b"MThd\x00\x00\x00\x06garbage")
    with pytest.raises(UserError, match="not a readable MIDI file"):
        A.prepare_infill(path, from_seconds=1, to_seconds=2)
    with pytest.raises(UserError, match="not a readable MIDI file"):
        A.prepare_accompaniment(path, keep_tracks=[0])


def test_fit_new_notes_rules():
    kept = [Note(100, 100, 0, 60)]
    new = [
        Note(50, 100, 0, 60),  # runs into the kept note: shortened to end at 100
        Note(150, 10, 0, 60),  # starts while it sounds: left out
        Note(100, 0, 0, 60),  # starts with it: left out
        Note(200, 10, 0, 60),  # starts as it ends: fine
        Note(150, 10, 0, 61),  # another pitch: fine
        Note(400, 10, 0, 60),  # past the span
    ]
    fitted, repairs = A.fit_new_notes(kept, new, 0, 300)
    assert fitted == [Note(50, 50, 0, 60), Note(200, 10, 0, 60), Note(150, 10, 0, 61)]
    assert repairs == Counter(shortened_before_kept=1, overlaps_kept=2, outside_span=1)


def test_control_token_helpers():
    assert ops.as_control(DUR_OFFSET) == REF_CONTROL_OFFSET + DUR_OFFSET
    assert ops.control_time_ticks(ops.as_control(1234)) == 1234 and ops.is_control_time(ops.as_control(1234))
    assert not ops.is_control_time(ops.as_control(DUR_OFFSET))
    with pytest.raises(AssertionError):
        ops.as_control(REF_CONTROL_OFFSET)


def test_sampling_starts_at_the_span_and_counts_kept_instruments():
    from midillm_lite.generate import _anticipation_state
    from midillm_lite.sampling import allowed_ranges

    notes = read_midi(DATA / "strawberry.mid").notes  # 12 melodic instruments and drums
    plan = A.plan(notes, 15_000, 16_500)
    state = _anticipation_state(plan).extend(plan.prefix)
    assert state.last_onset == plan.start_relative and state.drums
    assert state.instruments == {n.instrument for n in notes if n.instrument != 128}
    state.instruments |= {100, 101, 102}  # three new ones fill MIDI's 15 melodic channels
    state.position = 2  # the note slot: only instruments already playing, and drums
    allowed = {ops.instrument_of(t) for lo, hi in allowed_ranges(state) for t in range(lo, hi)}
    assert allowed == state.instruments | {128}


def test_rest_triplets_the_sampler_writes_are_padding(music):
    """While anticipating the note slot may take REST (AMT's padding, so that controls keep arriving through a
    silence): such triplets are no notes in the output, and every kept note stays."""
    from midillm_lite.generate import _make_output

    _, notes = music
    start = notes[len(notes) // 2].onset
    plan = A.plan(notes, start, start + 500)
    t = plan.start_relative
    sampled = [TIME_OFFSET + t + 100, DUR_OFFSET, REST, TIME_OFFSET + t + 200, DUR_OFFSET + 30, NOTE_OFFSET + 60,
               TIME_OFFSET + t + 300, DUR_OFFSET, REST]  # fmt: skip
    output = _make_output(0, sampled, None, partial=False, anticipation=plan)
    assert output.new_notes == 1 and output.failed is None
    back = Counter(midi_to_notes(output.midi).notes)
    assert not Counter(plan.kept) - back
    assert back - Counter(plan.kept) == Counter([Note(start + 200, 30, 0, 60)])
