"""Fuzz the MIDI reader: mutated, truncated and random files -> notes or a UserError, nothing else."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from midillm_lite.amt.midi import MidiRead, read_midi
from midillm_lite.errors import UserError

DATA = Path(__file__).parents[1] / "data"
SEEDS = sorted(DATA.glob("*.mid"))
ORIGINALS = [p.read_bytes() for p in SEEDS]
# Bytes that mean something to a MIDI parser: status bytes, meta/sysex markers, running-status data, VLQ edges.
INTERESTING = [0x00, 0x7F, 0x80, 0x81, 0x90, 0x99, 0xB0, 0xC0, 0xE0, 0xF0, 0xF7, 0xFF, 0x2F, 0x51, 0x58]


def _read(path: Path, data: bytes) -> MidiRead | None:
    path.write_bytes(data)
    try:
        read = read_midi(path)
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    assert all(n.duration >= 0 and n.onset >= 0 and 0 <= n.pitch < 128 for n in read.notes)
    return read


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(ORIGINALS)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "chunk_length", "truncate"]))
        where = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[where] = draw(st.one_of(st.sampled_from(INTERESTING), st.integers(0, 255)))
        elif kind == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[where : where + draw(st.integers(1, 16))]
        elif kind == "chunk_length":  # rewrite a 4-byte big-endian length, as in MThd/MTrk headers
            value = draw(st.sampled_from([0, 1, 6, 0x7FFFFFFF, 0xFFFFFFFF, len(data)]))
            data[where : where + 4] = struct.pack(">I", value)
        elif kind == "truncate":
            del data[where:]
    return bytes(data)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "fuzz.mid"


def test_seed_files_read() -> None:
    assert SEEDS, "tests/data holds no .mid files to mutate"


@fuzz_settings(scale=0.5)
@given(data=mutated())
def test_mutated_midi_reads_or_is_a_user_error(target: Path, data: bytes) -> None:
    _read(target, data)


@fuzz_settings(scale=0.5)
@given(cut=st.integers(0, max(map(len, ORIGINALS))), which=st.integers(0, len(ORIGINALS) - 1))
def test_truncated_midi_reads_or_is_a_user_error(target: Path, cut: int, which: int) -> None:
    _read(target, ORIGINALS[which][:cut])


@fuzz_settings(scale=0.5)
@given(
    header=st.sampled_from([b"", b"MThd", b"MThd\x00\x00\x00\x06", b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x00\x60"]),
    body=st.binary(max_size=2000),
)
def test_random_bytes_read_or_are_a_user_error(target: Path, header: bytes, body: bytes) -> None:
    _read(target, header + body)
