"""The torch-free safetensors reader: header validation before any tensor is touched, exact BF16 widening."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from midillm_lite.convert.safetensors import read_header, widen_to_f32

from devkit.checkpoints import to_bf16_bits, write_safetensors
from midillm_lite.errors import UserError


def _raw_file(path: Path, header: object, data: bytes = b"", *, length: int | None = None) -> Path:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def test_round_trip_of_all_stored_dtypes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    values = {"a": rng.standard_normal((7, 5)).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}
    for dtype in ("F32", "F16", "BF16"):
        path = tmp_path / f"{dtype}.safetensors"
        write_safetensors(path, values, dtype=dtype)
        slots = read_header(path)
        assert {s.shape for s in slots.values()} == {(7, 5), (3,)}
        tolerance = {"F32": 0, "F16": 1e-3, "BF16": 1e-2}[dtype]
        for name, array in values.items():
            np.testing.assert_allclose(slots[name].read_all(), array, rtol=tolerance, atol=tolerance)


def test_row_blocks_reassemble_the_tensor(tmp_path: Path) -> None:
    values = np.arange(40 * 6, dtype=np.float32).reshape(40, 6)
    write_safetensors(tmp_path / "m.safetensors", {"w": values}, dtype="BF16")
    slot = read_header(tmp_path / "m.safetensors")["w"]
    blocks = list(slot.iter_row_blocks(max_bytes=7 * 6 * 4))  # 7 rows per block
    assert [start for start, _ in blocks] == [0, 7, 14, 21, 28, 35]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), slot.read_all())


@given(st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=50))
def test_bf16_widening_is_exact_on_bf16_values(values: list[float]) -> None:
    bits = to_bf16_bits(np.array(values, dtype=np.float32))
    widened = widen_to_f32(bits, "BF16")
    # Widening then truncating gives back the same 16 bits: nothing is lost either way.
    np.testing.assert_array_equal((widened.view(np.uint32) >> 16).astype(np.uint16), bits)


BAD_HEADERS = [
    ("not json", b"{nope", "not JSON"),
    ("array header", [], "not a JSON object"),
    ("unknown dtype", {"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}}, "unsupported dtype 'Q4'"),
    ("negative shape", {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, "invalid shape"),
    ("offsets reversed", {"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, "invalid data_offsets"),
    ("past the end", {"w": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}, "truncated download"),
    ("span vs shape", {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, "needs 12"),
    (
        "overlap",
        {
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
        },
        "overlap",
    ),
    ("entry not a dict", {"w": 3}, "no dtype/shape/data_offsets"),
]


@pytest.mark.parametrize(("header", "needle"), [(h, n) for _, h, n in BAD_HEADERS], ids=[i for i, _, _ in BAD_HEADERS])
def test_bad_headers_are_named(tmp_path: Path, header: object, needle: str) -> None:
    path = _raw_file(tmp_path / "bad.safetensors", header, b"\0" * 16)
    with pytest.raises(UserError, match=needle):
        read_header(path)


def test_header_length_beyond_file(tmp_path: Path) -> None:
    path = _raw_file(tmp_path / "bad.safetensors", {}, length=10**6)
    with pytest.raises(UserError, match="header length 1000000 does not fit"):
        read_header(path)


def test_tiny_file(tmp_path: Path) -> None:
    (tmp_path / "x.safetensors").write_bytes(b"abc")
    with pytest.raises(UserError, match="only 3 bytes"):
        read_header(tmp_path / "x.safetensors")


def test_truncated_real_file(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"w": np.ones((64, 64), dtype=np.float32)})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated"):
        read_header(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), cut=st.integers(0, 400))
def test_arbitrary_bytes_never_escape_as_other_errors(tmp_path: Path, data: bytes, cut: int) -> None:
    # Random files, and a valid file cut at a random point: either a valid header or a UserError.
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(data)
    with contextlib.suppress(UserError):
        read_header(path)
    write_safetensors(path, {"w": np.ones((4, 8), dtype=np.float32)})
    path.write_bytes(path.read_bytes()[:cut])
    try:
        slots = read_header(path)
    except UserError:
        return
    assert slots["w"].read_all().shape == (4, 8)
