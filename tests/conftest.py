"""Shared model fixtures: tiny MIDI-LLM checkpoints and their GGUF conversions, built once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from midillm_lite.convert import QUANTS, convert

from devkit.checkpoints import make_checkpoint

# K-quants need rows of 256 values to use real K blocks (llama.cpp falls back per tensor otherwise).
KQUANT_SHAPE = {"hidden": 256, "ffn": 512, "heads": 4, "kv_heads": 2, "layers": 1}
LLAMA_THREADS = 2  # the test machine has two cores, shared


def is_k_quant(quant: str) -> bool:
    return QUANTS[quant].matrix_type is None


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """make_checkpoint(**kwargs) cached per distinct kwargs for the whole session."""
    cache: dict[tuple, Path] = {}

    def build(**kwargs) -> Path:
        key = tuple(sorted(kwargs.items()))
        if key not in cache:
            cache[key] = make_checkpoint(tmp_path_factory.mktemp("checkpoint"), **kwargs)
        return cache[key]

    return build


@pytest.fixture(scope="session")
def tiny_checkpoint(checkpoint_factory: Callable[..., Path]) -> Path:
    """The default tiny checkpoint: hidden 64, 2 layers, 4/2 heads, tied, MIDI tokens in tokenizer.json."""
    return checkpoint_factory()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, checkpoint_factory: Callable[..., Path]) -> Callable[..., Path]:
    """tiny_gguf(quant="f32", **checkpoint_kwargs) -> a converted tiny MIDI-LLM GGUF, cached per session.

    K-quants default to a 256-wide checkpoint so llama.cpp writes real K blocks.
    """
    cache: dict[tuple, Path] = {}

    def build(quant: str = "f32", **checkpoint_kwargs) -> Path:
        if not checkpoint_kwargs and is_k_quant(quant):
            checkpoint_kwargs = dict(KQUANT_SHAPE)
        key = (quant, tuple(sorted(checkpoint_kwargs.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("gguf") / f"tiny-{quant}.gguf"
            convert(checkpoint_factory(**checkpoint_kwargs), out, quant=quant, threads=LLAMA_THREADS)
            cache[key] = out
        return cache[key]

    return build
