"""Logits of converted GGUFs in llama.cpp against the independent numpy forward pass, at every prompt position.

Relative error of a position = max |llama.cpp - reference| / max |reference| over
the vocabulary; a file's error is the worst position. The KV cache is kept in
F32 so the F32 comparison measures the conversion, not llama.cpp's F16 cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from refmodel import forward

from midillm_lite.amt import vocab

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)
GGML_TYPE_F32 = 0  # ggml_type of the KV cache
DESCRIPTION = "A cheerful piano melody with a walking bass, 120 bpm, in C major."
MIDI_PROMPT = [vocab.to_full(t) for t in (0, vocab.DUR_OFFSET + 50, vocab.NOTE_OFFSET + 60,
                                          25, vocab.DUR_OFFSET + 25, vocab.NOTE_OFFSET + 64)]  # fmt: skip
F32_MAX_RELATIVE_ERROR = 1e-4
# Measured on the tiny model (2026-11): f16 5e-4, bf16 4e-3, q8_0 2e-2, q4_0 0.33; bounds leave headroom.
QUANT_BOUNDS = {"f16": 5e-3, "bf16": 3e-2, "q8_0": 0.1, "q4_0": 0.6}


def llama_logits(model: Path, tokens: list[int]) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), n_ctx=256, n_batch=256, n_threads=2, logits_all=True, verbose=False,
                type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)  # fmt: skip
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float64)
    finally:
        llm.close()


def prompt_tokens(model: Path) -> list[int]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), vocab_only=True, verbose=False)
    text = llm.tokenize((vocab.SYSTEM_PROMPT + DESCRIPTION + " ").encode(), add_bos=True, special=True)
    return [*text, vocab.MIDI_AUTOREGRESS_ID, *MIDI_PROMPT]


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float((np.abs(got - ref).max(axis=1) / np.abs(ref).max(axis=1)).max())


VARIANTS = {
    "tied-transformers4-single": {},
    "untied": {"tied": False},
    "transformers5-config": {"config_style": "transformers5"},
    "sharded": {"sharded": True},
    "midi-named-by-converter": {"midi_tokens_in_tokenizer": False},
    "f32-weights": {"dtype": "F32"},
}


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_f32_logits_match_the_reference(tiny_gguf, checkpoint_factory, variant: str) -> None:
    kwargs = VARIANTS[variant]
    model = tiny_gguf("f32", **kwargs)
    tokens = prompt_tokens(model)
    assert tokens[0] == 128000 and tokens[-len(MIDI_PROMPT) - 1] == vocab.MIDI_AUTOREGRESS_ID
    got, ref = llama_logits(model, tokens), forward(checkpoint_factory(**kwargs), tokens)
    assert got.shape == ref.shape == (len(tokens), vocab.FULL_VOCAB_SIZE)
    error = relative_error(got, ref)
    log.info("%s: f32 max relative error %.2e over %d positions", variant, error, len(tokens))
    assert error <= F32_MAX_RELATIVE_ERROR
    np.testing.assert_array_equal(got.argmax(axis=1), ref.argmax(axis=1))


@pytest.mark.parametrize("quant", list(QUANT_BOUNDS))
def test_quantized_logits_stay_close(tiny_gguf, tiny_checkpoint, quant: str) -> None:
    model = tiny_gguf(quant)
    tokens = prompt_tokens(model)
    got, ref = llama_logits(model, tokens), forward(tiny_checkpoint, tokens)
    error = relative_error(got, ref)
    agree = float((got.argmax(axis=1) == ref.argmax(axis=1)).mean())
    log.info("%s: max relative error %.2e, top-1 agreement %.0f%%", quant, error, 100 * agree)
    assert 0 < error <= QUANT_BOUNDS[quant]  # nonzero: the weights really were rounded
