"""The MIDI side of the codec: the encoder's reading rules on hand-built files, real files, and bad files."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import mido
import pytest
import reference_amt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midillm_lite.amt.codec import Note, decode_tokens, encode_notes
from midillm_lite.amt.midi import midi_bytes, midi_to_notes, notes_to_midi, parse_midi_bytes, read_midi
from midillm_lite.errors import UserError

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).parents[2] / "shared" / "data"
REAL_FILES = sorted({p.name: p for p in [*DATA.glob("*.mid"), *SHARED.glob("*.mid")]}.values())
TPB = 480


def save(tmp_path: Path, *tracks: list[mido.Message], midi_type: int = 1, tpb: int = TPB) -> Path:
    midi = mido.MidiFile(type=midi_type, ticks_per_beat=tpb)
    for messages in tracks:
        midi.tracks.append(mido.MidiTrack(messages))
    path = tmp_path / "in.mid"
    midi.save(path)
    return path


def on(note: int, time: int = 0, channel: int = 0, velocity: int = 90) -> mido.Message:
    return mido.Message("note_on", note=note, time=time, channel=channel, velocity=velocity)


def off(note: int, time: int = 0, channel: int = 0) -> mido.Message:
    return mido.Message("note_off", note=note, time=time, channel=channel)


def test_default_tempo_and_program(tmp_path):
    path = save(tmp_path, [on(60), off(60, TPB), on(62, TPB // 2), off(62, TPB)])  # 120 bpm: a beat is 0.5 s
    assert read_midi(path).notes == [Note(0, 50, 0, 60), Note(75, 50, 0, 62)]


def test_every_tempo_change_is_honoured(tmp_path):
    conductor = [
        mido.MetaMessage("set_tempo", tempo=1_000_000),  # 60 bpm: a beat is 1 s
        mido.MetaMessage("set_tempo", tempo=250_000, time=2 * TPB),  # from 2 s on, 240 bpm
    ]
    notes = [on(60), off(60, TPB), on(61, 2 * TPB), off(61, 2 * TPB)]  # second note: beats 3..5
    read = read_midi(save(tmp_path, conductor, notes))
    assert read.notes == [Note(0, 100, 0, 60), Note(225, 50, 0, 61)]


def test_format_0_and_format_1_give_the_same_notes(tmp_path):
    piano = [mido.Message("program_change", program=24), on(60), off(60, TPB)]
    drums = [on(36, TPB // 5, channel=9), off(36, TPB // 10, channel=9)]
    multi = read_midi(save(tmp_path, piano, drums)).notes
    merged = mido.merge_tracks([mido.MidiTrack(piano), mido.MidiTrack(drums)])
    single = read_midi(save(tmp_path, list(merged), midi_type=0)).notes
    assert multi == single == [Note(0, 50, 24, 60), Note(10, 5, 128, 36)]


def test_running_status_bytes(tmp_path):
    # Type 0, one track, 96 ticks a beat; note on, then running-status note-on velocity 0 a beat later.
    track = bytes.fromhex("00 90 3C 40  60 3C 00  00 FF 2F 00".replace(" ", ""))
    data = b"MThd" + (6).to_bytes(4, "big") + bytes.fromhex("0000 0001 0060".replace(" ", ""))
    data += b"MTrk" + len(track).to_bytes(4, "big") + track
    assert midi_to_notes(parse_midi_bytes(data)).notes == [Note(0, 50, 0, 60)]


def test_several_tracks_on_one_channel_pair_first_in_first_out(tmp_path):
    a = [on(60), off(60, 2 * TPB)]
    b = [on(60, TPB // 2), off(60, TPB)]  # same channel and pitch: starts at 0.25 s, ends at 0.75 s
    # the first note-off (0.75 s) ends the first note-on (0 s); the second (1 s) ends the second (0.25 s)
    assert read_midi(save(tmp_path, a, b)).notes == [Note(0, 75, 0, 60), Note(25, 75, 0, 60)]


def test_drum_channel_is_instrument_128_whatever_its_program(tmp_path):
    track = [mido.Message("program_change", channel=9, program=5), on(38, channel=9), off(38, 48, channel=9)]
    assert read_midi(save(tmp_path, track)).notes == [Note(0, 5, 128, 38)]


def test_program_changes_apply_per_channel(tmp_path):
    track = [
        mido.Message("program_change", channel=1, program=40),
        on(60, channel=0), on(64, channel=1), off(60, 48, channel=0), off(64, 0, channel=1),
        mido.Message("program_change", channel=0, program=73), on(67, channel=0), off(67, 48, channel=0),
    ]  # fmt: skip
    notes = read_midi(save(tmp_path, track)).notes
    assert [(n.instrument, n.pitch) for n in notes] == [(0, 60), (40, 64), (73, 67)]


def test_velocity_zero_note_on_ends_a_note(tmp_path):
    assert read_midi(save(tmp_path, [on(60), on(60, TPB, velocity=0)])).notes == [Note(0, 50, 0, 60)]


def test_unclosed_notes_get_a_quarter_second_and_stray_offs_are_counted(tmp_path):
    read = read_midi(save(tmp_path, [off(50), on(60), on(61, TPB)]))
    assert read.notes == [Note(0, 25, 0, 60), Note(50, 25, 0, 61)]
    assert read.unclosed == 2 and read.stray_offs == 1


def test_rounding_to_10_ms(tmp_path):
    # 120 bpm, 480 ticks a beat: one tick is 1/960 s; 7 ticks = 7.29 ms -> 1 tick of 10 ms, 4 ticks -> 0
    read = read_midi(save(tmp_path, [on(60, 4), off(60, 7)]))
    assert read.notes == [Note(0, 1, 0, 60)]


def test_long_notes_clip_at_the_longest_duration(tmp_path):
    read = read_midi(save(tmp_path, [on(60), off(60, 30 * TPB)]))  # 15 s
    assert read.notes == [Note(0, 1500, 0, 60)]
    assert encode_notes(read.notes).clipped_durations == 1


def test_no_notes_is_valid_and_empty(tmp_path):
    assert read_midi(save(tmp_path, [mido.MetaMessage("track_name", name="silence")])).notes == []


@pytest.mark.parametrize("path", REAL_FILES, ids=[p.name for p in REAL_FILES])
def test_real_files_agree_with_the_reference_reader(path):
    ours = [(n.onset, min(n.duration, 999), n.instrument, n.pitch) for n in read_midi(path).notes]
    assert ours and ours == reference_amt.midi_to_notes(mido.MidiFile(path))


@pytest.mark.parametrize("path", REAL_FILES, ids=[p.name for p in REAL_FILES])
def test_real_files_round_trip(path):
    notes = [n for n in read_midi(path).notes if n.onset < 10_000]
    tokens = encode_notes(notes).tokens
    decoded = decode_tokens(tokens)
    again = midi_to_notes(mido.MidiFile(file=io.BytesIO(midi_bytes(notes_to_midi(decoded.notes).midi))))
    assert not decoded.repairs
    assert sorted(encode_notes(again.notes).tokens) == sorted(tokens)


# --- bad files -----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_midi(tmp_path / "nope.mid")


def test_not_a_midi_file(tmp_path):
    path = tmp_path / "notes.mid"
    path.write_text("these are not notes")
    with pytest.raises(UserError, match="not a readable MIDI file"):
        read_midi(path)


def test_truncated_real_file(tmp_path):
    data = (DATA / "strawberry.mid").read_bytes()
    for cut in (10, 30, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.mid"
        path.write_bytes(data[:cut])
        with pytest.raises(UserError, match="not a readable MIDI file"):
            read_midi(path)


def test_type_2_is_refused(tmp_path):
    with pytest.raises(UserError, match="type 2"):
        read_midi(save(tmp_path, [on(60), off(60, 10)], midi_type=2))


def test_a_folder_is_not_a_file(tmp_path):
    with pytest.raises(UserError, match="not a file"):
        read_midi(tmp_path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_are_a_user_error_or_notes(data):
    with contextlib.suppress(UserError):
        midi_to_notes(parse_midi_bytes(data))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_file_is_a_user_error_or_notes(tmp_path_factory, data):
    original = bytearray((DATA / "strawberry.mid").read_bytes()[:4000])
    for _ in range(data.draw(st.integers(1, 8))):
        original[data.draw(st.integers(0, len(original) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("mut") / "m.mid"
    path.write_bytes(bytes(original))
    with contextlib.suppress(UserError):
        read_midi(path)
