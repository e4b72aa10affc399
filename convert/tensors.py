"""Hugging Face Llama tensors -> llama.cpp GGUF tensors: the name table, expected shapes and per-tensor hooks.

Names come from gguf's TensorNameMap (the table of HF patterns with {bid});
shapes are checked against config.json; hooks turn one source tensor into
what llama.cpp expects (Q/K rows permuted for its rope layout). `plan_tensors`
consumes every checkpoint tensor or names the one it cannot place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import gguf
import numpy as np

from midillm_lite.errors import UserError

from .safetensors import TensorSlot
from .source import HParams

ARCH = gguf.MODEL_ARCH.LLAMA
T = gguf.MODEL_TENSOR
BLOCK_KINDS = (T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.FFN_NORM, T.FFN_GATE, T.FFN_UP, T.FFN_DOWN)
GLOBAL_KINDS = (T.TOKEN_EMBD, T.OUTPUT_NORM)

WEIGHT_SUFFIX = ".weight"  # llama.cpp names weights `<tensor name>.weight`

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass
class TensorJob:
    """One GGUF tensor to write: its name, its float32 source (a checkpoint slot or computed values), a hook."""

    name: str
    shape: tuple[int, ...]  # numpy (row-major) shape as written
    slot: TensorSlot | None = None
    values: np.ndarray | None = None  # computed tensors (rope_freqs)
    transform: Transform | None = None  # needs the whole tensor (mixes rows)

    @property
    def source_bytes(self) -> int:
        return self.slot.nbytes if self.slot is not None else 0

    @property
    def is_matrix(self) -> bool:
        return len(self.shape) == 2


def expected_shape(kind: T, hp: HParams) -> tuple[int, ...]:
    """The Hugging Face (out, in) shape config.json implies for each tensor kind."""
    q_dim, kv_dim = hp.n_heads * hp.head_dim, hp.n_kv_heads * hp.head_dim
    return {
        T.TOKEN_EMBD: (hp.vocab_size, hp.hidden_size),
        T.OUTPUT: (hp.vocab_size, hp.hidden_size),
        T.OUTPUT_NORM: (hp.hidden_size,),
        T.ATTN_NORM: (hp.hidden_size,),
        T.ATTN_Q: (q_dim, hp.hidden_size),
        T.ATTN_K: (kv_dim, hp.hidden_size),
        T.ATTN_V: (kv_dim, hp.hidden_size),
        T.ATTN_OUT: (hp.hidden_size, q_dim),
        T.FFN_NORM: (hp.hidden_size,),
        T.FFN_GATE: (hp.ffn_size, hp.hidden_size),
        T.FFN_UP: (hp.ffn_size, hp.hidden_size),
        T.FFN_DOWN: (hp.hidden_size, hp.ffn_size),
    }[kind]


def rope_permute(weights: np.ndarray, n_heads: int) -> np.ndarray:
    """HF stores each head's rotary pairs as two halves; llama.cpp's rope wants them interleaved."""
    rows = weights.shape[0]
    return weights.reshape(n_heads, 2, rows // n_heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def llama3_rope_factors(hp: HParams) -> np.ndarray | None:
    """Per-frequency divisors of Llama 3's rope scaling (llama.cpp's `rope_freqs` tensor), or None if unscaled."""
    scaling = hp.rope_scaling
    if scaling is None:
        return None
    dims = np.arange(0, hp.head_dim, 2, dtype=np.float64) / hp.head_dim
    wavelengths = 2 * math.pi * hp.rope_theta**dims
    low_freq_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_freq_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    # Between the two wavelengths the divisor moves smoothly from 1 (high frequencies) to `factor` (low).
    smooth = (scaling.original_max_position_embeddings / wavelengths - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    factors = 1.0 / ((1 - smooth) / scaling.factor + smooth)
    factors = np.where(wavelengths < high_freq_wavelen, 1.0, factors)
    factors = np.where(wavelengths > low_freq_wavelen, scaling.factor, factors)
    return factors.astype(np.float32)


def _hook(kind: T, hp: HParams) -> Transform | None:
    if kind == T.ATTN_Q:
        return lambda w: rope_permute(w, hp.n_heads)
    if kind == T.ATTN_K:
        return lambda w: rope_permute(w, hp.n_kv_heads)
    return None


def plan_tensors(tensors: dict[str, TensorSlot], hp: HParams) -> list[TensorJob]:
    """Map every checkpoint tensor to its GGUF job, in llama.cpp's usual order; error on leftovers or gaps."""
    name_map = gguf.get_tensor_name_map(ARCH, hp.n_layers)
    jobs: dict[str, TensorJob] = {}
    for hf_name, slot in tensors.items():
        found = name_map.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise UserError(f"checkpoint tensor {hf_name!r} has no llama.cpp counterpart; is this a Llama checkpoint?")
        kind, gguf_name = found
        if kind not in (*GLOBAL_KINDS, T.OUTPUT, *BLOCK_KINDS) or not hf_name.endswith(WEIGHT_SUFFIX):
            raise UserError(f"checkpoint tensor {hf_name!r} ({gguf_name}) is not part of a plain Llama model")
        if kind == T.OUTPUT and hp.tied_embeddings:
            # transformers ties lm_head to embed_tokens and ignores any stored copy; so do we.
            continue
        want = expected_shape(kind, hp)
        if slot.shape != want:
            raise UserError(
                f"checkpoint tensor {hf_name!r} has shape {list(slot.shape)} but config.json implies {list(want)}"
            )
        if slot.dtype not in ("F32", "F16", "BF16"):
            raise UserError(f"checkpoint tensor {hf_name!r} is {slot.dtype}; expected BF16, F16 or F32")
        jobs[gguf_name] = TensorJob(gguf_name, slot.shape, slot=slot, transform=_hook(kind, hp))
    _check_complete(jobs, hp)
    rope = llama3_rope_factors(hp)
    ordered = [jobs[n] for n in _gguf_order(hp) if n in jobs]
    if rope is not None:
        ordered.insert(1, TensorJob(_weight_name(T.ROPE_FREQS), rope.shape, values=rope))
    return ordered


def _weight_name(kind: T, bid: int | None = None) -> str:
    base = gguf.TENSOR_NAMES[kind]
    return f"{base.format(bid=bid) if bid is not None else base}{WEIGHT_SUFFIX}"


EMBEDDING_NAME = _weight_name(T.TOKEN_EMBD)
OUTPUT_NAME = _weight_name(T.OUTPUT)


def _gguf_names(hp: HParams) -> list[str]:
    names = [_weight_name(k) for k in GLOBAL_KINDS]
    if not hp.tied_embeddings:
        names.append(_weight_name(T.OUTPUT))
    for bid in range(hp.n_layers):
        names.extend(_weight_name(k, bid) for k in BLOCK_KINDS)
    return names


def _gguf_order(hp: HParams) -> list[str]:
    embd, norm, *rest = _gguf_names(hp)
    return [embd, *rest, norm] if hp.tied_embeddings else [embd, *rest[1:], norm, rest[0]]


def _check_complete(jobs: dict[str, TensorJob], hp: HParams) -> None:
    for name in _gguf_names(hp):
        if name not in jobs:
            hint = " (config.json says tie_word_embeddings is false)" if name == _weight_name(T.OUTPUT) else ""
            raise UserError(f"the checkpoint lacks the tensor for llama.cpp's {name}{hint}; incomplete download?")
