"""Tiny random-weight MIDI-LLM checkpoints in Hugging Face layout, written with numpy (no torch, no network).

The tokenizer is the real Llama-3 byte-level BPE, derived from llama.cpp's
`devkit/data/ggml-vocab-llama-bpe.gguf` into Hugging Face's tokenizer.json
format, optionally with the 55,030 MIDI tokens listed as added tokens. The
model keeps the full 183,286-token vocabulary; only its width and depth shrink.
"""

from __future__ import annotations

import functools
import json
import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from midillm_lite.amt import vocab
from midillm_lite.modelinfo import read_gguf_metadata

DATA = Path(__file__).parent / "data"
VOCAB_GGUF = DATA / "ggml-vocab-llama-bpe.gguf"
BOS_TEXT, EOS_TEXT, EOT_TEXT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
EOS_IDS = (128001, 128008, 128009)  # Llama 3.2's generation_config: end_of_text, eom_id, eot_id
# Llama 3's pre-tokenizer split (its tokenizer.json's Split regex).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
ROPE_LLAMA3 = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192, "rope_type": "llama3"}  # fmt: skip
ROPE_THETA = 500_000.0
MAX_POSITIONS = 131_072
RMS_EPS = 1e-5
BF16_ROUND = 0x7FFF  # round-to-nearest-even bias when truncating float32 to bfloat16


def midi_token_text(token_id: int) -> str:
    """The name this fixture gives MIDI tokens when tokenizer.json lists them (not the converter's AMT names)."""
    return f"<|midi_{token_id - vocab.TEXT_VOCAB_SIZE}|>"


@functools.lru_cache(maxsize=2)
def llama3_tokenizer_json(midi_tokens: bool) -> str:
    """A Hugging Face tokenizer.json (as text) for the Llama-3 vocabulary, with or without MIDI added tokens."""
    fields = read_gguf_metadata(VOCAB_GGUF, arrays={gguf.Keys.Tokenizer.LIST, gguf.Keys.Tokenizer.MERGES}).fields
    tokens: list[str] = fields[gguf.Keys.Tokenizer.LIST]
    merges: list[str] = fields[gguf.Keys.Tokenizer.MERGES]
    n_bpe = vocab.TEXT_VOCAB_SIZE - 256  # ids 128000.. are the 256 special tokens
    added = [_added(i, tokens[i], special=True) for i in range(n_bpe, vocab.TEXT_VOCAB_SIZE)]
    if midi_tokens:
        added += [
            _added(i, midi_token_text(i), special=False) for i in range(vocab.TEXT_VOCAB_SIZE, vocab.FULL_VOCAB_SIZE)
        ]
    bos_id = tokens.index(BOS_TEXT)
    doc: dict[str, Any] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS_TEXT, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": BOS_TEXT, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": BOS_TEXT, "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {BOS_TEXT: {"id": BOS_TEXT, "ids": [bos_id], "tokens": [BOS_TEXT]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": {tokens[i]: i for i in range(n_bpe)},
            "merges": merges,
        },
    }
    return json.dumps(doc, ensure_ascii=False)


def _added(token_id: int, text: str, *, special: bool) -> dict[str, Any]:
    return {"id": token_id, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}  # fmt: skip


def to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even like torch does."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + BF16_ROUND + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], *, dtype: str = "BF16") -> None:
    """A real safetensors file from float32 arrays, stored as `dtype` (BF16, F16 or F32)."""
    encoders = {"BF16": to_bf16_bits, "F16": lambda a: a.astype("<f2"), "F32": lambda a: a.astype("<f4")}
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, array in tensors.items():
        blob = np.ascontiguousarray(encoders[dtype](array)).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for blob in blobs:
            fh.write(blob)


def random_weights(
    *, hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, head_dim: int, tied: bool, seed: int
) -> dict[str, np.ndarray]:
    """HF-named float32 weights scaled so activations stay O(1) through the layers."""
    rng = np.random.default_rng(seed)

    def dense(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)

    weights = {"model.embed_tokens.weight": rng.standard_normal((vocab.FULL_VOCAB_SIZE, hidden)).astype(np.float32)}
    for i in range(layers):
        p = f"model.layers.{i}"
        weights |= {
            f"{p}.input_layernorm.weight": norm(),
            f"{p}.self_attn.q_proj.weight": dense(heads * head_dim, hidden),
            f"{p}.self_attn.k_proj.weight": dense(kv_heads * head_dim, hidden),
            f"{p}.self_attn.v_proj.weight": dense(kv_heads * head_dim, hidden),
            f"{p}.self_attn.o_proj.weight": dense(hidden, heads * head_dim),
            f"{p}.post_attention_layernorm.weight": norm(),
            f"{p}.mlp.gate_proj.weight": dense(ffn, hidden),
            f"{p}.mlp.up_proj.weight": dense(ffn, hidden),
            f"{p}.mlp.down_proj.weight": dense(hidden, ffn),
        }
    weights["model.norm.weight"] = norm()
    if not tied:
        weights["lm_head.weight"] = dense(vocab.FULL_VOCAB_SIZE, hidden)
    return weights


def model_config(
    *, hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, head_dim: int, tied: bool, config_style: str
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": RMS_EPS,
        "max_position_embeddings": MAX_POSITIONS,
        "vocab_size": vocab.FULL_VOCAB_SIZE,
        "tie_word_embeddings": tied,
        "bos_token_id": 128000,
        "eos_token_id": EOS_IDS[0],
    }
    if config_style == "transformers4":
        config |= {"rope_theta": ROPE_THETA, "rope_scaling": dict(ROPE_LLAMA3), "torch_dtype": "bfloat16"}
    elif config_style == "transformers5":
        config |= {"rope_parameters": {"rope_theta": ROPE_THETA, **ROPE_LLAMA3}, "dtype": "bfloat16"}
    else:
        raise ValueError(f"config_style {config_style!r}")
    return config


def make_checkpoint(
    folder: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 128,
    tied: bool = True,
    config_style: str = "transformers4",
    sharded: bool = False,
    midi_tokens_in_tokenizer: bool = True,
    seed: int = 0,
    dtype: str = "BF16",
) -> Path:
    """Write a tiny MIDI-LLM checkpoint (config, tokenizer, safetensors) into `folder` and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    head_dim = hidden // heads
    shape = dict(hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, ffn=ffn, head_dim=head_dim, tied=tied)
    (folder / "config.json").write_text(json.dumps(model_config(**shape, config_style=config_style), indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 128000, "eos_token_id": list(EOS_IDS)}))
    (folder / "tokenizer.json").write_text(llama3_tokenizer_json(midi_tokens_in_tokenizer), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": BOS_TEXT, "eos_token": EOT_TEXT, "model_max_length": MAX_POSITIONS,
         "tokenizer_class": "PreTrainedTokenizerFast"}))  # fmt: skip
    weights = random_weights(**shape, seed=seed)
    if sharded:
        _write_shards(folder, weights, dtype)
    else:
        write_safetensors(folder / "model.safetensors", weights, dtype=dtype)
    return folder


def _write_shards(folder: Path, weights: dict[str, np.ndarray], dtype: str) -> None:
    names = list(weights)
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, part in enumerate(halves, start=1):
        shard = f"model-{i:05d}-of-{len(halves):05d}.safetensors"
        write_safetensors(folder / shard, {n: weights[n] for n in part}, dtype=dtype)
        weight_map |= dict.fromkeys(part, shard)
    index = {"metadata": {"total_size": sum(a.size * 2 for a in weights.values())}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
