"""The `midillm.*` GGUF metadata keys: the one place their names are spelled.

The converter writes them, `info` and `gen` read them, so a MIDI-LLM GGUF is
self-describing and the runtime hard-codes no token number or prompt.
"""

from __future__ import annotations

NAMESPACE = "midillm"

TEXT_VOCAB_SIZE = f"{NAMESPACE}.text_vocab_size"  # offset of MIDI token 0 (128,256)
AMT_VOCAB_SIZE = f"{NAMESPACE}.amt_vocab_size"  # MIDI ids reserved (55,030)
AUTOREGRESS_ID = f"{NAMESPACE}.autoregress_token_id"  # full id that ends the prompt
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

ALL = (
    TEXT_VOCAB_SIZE,
    AMT_VOCAB_SIZE,
    AUTOREGRESS_ID,
    SYSTEM_PROMPT,
    TEMPERATURE,
    TOP_P,
    MAX_NEW_TOKENS,
    TRAIN_CONTEXT_LENGTH,
    SOURCE_REPO,
    SOURCE_REVISION,
    CONVERTER_VERSION,
    LAYOUT,
)
