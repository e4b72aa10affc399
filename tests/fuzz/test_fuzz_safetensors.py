"""Fuzz the safetensors header reader: crafted, mutated and truncated files -> tensor slots or a UserError."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from midillm_lite.convert.safetensors import DTYPES, TensorSlot, read_header

from midillm_lite.errors import UserError

DTYPE_NAMES = [*DTYPES, "F8_E4M3", "bf16", "", "U64"]
HUGE = [2**31, 2**32, 2**53, 2**63 - 1, 2**63, 2**64, 2**64 + 1, 2**100, -1]


def _file(header: bytes, data_size: int, *, length: int | None = None) -> bytes:
    prefix = struct.pack("<Q", len(header) if length is None else length)
    return prefix + header + bytes(data_size)


def _check(path: Path, content: bytes) -> dict[str, TensorSlot] | None:
    path.write_bytes(content)
    try:
        slots = read_header(path)
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    size = len(content)
    for slot in slots.values():  # what the reader accepts, a memory map can read
        assert slot.offset >= 0 and slot.offset + slot.nbytes <= size
        if slot.nbytes:
            slot.read_all()
    return slots


NUMBER = st.one_of(st.integers(0, 64), st.sampled_from(HUGE), st.integers(), st.floats(), st.booleans(), st.none())
ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.one_of(st.sampled_from(DTYPE_NAMES), NUMBER),
        "shape": st.one_of(st.lists(NUMBER, max_size=4), NUMBER, st.text(max_size=3)),
        "data_offsets": st.one_of(st.just([0, 0]), st.lists(NUMBER, min_size=0, max_size=3), NUMBER),
    },
)
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
JSON_ANY = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
HEADER = st.dictionaries(st.text(max_size=8), st.one_of(ENTRY, JSON_ANY), max_size=4)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "model.safetensors"


@fuzz_settings()
@given(header=HEADER, data_size=st.integers(0, 256))
def test_crafted_headers_read_or_are_a_user_error(target: Path, header: dict, data_size: int) -> None:
    _check(target, _file(json.dumps(header).encode(), data_size))


@st.composite
def valid_file(draw: st.DrawFn) -> bytes:
    header, offset = {}, 0
    for i in range(draw(st.integers(1, 3))):
        dtype = draw(st.sampled_from(list(DTYPES)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize if shape else DTYPES[dtype].itemsize
        header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if draw(st.booleans()):
        header["__metadata__"] = {"format": "pt"}
    return _file(json.dumps(header).encode(), offset)


@fuzz_settings()
@given(content=valid_file(), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 2000)))  # fmt: skip
def test_mutated_files_read_or_are_a_user_error(target: Path, content: bytes, edits: list, cut: int | None) -> None:
    data = bytearray(content)
    for where, value in edits:
        data[where % len(data)] = value
    if cut is not None:
        del data[cut:]
    _check(target, bytes(data))


@fuzz_settings(scale=0.5)
@given(body=st.binary(max_size=300), length=st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_random_bytes_read_or_are_a_user_error(target: Path, body: bytes, length: int | None) -> None:
    _check(target, _file(body, 0, length=length))


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a": ' + b"9" * 5000 + b"}"],
    ids=["deeply-nested-json", "int-beyond-4300-digits"],
)
def test_pathological_json_is_a_user_error(target: Path, raw: bytes) -> None:
    with pytest.raises(UserError, match="not a valid safetensors file"):
        _check_raising(target, _file(raw, 0))


def _check_raising(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    read_header(path)


@pytest.mark.parametrize(
    "shape",
    [[2**64], [2**63], [2**62, 4], [2**40, 2**40], [0, 2**70]],
    ids=["2^64", "2^63", "wraps-to-zero", "2^80-elements", "zero-times-huge"],
)
def test_huge_shapes_are_checked_exactly(target: Path, shape: list[int]) -> None:
    """Found by fuzzing: numpy's int64 product raised OverflowError or wrapped to 0 and accepted a 2^64-row tensor."""
    header = json.dumps({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}).encode()
    slots = _check(target, _file(header, 0))
    if 0 in shape:  # a genuinely empty tensor is fine
        assert slots is not None and slots["w"].nbytes == 0
    else:
        assert slots is None
