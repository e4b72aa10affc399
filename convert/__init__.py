"""Conversion stage: MIDI-LLM Hugging Face checkpoints to GGUF (installed as `midillm_lite.convert`)."""

from __future__ import annotations

from .pipeline import PHASE_UNITS, ConvertResult, ProgressCallback, convert
from .quants import DEFAULT_QUANT, QUANT_NAMES, QUANTS
from .tokenizer import amt_token_name

__all__ = [
    "DEFAULT_QUANT",
    "PHASE_UNITS",
    "QUANTS",
    "QUANT_NAMES",
    "ConvertResult",
    "ProgressCallback",
    "amt_token_name",
    "convert",
]
