"""Converted GGUF files: metadata keys, and every quant type's tensors read back close to the checkpoint's."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from midillm_lite.convert import QUANT_NAMES
from midillm_lite.convert.tensors import rope_permute
from refmodel import load_safetensors

from midillm_lite import __version__, gguf_keys
from midillm_lite.amt import vocab
from midillm_lite.modelinfo import read_gguf_metadata, read_model_info

Q = gguf.GGMLQuantizationType
# Worst |gguf - source| / max |source| per tensor, by file type (bf16 from BF16 weights is lossless).
ROUND_TRIP_BOUNDS = {"f32": 0.0, "bf16": 0.0, "f16": 1e-3, "q8_0": 1e-2, "q4_0": 0.15,
                     "q4_k_m": 0.15, "q5_k_m": 0.08, "q6_k": 0.04}  # fmt: skip
EXPECTED_MATRIX_TYPES = {
    "f32": {Q.F32}, "f16": {Q.F16}, "bf16": {Q.BF16}, "q8_0": {Q.Q8_0}, "q4_0": {Q.Q4_0},
    "q4_k_m": {Q.Q4_K, Q.Q6_K}, "q5_k_m": {Q.Q5_K, Q.Q6_K}, "q6_k": {Q.Q6_K},
}  # fmt: skip


def read_tensors(path: Path) -> dict[str, tuple[int, np.ndarray]]:
    """Every tensor's ggml type and dequantized float32 values (numpy shape), via our header reader."""
    meta = read_gguf_metadata(path)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for t in meta.tensors:
        qtype = Q(t.type)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n = int(np.prod(t.shape))
        start = meta.data_offset + t.offset
        data = np.array(raw[start : start + n // block * size])
        shape = tuple(reversed(t.shape))
        out[t.name] = (qtype, gguf.quants.dequantize(data.reshape(*shape[:-1], -1), qtype).reshape(shape))
    return out


def test_midillm_metadata(tiny_gguf, tiny_checkpoint) -> None:
    fields = read_gguf_metadata(tiny_gguf("q8_0")).fields
    assert set(gguf_keys.REQUIRED) <= set(fields)
    assert fields[gguf_keys.TEXT_VOCAB_SIZE] == vocab.TEXT_VOCAB_SIZE
    assert fields[gguf_keys.MIDI_VOCAB_SIZE] == vocab.MIDI_VOCAB_SIZE
    assert fields[gguf_keys.AUTOREGRESS_ID] == vocab.MIDI_AUTOREGRESS_ID
    assert fields[gguf_keys.SYSTEM_PROMPT] == vocab.SYSTEM_PROMPT
    assert fields[gguf_keys.MAX_NEW_TOKENS] == vocab.DEFAULT_MAX_TOKENS
    assert fields[gguf_keys.TRAIN_CONTEXT_LENGTH] == vocab.TRAIN_CONTEXT_LENGTH
    assert fields[gguf_keys.SOURCE_REPO] == tiny_checkpoint.name
    assert fields[gguf_keys.SOURCE_REVISION] == "local"
    assert fields[gguf_keys.CONVERTER_VERSION] == __version__
    assert fields[gguf_keys.LAYOUT] == "standard"
    info = read_model_info(tiny_gguf("q8_0"))
    assert (info.temperature, info.top_p) == (vocab.DEFAULT_TEMPERATURE, vocab.DEFAULT_TOP_P)
    assert info.quant == "q8_0" and info.n_vocab == vocab.FULL_VOCAB_SIZE
    K, arch = gguf.Keys.LLM, "llama"
    assert fields[K.EMBEDDING_LENGTH.format(arch=arch)] == 64
    assert fields[K.BLOCK_COUNT.format(arch=arch)] == 2
    assert fields[gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=arch)] == 2
    assert fields[gguf.Keys.Rope.FREQ_BASE.format(arch=arch)] == 500_000.0
    assert fields[gguf.Keys.Tokenizer.BOS_ID] == 128000
    assert fields[gguf.Keys.Tokenizer.ADD_BOS] is True


@pytest.mark.slow
@pytest.mark.parametrize("quant", QUANT_NAMES)
def test_every_quant_type_round_trips(tiny_gguf, checkpoint_factory, quant: str) -> None:
    from conftest import KQUANT_SHAPE, is_k_quant

    path = tiny_gguf(quant)
    source = load_safetensors(checkpoint_factory(**(KQUANT_SHAPE if is_k_quant(quant) else {})))
    tensors = read_tensors(path)
    assert read_model_info(path).quant == quant
    matrix_types = {qtype for name, (qtype, values) in tensors.items() if values.ndim == 2}
    assert matrix_types <= EXPECTED_MATRIX_TYPES[quant] | {Q.Q8_0, Q.Q5_0, Q.Q5_1, Q.Q4_1}  # llama.cpp's mixes
    assert matrix_types & EXPECTED_MATRIX_TYPES[quant]
    assert all(qtype == Q.F32 for _, (qtype, values) in tensors.items() if values.ndim == 1)
    heads, kv_heads = (4, 2)
    pairs = {
        "token_embd.weight": source["model.embed_tokens.weight"],
        "blk.0.attn_q.weight": rope_permute(source["model.layers.0.self_attn.q_proj.weight"], heads),
        "blk.0.attn_k.weight": rope_permute(source["model.layers.0.self_attn.k_proj.weight"], kv_heads),
        "blk.0.ffn_down.weight": source["model.layers.0.mlp.down_proj.weight"],
        "blk.0.attn_norm.weight": source["model.layers.0.input_layernorm.weight"],
        "output_norm.weight": source["model.norm.weight"],
    }
    for name, expected in pairs.items():
        got = tensors[name][1]
        assert got.shape == expected.shape, name
        error = np.abs(got - expected).max() / np.abs(expected).max()
        bound = 0.0 if expected.ndim == 1 else ROUND_TRIP_BOUNDS[quant]
        assert error <= bound, f"{name}: {error:.3g} > {bound}"


@pytest.mark.slow
def test_our_reader_agrees_with_gguf_reader(tiny_gguf) -> None:
    # gguf's own reader is slow on a 183k-token vocabulary, so it checks our reader once, on a quantized file.
    path = tiny_gguf("q8_0")
    reader = gguf.GGUFReader(path)
    ours = read_gguf_metadata(path)
    tensors = read_tensors(path)
    assert [t.name for t in reader.tensors] == [t.name for t in ours.tensors]
    for tensor in reader.tensors:
        qtype, values = tensors[tensor.name]
        assert tensor.tensor_type == qtype
        np.testing.assert_array_equal(gguf.quants.dequantize(tensor.data, qtype).reshape(values.shape), values)
    for key in gguf_keys.REQUIRED:
        assert reader.fields[key].contents() == pytest.approx(ours.fields[key])
    assert len(reader.fields[gguf.Keys.Tokenizer.LIST].data) == vocab.FULL_VOCAB_SIZE


def raw_tensors(path: Path) -> dict[str, tuple[int, bytes]]:
    meta = read_gguf_metadata(path)
    with open(path, "rb") as fh:
        data = fh.read()
    out = {}
    for t in meta.tensors:
        block, size = gguf.GGML_QUANT_SIZES[Q(t.type)]
        start = meta.data_offset + t.offset
        out[t.name] = (t.type, data[start : start + int(np.prod(t.shape)) // block * size])
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("quant", "tied"), [("q4_k_m", True), ("q4_k_m", False), ("q6_k", True)])
def test_k_quants_equal_llama_cpps_own_recipe(tiny_gguf, tmp_path: Path, quant: str, tied: bool) -> None:
    # We pre-quantize the vocabulary-sized tensors with ggml's kernels to bound memory; the file must be
    # byte for byte what llama.cpp makes by itself from an all-BF16 GGUF.
    from conftest import KQUANT_SHAPE
    from midillm_lite.convert import QUANTS
    from midillm_lite.convert.kquant import llama_quantize

    shape = {**KQUANT_SHAPE, "tied": tied}
    reference = tmp_path / "reference.gguf"
    llama_quantize(tiny_gguf("bf16", **shape), reference, QUANTS[quant], threads=2)
    ours, theirs = raw_tensors(tiny_gguf(quant, **shape)), raw_tensors(reference)
    assert list(ours) == list(theirs)
    for name in theirs:
        assert ours[name][0] == theirs[name][0], f"{name}: type {Q(ours[name][0]).name} != {Q(theirs[name][0]).name}"
        assert ours[name][1] == theirs[name][1], f"{name}: bytes differ"
    embedding_type = Q(ours["token_embd.weight"][0])
    assert embedding_type == (Q.Q6_K if tied or quant == "q6_k" else Q.Q4_K)
