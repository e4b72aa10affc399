"""The `midillm.*` GGUF metadata keys: one table of name, type, value source and whether a reader requires it.

In the manner of gguf-py's `constants.py`: every key is a named constant, and
`KEYS` describes each one. The converter writes the keys from the table
(`converter_values`), the reader checks types and presence from it, and the
tests import it, so a MIDI-LLM GGUF is self-describing and the runtime
hard-codes no token number or prompt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gguf

from .amt import vocab
from .layouts import LAYOUT_STANDARD, LAYOUTS
from .limits import MAX_CONTEXT

NAMESPACE = "midillm"

TEXT_VOCAB_SIZE = f"{NAMESPACE}.text_vocab_size"
# 55,030 MIDI ids (AMT's 55,028 plus two MIDI-LLM reserves). The key's name predates that distinction and is kept
# for the files already written; in code it is MIDI_VOCAB_SIZE, never AMT_VOCAB_SIZE (which is AMT's 55,028).
MIDI_VOCAB_SIZE = f"{NAMESPACE}.amt_vocab_size"
AUTOREGRESS_ID = f"{NAMESPACE}.autoregress_token_id"
SYSTEM_PROMPT = f"{NAMESPACE}.system_prompt"
TEMPERATURE = f"{NAMESPACE}.sampling.temperature"
TOP_P = f"{NAMESPACE}.sampling.top_p"
MAX_NEW_TOKENS = f"{NAMESPACE}.sampling.max_new_tokens"
TRAIN_CONTEXT_LENGTH = f"{NAMESPACE}.train_context_length"
SOURCE_REPO = f"{NAMESPACE}.source.repo"
SOURCE_REVISION = f"{NAMESPACE}.source.revision"
CONVERTER_VERSION = f"{NAMESPACE}.converter_version"
LAYOUT = f"{NAMESPACE}.layout"  # see layouts.py: "standard" or "midi-head"
COMPANION = f"{NAMESPACE}.companion"  # midi-head only: file name of the text companion, beside the model
# midi-head only, in the model AND its companion: sha256 of the standard file's token_embd bytes, so a companion
# taken from another model (same name, other conversion) is refused before llama.cpp reads either file.
SPLIT_SHA256 = f"{NAMESPACE}.split_sha256"

V = gguf.GGUFValueType


@dataclass(frozen=True)
class Provenance:
    """What a conversion knows beyond the vocabulary: where the weights came from and who wrote the file."""

    repo: str
    revision: str
    converter_version: str
    layout: str = LAYOUT_STANDARD


@dataclass(frozen=True)
class Key:
    name: str
    type: gguf.GGUFValueType
    source: Callable[[Provenance], object] | None  # the converter's value; None: written by a later stage
    required: bool = True  # a reader refuses a file without it
    meaning: str = ""
    # What a reader accepts beyond the type, given the value and every key of the file (for keys that depend on
    # another), and how a message says it. A file can lie; this is where a lie is caught, before llama.cpp sees it.
    check: Callable[[Any, dict[str, Any]], bool] | None = None
    allowed: str = ""

    @property
    def python_type(self) -> type | tuple[type, ...]:
        """What a reader accepts: any GGUF integer width for integers, integers or floats for floats."""
        if self.type == V.STRING:
            return str
        if self.type in (V.FLOAT32, V.FLOAT64):
            return (int, float)
        return int


def _equals(expected: int) -> Callable[[Any, dict[str, Any]], bool]:
    return lambda value, _: value == expected


def _max_new_tokens_fit(value: Any, fields: dict[str, Any]) -> bool:
    trained = fields.get(TRAIN_CONTEXT_LENGTH)
    trained = trained if isinstance(trained, int) and 1 <= trained <= MAX_CONTEXT else MAX_CONTEXT  # its own check
    return 1 <= value <= trained


KEYS: tuple[Key, ...] = (
    Key(TEXT_VOCAB_SIZE, V.UINT32, lambda _: vocab.TEXT_VOCAB_SIZE, meaning="full id of MIDI token 0 (128,256)",
        check=_equals(vocab.TEXT_VOCAB_SIZE), allowed=f"{vocab.TEXT_VOCAB_SIZE} (Llama 3's text tokens)"),
    Key(MIDI_VOCAB_SIZE, V.UINT32, lambda _: vocab.MIDI_VOCAB_SIZE, meaning="MIDI ids in the vocabulary (55,030)",
        check=_equals(vocab.MIDI_VOCAB_SIZE), allowed=f"{vocab.MIDI_VOCAB_SIZE} (the AMT vocabulary MIDI-LLM uses)"),
    Key(AUTOREGRESS_ID, V.UINT32, lambda _: vocab.MIDI_AUTOREGRESS_ID, meaning="full id that ends every prompt",
        check=_equals(vocab.MIDI_AUTOREGRESS_ID),
        allowed=f"{vocab.MIDI_AUTOREGRESS_ID} (text vocabulary {vocab.TEXT_VOCAB_SIZE} + AMT's AUTOREGRESS "
        f"{vocab.AUTOREGRESS}, a MIDI id)"),
    Key(SYSTEM_PROMPT, V.STRING, lambda _: vocab.SYSTEM_PROMPT, meaning="text before the user's description"),
    Key(TEMPERATURE, V.FLOAT32, lambda _: vocab.DEFAULT_TEMPERATURE, meaning="recommended sampling temperature",
        check=lambda value, _: math.isfinite(value) and value >= 0, allowed="a finite number >= 0"),
    Key(TOP_P, V.FLOAT32, lambda _: vocab.DEFAULT_TOP_P, meaning="recommended nucleus mass",
        check=lambda value, _: 0 < value <= 1, allowed="in (0, 1]"),
    Key(MAX_NEW_TOKENS, V.UINT32, lambda _: vocab.DEFAULT_MAX_TOKENS, meaning="recommended new tokens per output",
        check=_max_new_tokens_fit, allowed=f"1..{TRAIN_CONTEXT_LENGTH}"),
    Key(TRAIN_CONTEXT_LENGTH, V.UINT32, lambda _: vocab.TRAIN_CONTEXT_LENGTH, meaning="sequence length trained on",
        check=lambda value, _: 1 <= value <= MAX_CONTEXT, allowed=f"1..{MAX_CONTEXT}"),
    Key(SOURCE_REPO, V.STRING, lambda p: p.repo, meaning="hub repo id or folder name converted"),
    Key(SOURCE_REVISION, V.STRING, lambda p: p.revision, meaning="commit of the source, or 'local'"),
    Key(CONVERTER_VERSION, V.STRING, lambda p: p.converter_version, meaning="midillm-lite version that wrote it"),
    Key(LAYOUT, V.STRING, lambda p: p.layout, meaning="standard or midi-head (layouts.py)",
        check=lambda value, _: value in LAYOUTS, allowed=f"one of {', '.join(LAYOUTS)} (this version's layouts)"),
    Key(COMPANION, V.STRING, None, required=False, meaning="midi-head: the text companion's file name"),
    # Not required: files split before it existed still load, checked by width and vocabulary only.
    Key(SPLIT_SHA256, V.STRING, None, required=False, meaning="midi-head: pairs the model with its companion"),
)  # fmt: skip
BY_NAME = {key.name: key for key in KEYS}
REQUIRED = tuple(key.name for key in KEYS if key.required)


def converter_values(provenance: Provenance) -> list[tuple[str, object, gguf.GGUFValueType]]:
    """(name, value, type) of every key the converter writes, in table order."""
    return [(key.name, key.source(provenance), key.type) for key in KEYS if key.source is not None]
