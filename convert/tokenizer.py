"""The GGUF tokenizer of a MIDI-LLM checkpoint: Llama-3 byte-level BPE plus readable names for the MIDI ids.

Token types follow llama.cpp's reading of Hugging Face added tokens: special
ones are CONTROL, the others USER_DEFINED; MIDI ids that tokenizer.json does
not list get AMT names (`<|amt_time_123|>`, ...) as USER_DEFINED tokens so
llama.cpp's tools print something a person can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gguf

from midillm_lite.amt import ops, vocab
from midillm_lite.errors import UserError

GGUF_TOKENIZER_MODEL = "gpt2"  # llama.cpp's name for byte-level BPE
GGUF_PRE_TOKENIZER = "llama-bpe"  # llama.cpp's name for the Llama-3 Split regex
TEXT_SPECIAL_FORMAT = "<|reserved_special_token_{}|>"
EOT_TEXT = "<|eot_id|>"


@dataclass
class Vocabulary:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    add_bos: bool
    midi_named: int  # how many MIDI ids got generated AMT names


def amt_token_name(amt_id: int) -> str:
    """A readable name for one AMT id, after its meaning in the arrival-time vocabulary."""
    if ops.is_time(amt_id):
        return f"<|amt_time_{ops.time_ticks(amt_id)}|>"
    if ops.is_duration(amt_id):
        return f"<|amt_dur_{ops.duration_ticks(amt_id)}|>"
    if ops.is_note(amt_id):
        instr, pitch = ops.instrument_pitch(amt_id)
        return f"<|amt_note_i{instr}_p{pitch}|>"
    if amt_id == vocab.REST:
        return "<|amt_rest|>"
    if ops.is_control(amt_id):
        # The control block mirrors the event block: name the event, marked as a control.
        return amt_token_name(amt_id - vocab.CONTROL_OFFSET).replace("<|amt_", "<|amt_ctrl_", 1)
    named = {vocab.SEPARATOR: "separator", vocab.AUTOREGRESS: "autoregress", vocab.ANTICIPATE: "anticipate"}
    if amt_id in named:
        return f"<|amt_{named[amt_id]}|>"
    if vocab.AMT_VOCAB_SIZE <= amt_id < vocab.MIDI_VOCAB_SIZE:
        return f"<|amt_reserved_{amt_id - vocab.AMT_VOCAB_SIZE}|>"
    raise ValueError(f"AMT id {amt_id} is outside 0..{vocab.MIDI_VOCAB_SIZE - 1}")


def build_vocabulary(
    tokenizer: dict[str, Any],
    tokenizer_config: dict[str, Any],
    *,
    vocab_size: int,
    bos_id: int | None,
    eos_ids: tuple[int, ...],
) -> Vocabulary:
    """All `vocab_size` tokens with types, the merges, and the special ids, from a tokenizer.json."""
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise UserError(f"tokenizer.json holds a {model.get('type')!r} model; expected the Llama-3 byte-level BPE")
    if vocab_size != vocab.FULL_VOCAB_SIZE:
        raise UserError(
            f"config.json says vocab_size {vocab_size} but a MIDI-LLM checkpoint has {vocab.FULL_VOCAB_SIZE} "
            f"({vocab.TEXT_VOCAB_SIZE} text + {vocab.MIDI_VOCAB_SIZE} MIDI tokens)"
        )
    tokens: list[str | None] = [None] * vocab_size
    types = [int(gguf.TokenType.NORMAL)] * vocab_size
    for text, token_id in model["vocab"].items():
        _place(tokens, token_id, text, "tokenizer.json model.vocab")
    for added in tokenizer.get("added_tokens") or []:
        token_id, text = added.get("id"), added.get("content")
        _place(tokens, token_id, text, "tokenizer.json added_tokens", replace=True)
        types[token_id] = int(gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED)
    midi_named = 0
    for token_id in range(vocab_size):
        if tokens[token_id] is not None:
            continue
        if token_id >= vocab.TEXT_VOCAB_SIZE:
            tokens[token_id] = amt_token_name(vocab.to_amt(token_id))
            types[token_id] = int(gguf.TokenType.USER_DEFINED)
            midi_named += 1
        else:
            # A hole in the text vocabulary: llama.cpp's converter marks such ids as unused padding.
            tokens[token_id] = f"[PAD{token_id}]"
            types[token_id] = int(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    eot_id = next((i for i, t in enumerate(tokens) if t == EOT_TEXT), None)
    add_bos = _add_bos(tokenizer_config)
    return Vocabulary(
        [t for t in tokens if t is not None],
        types,
        merges,
        bos_id,
        eos_ids[0] if eos_ids else None,
        eot_id,
        add_bos,
        midi_named,
    )


def _place(tokens: list[str | None], token_id: object, text: object, where: str, *, replace: bool = False) -> None:
    if not isinstance(token_id, int) or not isinstance(text, str):
        raise UserError(f"{where} has an entry {text!r} -> {token_id!r} that is not text -> id")
    if not 0 <= token_id < len(tokens):
        raise UserError(f"{where} maps {text!r} to id {token_id}, outside the model's {len(tokens)} ids")
    if tokens[token_id] is not None and tokens[token_id] != text and not replace:
        raise UserError(f"{where} gives id {token_id} two names: {tokens[token_id]!r} and {text!r}")
    tokens[token_id] = text


def _add_bos(tokenizer_config: dict[str, Any]) -> bool:
    # tokenizer_config.json says it outright when present; Llama 3's post-processor always prepends BOS.
    value = tokenizer_config.get("add_bos_token")
    return value if isinstance(value, bool) else True
