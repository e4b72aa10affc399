"""Torch-free safetensors reading: header validation, then numpy memory maps a block of rows at a time.

Nothing is unpickled and no tensor is touched before the whole header has been
checked, so a crafted or truncated file gives a UserError naming the problem.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midillm_lite.errors import UserError

HEADER_LENGTH_BYTES = 8  # little-endian u64 that precedes the JSON header
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit; real headers are kilobytes
METADATA_KEY = "__metadata__"

# safetensors dtype -> (numpy dtype as stored, itemsize). BF16 is stored as raw 16-bit words.
DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


@dataclass(frozen=True)
class TensorSlot:
    """Where one tensor lives: its file, dtype, shape and absolute byte offset."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute, from the start of the file
    nbytes: int

    @property
    def n_rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_elems(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else max(1, self._elems())

    def _elems(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) widened to float32, via a memory map dropped right after (bounded RSS)."""
        if len(self.shape) <= 1:
            return self.read_all()
        stored = DTYPES[self.dtype]
        row_bytes = self.row_elems * stored.itemsize
        count = stop - start
        mm = np.memmap(
            self.path, dtype=stored, mode="r", offset=self.offset + start * row_bytes, shape=(count, *self.shape[1:])
        )
        try:
            return widen_to_f32(np.asarray(mm), self.dtype)
        finally:
            del mm

    def read_all(self) -> np.ndarray:
        stored = DTYPES[self.dtype]
        if self._elems() == 0:
            return np.zeros(self.shape, dtype=np.float32)
        mm = np.memmap(self.path, dtype=stored, mode="r", offset=self.offset, shape=self.shape)
        try:
            return widen_to_f32(np.asarray(mm), self.dtype)
        finally:
            del mm

    def iter_row_blocks(self, max_bytes: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first_row, float32 block) so that each block stays near `max_bytes` once widened."""
        if len(self.shape) <= 1:
            yield 0, self.read_all()
            return
        rows_per_block = max(1, max_bytes // max(1, self.row_elems * 4))
        for start in range(0, self.n_rows, rows_per_block):
            yield start, self.read_rows(start, min(self.n_rows, start + rows_per_block))


def widen_to_f32(data: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values -> float32; BF16 is the top half of a float32, so widen by a 16-bit shift."""
    if dtype == "BF16":
        return (data.astype(np.uint32) << 16).view(np.float32)
    return data.astype(np.float32)


def read_header(path: Path) -> dict[str, TensorSlot]:
    """Validate one safetensors file's header and return its tensors by name (no tensor data read)."""
    path = Path(path)
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as fh:
            prefix = fh.read(HEADER_LENGTH_BYTES)
            if len(prefix) < HEADER_LENGTH_BYTES:
                raise UserError(f"{path} is not a safetensors file: only {file_size} bytes (truncated?)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or HEADER_LENGTH_BYTES + header_len > file_size:
                raise UserError(
                    f"{path} is not a valid safetensors file: header length {header_len} does not fit "
                    f"in the file's {file_size} bytes (truncated or not safetensors)"
                )
            raw = fh.read(header_len)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError, and ints past Python's 4300-digit limit; RecursionError: deep nesting.
        raise UserError(f"{path} is not a valid safetensors file: its header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise UserError(f"{path} is not a valid safetensors file: its header is not a JSON object")
    data_start = HEADER_LENGTH_BYTES + header_len
    slots = {
        name: _parse_entry(path, name, entry, data_start, file_size)
        for name, entry in header.items()
        if name != METADATA_KEY
    }
    _check_overlaps(path, slots)
    return slots


def _parse_entry(path: Path, name: str, entry: object, data_start: int, file_size: int) -> TensorSlot:
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise UserError(f"{where} has no dtype/shape/data_offsets entry; the file is corrupt")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPES:
        raise UserError(f"{where} has unsupported dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise UserError(f"{where} has an invalid shape {shape!r}")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    ):
        raise UserError(f"{where} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if data_start + end > file_size:
        raise UserError(
            f"{where} ends at byte {data_start + end} but the file has {file_size} bytes (truncated download?)"
        )
    # Exact integers: numpy's int64 product overflows (2**64 raises, 2**62 * 4 wraps to 0 and passed as empty).
    expected = math.prod(shape) * DTYPES[dtype].itemsize
    if end - begin != expected:
        raise UserError(f"{where} spans {end - begin} bytes but shape {shape} of {dtype} needs {expected}")
    return TensorSlot(name, path, dtype, tuple(shape), data_start + begin, end - begin)


def _check_overlaps(path: Path, slots: dict[str, TensorSlot]) -> None:
    ordered = sorted((s for s in slots.values() if s.nbytes), key=lambda s: s.offset)
    for before, after in itertools.pairwise(ordered):
        if after.offset < before.offset + before.nbytes:
            raise UserError(f"{path}: tensors {before.name!r} and {after.name!r} overlap; the file is corrupt")
