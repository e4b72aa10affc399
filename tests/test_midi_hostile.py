"""The MIDI reader and the codec verbs against hostile input (issue 14): SMPTE time, huge files, odd output targets.

SMPTE-division files (a negative division in the header: frames per second and
ticks per frame, no tempo) are timed from the MIDI 1.0 definition, which the
tests restate independently: a tick lasts 1 / (fps x ticks per frame) seconds,
29 meaning 30000/1001 frames per second.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import mido
import pytest
from clirun import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from midillm_lite.amt import midi as midi_module
from midillm_lite.amt.midi import parse_midi_bytes, read_midi
from midillm_lite.errors import UserError

DATA = Path(__file__).parent / "data"
FRAME_RATES = {24: 24.0, 25: 25.0, 29: 30_000 / 1001, 30: 30.0}  # the MIDI 1.0 SMPTE codes, restated


def _with_division(midi: mido.MidiFile, high: int, low: int) -> bytes:
    """The file's bytes with the header's division replaced by two raw bytes."""
    buffer = io.BytesIO()
    midi.save(file=buffer)
    data = bytearray(buffer.getvalue())
    data[12:14] = bytes([high, low])
    return bytes(data)


def _one_note_file(start: int, length: int, tempo: int) -> mido.MidiFile:
    midi = mido.MidiFile(type=0, ticks_per_beat=480)
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=tempo, time=0))  # SMPTE time ignores tempo
    track.append(mido.Message("note_on", note=60, velocity=90, time=start))
    track.append(mido.Message("note_off", note=60, velocity=0, time=length))
    midi.tracks.append(track)
    return midi


@settings(deadline=None)
@given(
    fps=st.sampled_from(sorted(FRAME_RATES)),
    ticks_per_frame=st.integers(1, 255),
    start=st.integers(0, 200_000),
    length=st.integers(0, 20_000),
    tempo=st.integers(1, 2_000_000),
)
def test_smpte_files_are_timed_in_real_seconds(fps, ticks_per_frame, start, length, tempo):
    data = _with_division(_one_note_file(start, length, tempo), 256 - fps, ticks_per_frame)
    (note,) = midi_module.midi_to_notes(parse_midi_bytes(data)).notes
    tick_s = 1 / (FRAME_RATES[fps] * ticks_per_frame)
    assert note.onset == round(100 * start * tick_s)
    assert abs(note.duration - 100 * length * tick_s) <= 1  # rounded onset and end: within one 10 ms tick


@given(high=st.integers(0x80, 0xFF), low=st.integers(0, 255))
def test_any_smpte_division_reads_correctly_or_is_one_line(high, low):
    data = _with_division(_one_note_file(100, 100, 500_000), high, low)
    try:
        read = midi_module.midi_to_notes(parse_midi_bytes(data, name="x.mid"))
    except UserError as exc:
        assert "\n" not in str(exc) and "SMPTE" in str(exc)
        assert 256 - high not in FRAME_RATES or low == 0
        return
    assert read.notes[0].onset >= 0 and read.notes[0].duration >= 0


def test_a_zero_division_is_one_line():
    with pytest.raises(UserError, match="time division of 0"):
        parse_midi_bytes(_with_division(_one_note_file(1, 1, 500_000), 0, 0))


def test_a_midi_file_past_the_size_limit_is_refused_before_it_is_read(tmp_path, capsys):
    from midillm_lite.limits import MAX_MIDI_BYTES

    huge = tmp_path / "huge.mid"
    with open(huge, "wb") as fh:
        fh.truncate(MAX_MIDI_BYTES + 1)  # sparse: parsing it would be the problem, not storing it
    code, _, err = run_cli(["encode", str(huge), "-o", str(tmp_path / "t.txt")], capsys)
    assert code == 2 and err.count("\n") == 1 and "up to 2 MiB" in err, err
    with pytest.raises(UserError, match="up to 2 MiB"):
        read_midi(huge)
    with pytest.raises(UserError, match="up to 2 MiB"):
        parse_midi_bytes(bytes(MAX_MIDI_BYTES + 1))
    assert not (tmp_path / "t.txt").exists()


TOKENS = "0\n10005\n11060\n"


def test_decode_dash_writes_the_midi_bytes_to_stdout(tmp_path):
    tokens = tmp_path / "t.txt"
    tokens.write_text(TOKENS)
    run = subprocess.run([sys.executable, "-m", "midillm_lite", "decode", str(tokens), "-o", "-"],
                         capture_output=True, cwd=tmp_path, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "-").exists()
    midi = mido.MidiFile(file=io.BytesIO(run.stdout))
    assert sum(1 for m in midi if m.type == "note_on") == 1
    assert run.stderr.decode().startswith("wrote -: 1 note")


@pytest.mark.parametrize("verb", ["decode", "encode"])
def test_a_dangling_symlink_is_not_replaced_without_force(tmp_path, capsys, verb):
    tokens = tmp_path / "t.txt"
    tokens.write_text(TOKENS)
    source = str(tokens) if verb == "decode" else str(DATA / "strawberry.mid")
    link = tmp_path / "out"
    os.symlink(tmp_path / "nowhere", link)
    code, _, err = run_cli([verb, source, "-o", str(link)], capsys)
    assert code == 2 and "symbolic link to nothing" in err and "--force" in err and err.count("\n") == 1, err
    assert link.is_symlink() and not link.exists()
    code, _, err = run_cli([verb, source, "-o", str(link), "--force"], capsys)
    assert code == 0 and link.is_file() and not link.is_symlink(), err


def test_gen_refuses_a_dangling_symlink_as_its_folder(tmp_path, capsys):
    link = tmp_path / "out"
    os.symlink(tmp_path / "nowhere", link)
    code, _, err = run_cli(["gen", "x", "-o", str(link), "-m", str(tmp_path / "none.gguf")], capsys)
    assert code == 2 and "symbolic link to nothing" in err and err.count("\n") == 1, err
