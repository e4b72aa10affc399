"""Fuzz the GGUF metadata reader behind `info` and `gen`: mutated and truncated models -> ModelInfo or UserError.

Two targets: a compact GGUF with every key the runtime reads and a few small tensors (cheap to rewrite, so every
example mutates structure), and the real tiny model, patched in place at its first and last header bytes (where the
counts, types and midillm.* keys live) and truncated anywhere. The real model's tensor data is never read by the
reader, so its working copy keeps only the header and leaves the data as a sparse hole of the same size.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from fuzzing import fuzz_settings, time_limit
from hypothesis import given
from hypothesis import strategies as st

from midillm_lite import gguf_keys
from midillm_lite.amt import vocab
from midillm_lite.errors import UserError
from midillm_lite.modelinfo import ModelInfo, read_gguf_metadata, read_model_info

PARSE_LIMIT_S = 10  # a parse of the real header takes ~0.06 s on the test machine
INTERESTING_U32 = [0, 1, 2, 3, 6, 8, 9, 12, 13, 0x7FFFFFFF, 0xFFFFFFFF]
INTERESTING_U64 = [0, 1, 2**16, 2**32, 2**32 + 1, 2**63, 2**64 - 1]


def _read(path: Path) -> ModelInfo | None:
    with time_limit(PARSE_LIMIT_S):
        try:
            info = read_model_info(path)
        except UserError as exc:
            assert str(exc) and "\n" not in str(exc)
            return None
    return info


def _scalar_fields(real: Path) -> list[tuple[str, object, gguf.GGUFValueType]]:
    """(name, value, type) of every scalar key of the real model (GGUFReader is slow: read it once per module)."""
    fields = []
    for field in gguf.GGUFReader(real).fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        if field.types[0] != gguf.GGUFValueType.ARRAY:
            fields.append((field.name, field.contents(), field.types[0]))
    return fields


def _compact_gguf(
    path: Path, real: Path, overrides: dict[str, object] | None = None, scalars: list | None = None
) -> None:
    """Every scalar key of the real model (no token arrays: n_vocab comes from llama.vocab_size) and 3 tensors.

    `overrides` replaces the values of some keys (written with the type the real file has).
    """
    meta = read_gguf_metadata(real)
    writer = gguf.GGUFWriter(path, "llama")
    overrides = overrides or {}
    for name, value, kind in scalars if scalars is not None else _scalar_fields(real):
        writer.add_key_value(name, overrides.get(name, value), kind)
    writer.add_array("tokenizer.ggml.merges", ["a b", "c d"])  # one short string array to walk
    writer.add_tensor("small.weight", np.arange(8, dtype=np.float32))
    writer.add_tensor("pair.weight", np.ones((2, 4), dtype=np.float16))
    writer.add_tensor("empty.weight", np.zeros((0, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert meta.fields["llama.vocab_size"] == vocab.FULL_VOCAB_SIZE


@pytest.fixture(scope="module")
def models(tiny_gguf, tmp_path_factory) -> tuple[bytes, bytes, int]:
    """(compact file bytes, real header bytes, real file size)."""
    real = tiny_gguf()
    folder = tmp_path_factory.mktemp("fuzz-gguf")
    compact = folder / "compact.gguf"
    _compact_gguf(compact, real)
    assert read_model_info(compact).n_vocab == vocab.FULL_VOCAB_SIZE
    meta = read_gguf_metadata(real)
    with open(real, "rb") as fh:
        header = fh.read(meta.data_offset)
    return compact.read_bytes(), header, meta.file_size


@st.composite
def mutations(draw: st.DrawFn, size: int, regions: list[tuple[int, int]]) -> list[tuple[int, bytes]]:
    """(offset, new bytes) patches, placed in `regions`, of the kinds a parser cares about."""
    patches = []
    for _ in range(draw(st.integers(1, 4))):
        start, stop = draw(st.sampled_from(regions))
        where = draw(st.integers(max(0, start), max(0, min(size, stop) - 1)))
        value = draw(
            st.one_of(
                st.integers(0, 255).map(lambda b: bytes([b])),
                st.sampled_from(INTERESTING_U32).map(lambda v: struct.pack("<I", v)),
                st.sampled_from(INTERESTING_U64).map(lambda v: struct.pack("<Q", v)),
                st.binary(min_size=1, max_size=8),
            )
        )
        patches.append((where, value))
    return patches


@fuzz_settings()
@given(data=st.data())
def test_mutated_compact_gguf(models, tmp_path_factory, data) -> None:
    compact, _, _ = models
    content = bytearray(compact)
    for where, value in data.draw(mutations(len(content), [(0, len(content))])):
        content[where : where + len(value)] = value
    if data.draw(st.booleans()):
        del content[data.draw(st.integers(0, len(content))) :]
    path = tmp_path_factory.getbasetemp() / "fuzz-compact.gguf"
    path.write_bytes(bytes(content))
    _read(path)


@pytest.fixture(scope="module")
def real_copy(models, tmp_path_factory) -> Path:
    _, header, size = models
    path = tmp_path_factory.mktemp("fuzz-real") / "tiny.gguf"
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(size)  # the tensor data as a hole: the reader only checks it fits
    assert _read(path) is not None
    return path


@fuzz_settings(scale=0.1)
@given(data=st.data())
def test_patched_real_gguf(models, real_copy, data) -> None:
    _, header, _ = models
    regions = [(0, 4096), (len(header) - 8192, len(header)), (0, len(header))]
    patches = data.draw(mutations(len(header), regions))
    fd = os.open(real_copy, os.O_RDWR)
    try:
        for where, value in patches:
            os.pwrite(fd, value[: len(header) - where], where)
        _read(real_copy)
    finally:
        for where, value in patches:  # restore the original bytes for the next example
            os.pwrite(fd, header[where : where + len(value)], where)
        os.close(fd)


@fuzz_settings(scale=0.1)
@given(cut=st.one_of(st.integers(0, 2**26), st.integers(0, 12_000_000)))
def test_truncated_real_gguf(models, real_copy, cut) -> None:
    _, header, size = models
    cut = min(cut, size - 1)
    os.truncate(real_copy, cut)
    try:
        assert _read(real_copy) is None
    finally:
        with open(real_copy, "r+b") as fh:
            fh.seek(min(cut, len(header)))
            fh.write(header[min(cut, len(header)) :])
            fh.truncate(size)


# --- well-formed files whose keys hold the wrong types ----------------------------------------------------------

# What read_model_info's ModelInfo promises for each required midillm.* key: the type the converter writes.
_PYTHON = {gguf.GGUFValueType.STRING: str, gguf.GGUFValueType.FLOAT32: float, gguf.GGUFValueType.UINT32: int}
KEY_TYPES = {key.name: _PYTHON[key.type] for key in gguf_keys.KEYS if key.required}
GOOD_VALUES = {
    name: value
    for name, value, _ in gguf_keys.converter_values(
        gguf_keys.Provenance(repo="r", revision="v", converter_version="0")
    )
}
WRONG = st.one_of(st.just("x"), st.just(2.5), st.just(7), st.just(True), st.just([1, 2]), st.just(["a"]))


def _typed_gguf(path: Path, overrides: dict) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_vocab_size(vocab.FULL_VOCAB_SIZE)
    for key in KEY_TYPES:
        value = overrides.get(key, GOOD_VALUES[key])
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_uint32(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _well_typed(info: ModelInfo) -> bool:
    values = {
        gguf_keys.TEXT_VOCAB_SIZE: info.text_vocab_size, gguf_keys.MIDI_VOCAB_SIZE: info.amt_vocab_size,
        gguf_keys.AUTOREGRESS_ID: info.autoregress_token_id, gguf_keys.SYSTEM_PROMPT: info.system_prompt,
        gguf_keys.TEMPERATURE: info.temperature, gguf_keys.TOP_P: info.top_p,
        gguf_keys.MAX_NEW_TOKENS: info.max_new_tokens, gguf_keys.TRAIN_CONTEXT_LENGTH: info.train_context_length,
        gguf_keys.SOURCE_REPO: info.source_repo, gguf_keys.SOURCE_REVISION: info.source_revision,
        gguf_keys.CONVERTER_VERSION: info.converter_version, gguf_keys.LAYOUT: info.layout,
    }  # fmt: skip
    return all(isinstance(v, KEY_TYPES[k]) and not isinstance(v, bool) for k, v in values.items())


def test_typed_gguf_baseline(tmp_path) -> None:
    info = read_model_info(_typed_gguf(tmp_path / "t.gguf", {}))
    assert _well_typed(info)


@fuzz_settings(scale=0.25)
@given(overrides=st.dictionaries(st.sampled_from(list(KEY_TYPES)), WRONG, min_size=1, max_size=3))
def test_wrongly_typed_keys(tmp_path_factory, overrides) -> None:
    path = _typed_gguf(tmp_path_factory.getbasetemp() / "fuzz-typed.gguf", overrides)
    info = _read(path)
    assert info is None or _well_typed(info)


@pytest.mark.parametrize(
    ("key", "value"),
    [(gguf_keys.TEXT_VOCAB_SIZE, "x"), (gguf_keys.MIDI_VOCAB_SIZE, [1, 2]), (gguf_keys.TEMPERATURE, "x"),
     (gguf_keys.TOP_P, [1, 2])],
)  # fmt: skip
def test_wrongly_typed_key_is_a_user_error(tmp_path, key, value) -> None:
    with pytest.raises(UserError):
        read_model_info(_typed_gguf(tmp_path / "t.gguf", {key: value}))


def nested_arrays_gguf(path: Path, depth: int) -> Path:
    """One key whose value is an array of an array of ... (depth levels): 12 bytes a level."""

    def string(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    array, uint32 = int(gguf.GGUFValueType.ARRAY), int(gguf.GGUFValueType.UINT32)
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + string("a") + struct.pack("<I", array)
    body += struct.pack("<IQ", array, 1) * depth + struct.pack("<IQI", uint32, 1, 7)
    path.write_bytes(body)
    return path


def test_deeply_nested_arrays_are_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError):
        read_gguf_metadata(nested_arrays_gguf(tmp_path / "nested.gguf", 5000))


CHECKED_KEYS = [key for key in gguf_keys.KEYS if key.check is not None]


def _values_of(key: gguf_keys.Key) -> st.SearchStrategy:
    """Values of the key's GGUF type: the converter's own, its neighbours, and anything else the type holds."""
    own = key.source(gguf_keys.Provenance("r", "local", "0")) if key.source else None
    if key.type == gguf.GGUFValueType.UINT32:
        near = [own + d for d in (-1, 0, 1) if own is not None and own + d >= 0]
        return st.one_of(st.sampled_from([*near, 0, vocab.TEXT_VOCAB_SIZE - 1, vocab.FULL_VOCAB_SIZE, 2**32 - 1]),
                         st.integers(0, 2**32 - 1))  # fmt: skip
    if key.type == gguf.GGUFValueType.FLOAT32:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    return st.one_of(st.sampled_from([own, "", "standard", "midi-head", "MIDI-HEAD"]), st.text(max_size=12))


@pytest.fixture(scope="module")
def lying_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-lies") / "lying.gguf"


@pytest.fixture(scope="module")
def scalars(tiny_gguf) -> list:
    return _scalar_fields(tiny_gguf())


@fuzz_settings(scale=0.25)
@given(data=st.data())
def test_every_midillm_value_is_checked_against_what_it_describes(tiny_gguf, lying_path, scalars, data) -> None:
    key = data.draw(st.sampled_from(CHECKED_KEYS))
    value = data.draw(_values_of(key))
    _compact_gguf(lying_path, tiny_gguf(), {key.name: value}, scalars)
    fields = read_gguf_metadata(lying_path).fields
    stored = fields[key.name]  # float32 keys come back rounded
    try:
        info = read_model_info(lying_path)
    except UserError as exc:
        assert "\n" not in str(exc)
        # The key itself, or one that depends on it (max_new_tokens on train_context_length), must be wrong.
        wrong = [k.name for k in CHECKED_KEYS if k.name in fields and not k.check(fields[k.name], fields)]
        if not wrong and key.name == gguf_keys.LAYOUT:  # a known layout this file's vocabulary does not match
            assert "layout" in str(exc)
            return
        assert wrong, f"{key.name}={stored!r} is valid but refused: {exc}"
        assert wrong[0] in str(exc)
        return
    assert key.check(stored, fields), f"{key.name}={stored!r} was accepted"
    assert info.text_vocab_size == vocab.TEXT_VOCAB_SIZE and info.autoregress_token_id == vocab.MIDI_AUTOREGRESS_ID


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (gguf_keys.AUTOREGRESS_ID, 5),  # a text id: the prompt would have no MIDI part (was StopIteration)
        (gguf_keys.AUTOREGRESS_ID, vocab.FULL_VOCAB_SIZE),  # past the vocabulary (was llama_decode failed -1)
        (gguf_keys.TEXT_VOCAB_SIZE, 0),
        (gguf_keys.MIDI_VOCAB_SIZE, vocab.FULL_VOCAB_SIZE),
        (gguf_keys.TOP_P, 0.0),
        (gguf_keys.TEMPERATURE, float("nan")),
        (gguf_keys.MAX_NEW_TOKENS, 0),
        (gguf_keys.MAX_NEW_TOKENS, 2**32 - 1),
        (gguf_keys.TRAIN_CONTEXT_LENGTH, 0),
    ],
)
def test_lying_control_values_are_one_line_at_read(tiny_gguf, lying_path, scalars, key, value) -> None:
    _compact_gguf(lying_path, tiny_gguf(), {key: value}, scalars)
    with pytest.raises(UserError, match=re.escape(key) + " is .*; it must be"):
        read_model_info(lying_path)
