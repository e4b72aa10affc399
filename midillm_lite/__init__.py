"""midillm-lite: offline, quantized MIDI-LLM text-to-MIDI on llama.cpp."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("midillm-lite")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


def __getattr__(name: str):
    # Loaded on first use: importing llama.cpp costs time that encode/decode/--help should not pay.
    if name == "Generator":
        from .generate import Generator

        return Generator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Generator", "__version__"]
