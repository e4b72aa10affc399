"""The midi-head layout: a standard MIDI-LLM GGUF split into a MIDI-only model and its text companion.

While music is generated only MIDI tokens are sampled, yet a standard file's
output head computes 183,286 logits a step. The midi-head model keeps every
tensor of the standard file except the vocabulary-sized ones (token_embd and an
untied output), which keep only their 55,030 MIDI rows; its vocabulary is
llama.cpp's "no_vocab" with 55,030 ids, id = AMT id. The companion
(`NAME.text.gguf`) holds what the prompt needs: the Llama-3 tokenizer and the
text rows of token_embd, which the runtime looks up and feeds to llama.cpp as
input vectors. ggml quantizes each row on its own, so rows are sliced byte for
byte: both files hold exactly the standard file's weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import gguf

from midillm_lite import gguf_keys
from midillm_lite.amt import vocab
from midillm_lite.errors import Opt, UserError
from midillm_lite.fsutil import atomic_path, check_writable_target
from midillm_lite.layouts import LAYOUT_MIDI_HEAD, LAYOUT_STANDARD, companion_path

from .tensors import EMBEDDING_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

K = gguf.Keys
NO_VOCAB = "no_vocab"  # llama.cpp's tokenizer model for a file that carries no tokenizer
VOCAB_SIZED = (EMBEDDING_NAME, OUTPUT_NAME)
TOKENIZER_PREFIX = "tokenizer."
PER_TOKEN_ARRAYS = (K.Tokenizer.LIST, K.Tokenizer.TOKEN_TYPE, K.Tokenizer.SCORES)
_WRITER_OWNED = ("GGUF.", K.General.ARCHITECTURE, K.General.ALIGNMENT)  # keys GGUFWriter writes itself


def split_midi_head(standard: str | os.PathLike[str], out: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write `out` (midi-head model) and its companion from a standard-layout GGUF; returns the companion's path."""
    out = Path(out)
    companion = companion_path(out)
    check_writable_target(out, force=force)
    check_writable_target(companion, force=force)
    reader = gguf.GGUFReader(standard)
    _check_standard(reader, Path(standard))
    arch = str(reader.fields[K.General.ARCHITECTURE].contents())
    pair = _split_hash(reader)
    # The companion goes first: a model file under its final name always has its companion beside it.
    with atomic_path(companion, force=True) as tmp:
        _write(tmp, arch, reader, _companion_fields(reader, pair), _text_rows(reader))
    with atomic_path(out, force=True) as tmp:
        _write(tmp, arch, reader, _model_fields(reader, companion.name, pair), _midi_rows(reader))
    log.info("wrote %s and %s (%s layout)", out, companion, LAYOUT_MIDI_HEAD)
    return companion


def _check_standard(reader: gguf.GGUFReader, path: Path) -> None:
    layout = reader.fields.get(gguf_keys.LAYOUT)
    if layout is None or str(layout.contents()) != LAYOUT_STANDARD:
        raise UserError(
            f"{path} is not a standard-layout MIDI-LLM GGUF (convert the checkpoint without ", Opt("layout"), ")"
        )
    tokens = reader.fields.get(K.Tokenizer.LIST)
    if tokens is None or len(tokens.data) != vocab.FULL_VOCAB_SIZE:
        raise UserError(f"{path} does not hold the {vocab.FULL_VOCAB_SIZE}-token MIDI-LLM vocabulary")


def _copied(reader: gguf.GGUFReader, keep) -> Iterable[tuple[str, object, list[gguf.GGUFValueType]]]:
    for key, field in reader.fields.items():
        if key.startswith(_WRITER_OWNED) or not keep(key):
            continue
        yield key, field.contents(), field.types


def _split_hash(reader: gguf.GGUFReader) -> str:
    """The pairing key both files carry: sha256 of the standard file's whole token_embd (text and MIDI rows)."""
    digest = hashlib.sha256()
    for tensor in reader.tensors:
        if tensor.name == EMBEDDING_NAME:
            digest.update(tensor.data)  # a memory-mapped view: hashed in place, not copied
    return digest.hexdigest()


def _pair_field(pair: str) -> tuple[str, object, list[gguf.GGUFValueType]]:
    return (gguf_keys.SPLIT_SHA256, pair, [gguf.GGUFValueType.STRING])


def _model_fields(reader: gguf.GGUFReader, companion_name: str, pair: str):
    fields = list(_copied(reader, lambda key: not key.startswith(TOKENIZER_PREFIX)))
    fields = [_with(f, K.LLM.VOCAB_SIZE.format(arch=_arch(reader)), vocab.MIDI_VOCAB_SIZE) for f in fields]
    fields = [_with(f, gguf_keys.LAYOUT, LAYOUT_MIDI_HEAD) for f in fields]
    fields.append((K.Tokenizer.MODEL, NO_VOCAB, [gguf.GGUFValueType.STRING]))
    fields.append((gguf_keys.COMPANION, companion_name, [gguf.GGUFValueType.STRING]))
    fields.append(_pair_field(pair))
    return fields


def _companion_fields(reader: gguf.GGUFReader, pair: str):
    fields = [_pair_field(pair)]
    for key, value, types in _copied(reader, lambda key: True):
        if key in PER_TOKEN_ARRAYS:
            value = value[: vocab.TEXT_VOCAB_SIZE]
        fields.append((key, value, types))
    fields = [_with(f, K.LLM.VOCAB_SIZE.format(arch=_arch(reader)), vocab.TEXT_VOCAB_SIZE) for f in fields]
    return [_with(f, gguf_keys.LAYOUT, LAYOUT_MIDI_HEAD) for f in fields]


def _arch(reader: gguf.GGUFReader) -> str:
    return str(reader.fields[K.General.ARCHITECTURE].contents())


def _with(field: tuple, key: str, value) -> tuple:
    return (key, value, field[2]) if field[0] == key else field


def _midi_rows(reader: gguf.GGUFReader):
    for tensor in reader.tensors:
        data = tensor.data[vocab.TEXT_VOCAB_SIZE :] if tensor.name in VOCAB_SIZED else tensor.data
        yield tensor.name, data, tensor.tensor_type


def _text_rows(reader: gguf.GGUFReader):
    for tensor in reader.tensors:
        if tensor.name == EMBEDDING_NAME:
            yield tensor.name, tensor.data[: vocab.TEXT_VOCAB_SIZE], tensor.tensor_type


def _write(path: Path, arch: str, reader: gguf.GGUFReader, fields, tensors) -> None:
    writer = gguf.GGUFWriter(path, arch)
    try:
        for key, value, types in fields:
            sub_type = types[-1] if types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, value, types[0], sub_type=sub_type)
        for name, data, qtype in tensors:
            writer.add_tensor(name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
