"""The GGUF layouts a MIDI-LLM model comes in, and how a midi-head model names its text companion."""

from __future__ import annotations

from pathlib import Path

LAYOUT_STANDARD = "standard"  # the full 183,286-token vocabulary, as trained: runs in any llama.cpp tool
LAYOUT_MIDI_HEAD = "midi-head"  # MIDI rows only in the model; text rows and tokenizer in a companion file
LAYOUTS = (LAYOUT_STANDARD, LAYOUT_MIDI_HEAD)
COMPANION_SUFFIX = ".text.gguf"


def companion_path(model: Path) -> Path:
    """`x.gguf` -> `x.text.gguf`, beside the model."""
    return model.with_name(model.name.removesuffix(".gguf") + COMPANION_SUFFIX)
