"""An independent numpy Llama forward pass over a Hugging Face safetensors checkpoint (the logits oracle).

Written from the model's definition, in Hugging Face's layout (rotate-half
rope, no Q/K permutation), with its own safetensors loader, so it shares no
code with the converter it checks: RMSNorm, grouped-query attention with a
causal mask, Llama-3 scaled rope, SwiGLU, tied or untied head. float64 math.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

_NUMPY = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def load_safetensors(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint in `folder` (single file or shards) as float64."""
    weights: dict[str, np.ndarray] = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        raw = path.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
        header.pop("__metadata__", None)
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            data = np.frombuffer(
                raw,
                dtype=_NUMPY[entry["dtype"]],
                count=(end - begin) // 2 if entry["dtype"] != "F32" else (end - begin) // 4,
                offset=8 + n + begin,
            )
            if entry["dtype"] == "BF16":
                data = (data.astype(np.uint32) << 16).view(np.float32)
            weights[name] = data.astype(np.float64).reshape(entry["shape"])
    return weights


def rope_inv_freq(config: dict) -> np.ndarray:
    """Inverse frequencies with Llama-3 scaling, transformers' formulation (divide, then blend the middle band)."""
    params = config.get("rope_parameters") or {**(config.get("rope_scaling") or {}), "rope_theta": config["rope_theta"]}
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    inv_freq = 1.0 / params["rope_theta"] ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if params.get("rope_type", params.get("type")) != "llama3":
        return inv_freq
    factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    old_ctx = params["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
    return np.where(medium, blended, scaled)


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def _rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def forward(folder: Path, token_ids: list[int]) -> np.ndarray:
    """Logits (n_tokens, vocab) for every position of `token_ids`."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    w = load_safetensors(folder)
    n_heads, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_heads
    eps = config["rms_norm_eps"]
    n = len(token_ids)
    angles = np.outer(np.arange(n, dtype=np.float64), rope_inv_freq(config))
    cos = np.cos(np.concatenate([angles, angles], axis=-1))[None]  # (1, n, head_dim)
    sin = np.sin(np.concatenate([angles, angles], axis=-1))[None]
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    x = w["model.embed_tokens.weight"][token_ids]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        h = _rms_norm(x, w[f"{p}.input_layernorm.weight"], eps)
        q = (h @ w[f"{p}.self_attn.q_proj.weight"].T).reshape(n, n_heads, head_dim).transpose(1, 0, 2)
        k = (h @ w[f"{p}.self_attn.k_proj.weight"].T).reshape(n, n_kv, head_dim).transpose(1, 0, 2)
        v = (h @ w[f"{p}.self_attn.v_proj.weight"].T).reshape(n, n_kv, head_dim).transpose(1, 0, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        group = n_heads // n_kv  # each KV head serves `group` query heads
        k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(head_dim) + mask
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        attn = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        x = x + attn.transpose(1, 0, 2).reshape(n, n_heads * head_dim) @ w[f"{p}.self_attn.o_proj.weight"].T
        h = _rms_norm(x, w[f"{p}.post_attention_layernorm.weight"], eps)
        gate = h @ w[f"{p}.mlp.gate_proj.weight"].T
        up = h @ w[f"{p}.mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[f"{p}.mlp.down_proj.weight"].T
    x = _rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if config.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T
