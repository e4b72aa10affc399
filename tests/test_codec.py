"""The token side of the codec: golden cases, each repair rule, round trips, and agreement with the AMT reference."""

from __future__ import annotations

import io
from collections import Counter

import mido
import pytest
import reference_amt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midillm_lite.amt import gm
from midillm_lite.amt.codec import Note, decode_tokens, encode_notes, shift_notes
from midillm_lite.amt.midi import midi_bytes, midi_to_notes, notes_to_midi
from midillm_lite.amt.transcode import tokens_to_midi
from midillm_lite.amt.vocab import (
    ADUR_OFFSET,
    AMT_VOCAB_SIZE,
    ANOTE_OFFSET,
    ANTICIPATE,
    ATIME_OFFSET,
    AUTOREGRESS,
    DRUM_INSTRUMENT,
    DUR_OFFSET,
    FULL_VOCAB_SIZE,
    MAX_DUR,
    MAX_PITCH,
    MAX_TIME,
    MIDI_VOCAB_SIZE,
    NOTE_OFFSET,
    REST,
    SEPARATOR,
    TEXT_VOCAB_SIZE,
    TIME_OFFSET,
)

SEP3 = [SEPARATOR] * 3


def triplet(onset: int, duration: int, instrument: int = 0, pitch: int = 60) -> list[int]:
    return [TIME_OFFSET + onset, DUR_OFFSET + duration, NOTE_OFFSET + MAX_PITCH * instrument + pitch]


def reread(midi: mido.MidiFile) -> mido.MidiFile:
    """Serialise and parse again, as a player would see the file."""
    return mido.MidiFile(file=io.BytesIO(midi_bytes(midi)))


# --- golden cases ---------------------------------------------------------------


def test_one_note():
    decoded = decode_tokens(triplet(120, 50, 0, 60))
    assert decoded.notes == [Note(120, 50, 0, 60)] and not decoded.repairs


def test_full_vocabulary_ids_shift_down():
    decoded = decode_tokens([TEXT_VOCAB_SIZE + t for t in triplet(3, 4, 40, 70)])
    assert decoded.notes == [Note(3, 4, 40, 70)] and not decoded.repairs


def test_control_triplets_read_as_events():
    decoded = decode_tokens([ATIME_OFFSET + 10, ADUR_OFFSET + 20, ANOTE_OFFSET + MAX_PITCH * 5 + 64])
    assert decoded.notes == [Note(10, 20, 5, 64)] and not decoded.repairs


def test_rest_triplet_sounds_nothing_and_does_not_extend_the_segment():
    tokens = [*triplet(0, 10), TIME_OFFSET + 500, DUR_OFFSET + 0, REST, *SEP3, *triplet(5, 1)]
    decoded = decode_tokens(tokens)
    assert decoded.notes == [Note(0, 10, 0, 60), Note(15, 1, 0, 60)]
    assert decoded.rests == 1 and decoded.segments == 2 and not decoded.repairs


def test_separator_offsets_by_the_latest_note_end_of_the_segment():
    tokens = triplet(100, 50) + triplet(120, 10) + SEP3 + triplet(0, 10) + SEP3 + triplet(7, 3)
    assert [n.onset for n in decode_tokens(tokens).notes] == [100, 120, 150, 167]


def test_drums_go_to_channel_9_and_melodic_instruments_skip_it():
    instruments = [*range(10), DRUM_INSTRUMENT]
    tokens = [t for i, instrument in enumerate(instruments) for t in triplet(i, 5, instrument, 40)]
    midi = reread(tokens_to_midi(tokens)[0])
    channel_of = {}
    for track in midi.tracks:
        for message in track:
            if message.type == "program_change":
                channel_of[message.channel] = message.program
    assert channel_of[9] == 0  # drums: program 0 on channel 9
    assert [channel_of[c] for c in (*range(9), 10)] == list(range(10))


def test_midi_tick_is_exactly_10_ms_and_velocity_is_72():
    midi = reread(tokens_to_midi(triplet(12345 % MAX_TIME, 250))[0])
    now, seen = 0.0, []
    for message in midi:
        now += message.time
        if message.type in ("note_on", "note_off"):
            seen.append((message.type, round(now, 9), message.velocity))
    assert seen == [("note_on", 23.45, 72), ("note_off", 25.95, 0)]


def test_instruments_take_channels_in_order_of_first_onset():
    tokens = triplet(50, 5, 7) + triplet(0, 5, 33)  # instrument 33 sounds first
    written = notes_to_midi(decode_tokens(tokens).notes)
    assert written.channels == {33: 0, 7: 1}


def test_empty_sequence_is_a_valid_empty_file():
    midi, summary = tokens_to_midi([])
    assert summary.notes == 0 and summary.seconds == 0
    assert midi_to_notes(reread(midi)).notes == []


def test_zero_duration_and_late_notes_survive():
    tokens = triplet(0, 0, 0, 60) + triplet(9999, 999) + SEP3 + triplet(9999, 999)
    midi, summary = tokens_to_midi(tokens)
    back = midi_to_notes(reread(midi)).notes
    assert sorted(back) == [Note(0, 0, 0, 60), Note(9999, 999, 0, 60), Note(20997, 999, 0, 60)]
    assert summary.seconds == pytest.approx(219.96)


# --- repairs, one rule at a time ------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, AMT_VOCAB_SIZE, MIDI_VOCAB_SIZE - 1, 100_000, FULL_VOCAB_SIZE, 10**12])
def test_ids_outside_the_vocabulary_are_dropped(bad):
    decoded = decode_tokens([*triplet(1, 2)[:2], bad, triplet(1, 2)[2]])
    assert decoded.notes == [Note(1, 2, 0, 60)] and decoded.repairs == Counter(unknown_id=1)


def test_leading_mode_token_is_expected_but_counted_mid_stream():
    assert not decode_tokens([AUTOREGRESS, *triplet(0, 1)]).repairs
    assert not decode_tokens([TEXT_VOCAB_SIZE + ANTICIPATE, *triplet(0, 1)]).repairs
    decoded = decode_tokens([*triplet(0, 1), AUTOREGRESS, *triplet(2, 1)])
    assert len(decoded.notes) == 2 and decoded.repairs == Counter(mode_token=1)


def test_a_token_that_fits_no_slot_is_dropped_and_the_triplet_goes_on():
    t, d, n = triplet(4, 5)
    decoded = decode_tokens([d, t, n, d, n])  # stray duration; a note in the duration slot
    assert decoded.notes == [Note(4, 5, 0, 60)]
    assert decoded.repairs == Counter(misplaced_token=2)


def test_an_arrival_time_abandons_the_partial_triplet():
    decoded = decode_tokens([*triplet(1, 1)[:2], *triplet(8, 9)])
    assert decoded.notes == [Note(8, 9, 0, 60)] and decoded.repairs == Counter(incomplete_triplet=1)


def test_rest_only_in_the_note_slot():
    decoded = decode_tokens([REST, *triplet(1, 1)])
    assert decoded.notes == [Note(1, 1, 0, 60)] and decoded.repairs == Counter(misplaced_token=1)


def test_a_short_separator_run_is_dropped_without_a_segment():
    decoded = decode_tokens([*triplet(0, 100), SEPARATOR, SEPARATOR, *triplet(5, 1)])
    assert [n.onset for n in decoded.notes] == [0, 5]
    assert decoded.segments == 1 and decoded.repairs == Counter(partial_separator=1)


def test_a_separator_mid_triplet_abandons_it():
    decoded = decode_tokens([*triplet(0, 100), TIME_OFFSET + 3, *SEP3, *triplet(5, 1)])
    assert [n.onset for n in decoded.notes] == [0, 105]
    assert decoded.repairs == Counter(incomplete_triplet=1)


def test_unfinished_last_triplet_is_counted():
    decoded = decode_tokens(triplet(0, 1) + triplet(2, 3)[:2])
    assert decoded.notes == [Note(0, 1, 0, 60)] and decoded.repairs == Counter(unfinished_note=1)


def test_a_16th_melodic_instrument_shares_the_channel_of_its_gm_family():
    # programs 0..14 fill the 15 melodic channels; 16 (an organ) joins 16's family if placed, else nearest
    programs = [*range(0, 120, 8)]  # one per family: 15 instruments
    tokens = [t for i, p in enumerate(programs) for t in triplet(i, 5, p)]
    tokens += triplet(20, 5, DRUM_INSTRUMENT, 36) + triplet(30, 5, 17) + triplet(31, 5, 127)
    midi, summary = tokens_to_midi(tokens)
    written = notes_to_midi(decode_tokens(tokens).notes)
    assert written.merged == {17: 16, 127: 112}
    assert summary.repairs == {"merged_instrument": 2}
    back = midi_to_notes(reread(midi)).notes
    channels = {m.channel for t in reread(midi).tracks for m in t if m.type == "note_on"}
    assert len(channels) == 16 and len(back) == len(programs) + 3
    assert Note(30, 5, 16, 60) in back and Note(31, 5, 112, 60) in back  # heard on the host's program


def test_summary_names_each_repair():
    _, summary = tokens_to_midi([DUR_OFFSET + 5, *triplet(0, 1), 10**9])
    text = summary.describe()
    assert text.startswith("1 note, 1 instrument (Acoustic Grand Piano), 0.01 s; skipped: ")
    assert "ids outside the MIDI vocabulary" in text and "tokens of the wrong kind" in text


# --- properties -------------------------------------------------------------------------

ANY_IDS = st.lists(
    st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.integers(min_value=0, max_value=MIDI_VOCAB_SIZE + 2),
        st.integers(min_value=TEXT_VOCAB_SIZE - 2, max_value=FULL_VOCAB_SIZE + 2),
        st.sampled_from([SEPARATOR, REST, AUTOREGRESS, ANTICIPATE]),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_IDS)
def test_any_integers_decode_to_a_file_mido_reads_back(ids):
    midi, summary = tokens_to_midi(ids)
    data = midi_bytes(midi)
    back = midi_to_notes(mido.MidiFile(file=io.BytesIO(data))).notes
    assert len(back) == summary.notes
    assert all(0 <= m.channel < gm.MIDI_CHANNELS for t in midi.tracks for m in t if not m.is_meta)


INSTRUMENT_POOL = st.lists(st.integers(0, DRUM_INSTRUMENT), min_size=1, max_size=16, unique=True).filter(
    lambda pool: len([i for i in pool if i != DRUM_INSTRUMENT]) <= 15
)


@st.composite
def valid_notes(draw, max_notes: int = 60, pool: list[int] | None = None) -> list[Note]:
    pool = pool or draw(INSTRUMENT_POOL)
    note = st.builds(
        Note,
        onset=st.integers(0, MAX_TIME - 1),
        duration=st.integers(0, MAX_DUR - 1),
        instrument=st.sampled_from(pool),
        pitch=st.integers(0, MAX_PITCH - 1),
    )
    return draw(st.lists(note, max_size=max_notes))


@st.composite
def valid_sequences(draw) -> list[int]:
    """Aligned triplets the reference accepts: events, some as controls, rests and separators."""
    tokens: list[int] = []
    pool = draw(INSTRUMENT_POOL)  # one pool for the whole piece: the reference crashes past 15 melodic instruments
    for segment in range(draw(st.integers(1, 3))):
        if segment:
            tokens += SEP3
        for note in draw(valid_notes(max_notes=25, pool=pool)):
            t, d, n = encode_notes([note]).tokens
            if draw(st.booleans()) and draw(st.booleans()):
                t, d, n = t + ATIME_OFFSET, d - DUR_OFFSET + ADUR_OFFSET, n - NOTE_OFFSET + ANOTE_OFFSET
            tokens += [t, d, n]
            if draw(st.integers(0, 9)) == 0:
                tokens += [TIME_OFFSET + note.onset, DUR_OFFSET, REST]
    return tokens


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_sequences())
def test_agrees_with_the_reference_decoder_note_for_note(tokens):
    ours = reference_amt.midi_to_notes(reread(tokens_to_midi(tokens)[0]))
    theirs = reference_amt.midi_to_notes(reread(reference_amt.events_to_midi(tokens)))
    assert sorted(ours) == sorted(theirs)
    assert sorted((n.onset, n.duration, n.instrument, n.pitch) for n in decode_tokens(tokens).notes) == sorted(
        reference_amt.events_to_notes(tokens)
    )


def canonical(notes: list[Note]) -> list[Note]:
    """The order a MIDI file gives back: by onset, then by track (instruments in order of first onset)."""
    by_onset = sorted(notes, key=lambda n: n.onset)
    rank = {}
    for n in by_onset:
        rank.setdefault(n.instrument, len(rank))
    return sorted(by_onset, key=lambda n: (n.onset, rank[n.instrument]))


def without_same_pitch_overlaps(notes: list[Note]) -> list[Note]:
    """MIDI cannot tell overlapping notes of one pitch on one channel apart (readers pair them FIFO)."""
    kept, busy = [], {}
    for n in sorted(notes, key=lambda n: n.onset):
        key = (n.instrument, n.pitch)
        if busy.get(key, -1) < n.onset and not (n.duration == 0 and busy.get(key, -1) == n.onset):
            kept.append(n)
            busy[key] = n.end
    return kept


@settings(max_examples=200, deadline=None)
@given(valid_notes())
def test_encode_after_decode_is_the_identity_on_valid_sequences(notes):
    notes = canonical(without_same_pitch_overlaps(notes))
    tokens = encode_notes(notes).tokens
    read = midi_to_notes(reread(tokens_to_midi(tokens)[0]))
    assert encode_notes(read.notes).tokens == tokens
    assert read.unclosed == 0 and read.stray_offs == 0


@settings(max_examples=100, deadline=None)
@given(valid_notes())
def test_decode_after_encode_preserves_the_note_set(notes):
    notes = without_same_pitch_overlaps(notes)
    midi = notes_to_midi(notes).midi
    once = midi_to_notes(reread(midi)).notes
    twice = decode_tokens(encode_notes(once).tokens).notes
    assert sorted(twice) == sorted(once) == sorted(notes)


def test_shift_notes_makes_times_relative():
    notes = [Note(100, 5, 0, 60), Note(300, 5, 0, 62)]
    assert shift_notes(notes, 200) == [Note(100, 5, 0, 62)]


def test_encode_clips_long_durations_and_leaves_out_late_notes():
    encoded = encode_notes([Note(0, 5000, 0, 60), Note(MAX_TIME, 1, 0, 60)])
    assert encoded.tokens == triplet(0, MAX_DUR - 1)
    assert encoded.clipped_durations == 1 and encoded.dropped_late == 1
