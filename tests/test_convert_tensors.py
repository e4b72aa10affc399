"""The HF -> GGUF tensor table and hooks: names, shapes, the rope permutation, llama3 rope factors, leftovers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from midillm_lite.convert.safetensors import TensorSlot
from midillm_lite.convert.source import parse_hparams
from midillm_lite.convert.tensors import llama3_rope_factors, plan_tensors, rope_permute
from refmodel import rope_inv_freq

from devkit.checkpoints import ROPE_LLAMA3, ROPE_THETA, model_config
from midillm_lite.amt import vocab
from midillm_lite.errors import UserError

SHAPE = dict(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, head_dim=16)


def _hparams(tied: bool = True, style: str = "transformers4"):
    return parse_hparams(model_config(**SHAPE, tied=tied, config_style=style), {}, Path("config.json"))


def _slots(hp, *, extra: dict | None = None, drop: str | None = None) -> dict[str, TensorSlot]:
    q, kv = hp.n_heads * hp.head_dim, hp.n_kv_heads * hp.head_dim
    shapes = {"model.embed_tokens.weight": (hp.vocab_size, hp.hidden_size), "model.norm.weight": (hp.hidden_size,)}
    if not hp.tied_embeddings:
        shapes["lm_head.weight"] = (hp.vocab_size, hp.hidden_size)
    for i in range(hp.n_layers):
        p = f"model.layers.{i}"
        shapes |= {
            f"{p}.input_layernorm.weight": (hp.hidden_size,),
            f"{p}.post_attention_layernorm.weight": (hp.hidden_size,),
            f"{p}.self_attn.q_proj.weight": (q, hp.hidden_size),
            f"{p}.self_attn.k_proj.weight": (kv, hp.hidden_size),
            f"{p}.self_attn.v_proj.weight": (kv, hp.hidden_size),
            f"{p}.self_attn.o_proj.weight": (hp.hidden_size, q),
            f"{p}.mlp.gate_proj.weight": (hp.ffn_size, hp.hidden_size),
            f"{p}.mlp.up_proj.weight": (hp.ffn_size, hp.hidden_size),
            f"{p}.mlp.down_proj.weight": (hp.hidden_size, hp.ffn_size),
        }
    shapes |= extra or {}
    shapes.pop(drop, None)
    return {n: TensorSlot(n, Path("x"), "BF16", s, 0, int(np.prod(s)) * 2) for n, s in shapes.items()}


def test_both_config_styles_read_the_same() -> None:
    assert _hparams(style="transformers4") == _hparams(style="transformers5")
    hp = _hparams()
    assert (hp.rope_theta, hp.rope_scaling.factor, hp.rope_scaling.original_max_position_embeddings) == (
        ROPE_THETA,
        ROPE_LLAMA3["factor"],
        ROPE_LLAMA3["original_max_position_embeddings"],
    )


@pytest.mark.parametrize("tied", [True, False])
def test_plan_names_every_tensor_in_llama_cpp_terms(tied: bool) -> None:
    hp = _hparams(tied)
    names = [job.name for job in plan_tensors(_slots(hp), hp)]
    T, N = gguf.MODEL_TENSOR, gguf.TENSOR_NAMES
    assert names[:2] == [N[T.TOKEN_EMBD] + ".weight", N[T.ROPE_FREQS] + ".weight"]
    assert (N[T.OUTPUT] + ".weight" in names) is not tied
    assert N[T.ATTN_Q].format(bid=1) + ".weight" in names
    assert len(names) == len(set(names)) == 2 + 9 * hp.n_layers + 1 + (not tied)


def test_tied_checkpoint_ignores_a_stored_head_copy() -> None:
    hp = _hparams(tied=True)
    plan = plan_tensors(_slots(hp, extra={"lm_head.weight": (hp.vocab_size, hp.hidden_size)}), hp)
    assert all(not job.name.startswith(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.OUTPUT] + ".") for job in plan)


def test_leftover_tensor_is_named() -> None:
    hp = _hparams()
    with pytest.raises(UserError, match=r"model\.layers\.0\.mystery\.weight"):
        plan_tensors(_slots(hp, extra={"model.layers.0.mystery.weight": (4,)}), hp)


def test_bias_is_not_part_of_llama() -> None:
    hp = _hparams()
    with pytest.raises(UserError, match=r"q_proj\.bias"):
        plan_tensors(_slots(hp, extra={"model.layers.0.self_attn.q_proj.bias": (64,)}), hp)


def test_missing_tensor_is_named() -> None:
    hp = _hparams()
    with pytest.raises(UserError, match=r"blk\.1\.ffn_up"):
        plan_tensors(_slots(hp, drop="model.layers.1.mlp.up_proj.weight"), hp)


def test_untied_without_head_says_why() -> None:
    hp = _hparams(tied=False)
    with pytest.raises(UserError, match="tie_word_embeddings is false"):
        plan_tensors(_slots(hp, drop="lm_head.weight"), hp)


def test_shape_disagreeing_with_config_names_both() -> None:
    hp = _hparams()
    bad = _slots(hp, extra={"model.layers.0.mlp.gate_proj.weight": (100, 64)})
    with pytest.raises(UserError, match=r"gate_proj.*\[100, 64\].*\[128, 64\]"):
        plan_tensors(bad, hp)


def test_vocab_size_must_match_embedding() -> None:
    hp = dataclasses.replace(_hparams(), vocab_size=vocab.TEXT_VOCAB_SIZE)
    with pytest.raises(UserError, match=f"{vocab.FULL_VOCAB_SIZE}, 64.*{vocab.TEXT_VOCAB_SIZE}, 64"):
        plan_tensors(_slots(_hparams()), hp)


def test_rope_permute_interleaves_each_heads_halves() -> None:
    # Head of dim 8: HF rows (r0..r3 | r4..r7) pair r_i with r_{i+4}; llama.cpp wants r0 r4 r1 r5 ...
    n_heads, head_dim = 3, 8
    w = np.arange(n_heads * head_dim, dtype=np.float32)[:, None] * np.ones((1, 2), dtype=np.float32)
    out = rope_permute(w, n_heads)[:, 0]
    for h in range(n_heads):
        base = h * head_dim
        expected = [base + i // 2 + (head_dim // 2) * (i % 2) for i in range(head_dim)]
        assert list(out[base : base + head_dim]) == expected


def test_llama3_factors_agree_with_the_reference_formulation() -> None:
    # llama.cpp divides each base frequency by its factor; the reference scales inv_freq directly.
    hp = _hparams()
    config = model_config(**SHAPE, tied=True, config_style="transformers4")
    base = 1.0 / ROPE_THETA ** (np.arange(0, hp.head_dim, 2) / hp.head_dim)
    np.testing.assert_allclose(base / llama3_rope_factors(hp), rope_inv_freq(config), rtol=1e-6)
    factors = llama3_rope_factors(hp)
    assert factors[0] == 1.0 and factors[-1] == ROPE_LLAMA3["factor"]
    assert np.any((factors > 1.0) & (factors < ROPE_LLAMA3["factor"])), "the smooth band is exercised"


def test_unscaled_rope_has_no_factors() -> None:
    config = model_config(**SHAPE, tied=True, config_style="transformers4")
    config.pop("rope_scaling")
    assert llama3_rope_factors(parse_hparams(config, {}, Path("c"))) is None


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda c: c.pop("rope_theta"), "rope_theta is missing"),
        (lambda c: c["rope_scaling"].update(rope_type="yarn"), "'yarn' is not supported"),
        (lambda c: c["rope_scaling"].pop("low_freq_factor"), "lacks low_freq_factor"),
        (lambda c: c.pop("hidden_size"), "hidden_size is missing"),
        (lambda c: c.update(architectures=["MistralForCausalLM"]), "MistralForCausalLM"),
    ],
    ids=["no-theta", "yarn", "no-low-freq", "no-hidden", "mistral"],
)
def test_config_errors_are_named(edit, needle: str) -> None:
    config = model_config(**SHAPE, tied=True, config_style="transformers4")
    edit(config)
    with pytest.raises(UserError, match=needle):
        parse_hparams(config, {}, Path("config.json"))


JSON_VALUES = st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False) | st.text(max_size=5)


@settings(max_examples=300, deadline=None)
@given(
    edits=st.dictionaries(
        st.sampled_from([*model_config(**SHAPE, tied=True, config_style="transformers4"), "rope_parameters"]),
        JSON_VALUES | st.lists(JSON_VALUES, max_size=2) | st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3),
        max_size=3,
    ),
    scaling_edits=st.dictionaries(st.sampled_from(list(ROPE_LLAMA3)), JSON_VALUES, max_size=2),
)
def test_any_config_parses_or_names_the_problem(edits: dict, scaling_edits: dict) -> None:
    config = model_config(**SHAPE, tied=True, config_style="transformers4")
    config["rope_scaling"].update(scaling_edits)
    config.update(edits)
    try:
        hp = parse_hparams(config, {}, Path("config.json"))
    except UserError:
        return
    assert hp.n_heads % hp.n_kv_heads == 0 and hp.head_dim % 2 == 0 and hp.rms_norm_eps > 0
    llama3_rope_factors(hp)  # whatever passed validation yields finite factors
