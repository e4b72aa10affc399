"""midillm-lite: offline, quantized MIDI-LLM text-to-MIDI on llama.cpp."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("midillm-lite")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
