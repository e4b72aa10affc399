"""What a GGUF model file says about itself: a fast metadata reader and the MIDI-LLM `ModelInfo` check.

gguf's GGUFReader builds an object per array element (seconds for a 183k-token
vocabulary); `read_gguf_metadata` walks the header with struct, keeps scalars
and skips arrays unless asked, so `info` and `gen` start instantly. Anything
malformed or truncated is a UserError naming the file.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from . import gguf_keys
from .amt import vocab
from .errors import UserError
from .layouts import LAYOUT_STANDARD, LAYOUTS, companion_path

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_COUNT = 1 << 32  # no real file has more keys, tensors, array items or dims than this
MAX_DIMS = 8
MAX_ARRAY_DEPTH = 4  # writers nest at most one level; deeper is corruption (and would exhaust the stack)
DEFAULT_ALIGNMENT = 32
V = gguf.GGUFValueType
_SCALARS = {
    V.UINT8: "<B", V.INT8: "<b", V.UINT16: "<H", V.INT16: "<h", V.UINT32: "<I", V.INT32: "<i",
    V.FLOAT32: "<f", V.BOOL: "<?", V.UINT64: "<Q", V.INT64: "<q", V.FLOAT64: "<d",
}  # fmt: skip
COMPANION_EMBEDDING = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.TOKEN_EMBD] + ".weight"  # the text rows it holds
NOT_MIDILLM_HINT = "convert the MIDI-LLM checkpoint with `midillm-lite convert`"


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]  # ggml order (fastest dimension first), as stored
    type: int
    offset: int  # relative to the data section


@dataclass
class GGUFMetadata:
    version: int
    fields: dict[str, Any]  # scalars and strings by key; skipped arrays as ArrayInfo
    tensors: list[TensorEntry]
    data_offset: int
    file_size: int


@dataclass(frozen=True)
class ArrayInfo:
    """An array left unread: its element type and length."""

    item_type: int
    count: int


class _Cursor:
    def __init__(self, buf: mmap.mmap | bytes, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise UserError(f"{self.path} is truncated or corrupt: its header runs past the end of the file")
        chunk = self.buf[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))[0]

    def count(self, what: str) -> int:
        n = self.unpack("<Q")
        if n > MAX_COUNT:
            raise UserError(f"{self.path} is corrupt: {what} count {n} is not plausible")
        return n

    def skip_strings(self, n: int) -> None:
        # Walk the length prefixes without building the strings: vocabularies hold ~500k of them.
        buf, pos, end = self.buf, self.pos, len(self.buf)
        for _ in range(n):
            if pos + 8 > end:
                break
            pos += 8 + struct.unpack_from("<Q", buf, pos)[0]
            if pos > end:
                break
        else:
            self.pos = pos
            return
        raise UserError(f"{self.path} is truncated or corrupt: its header runs past the end of the file")

    def string(self) -> str:
        raw = self.take(self.count("string length"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{self.path} is corrupt: a metadata string is not UTF-8") from exc

    def value(self, vtype: int, keep_array: bool, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == V.STRING:
            return self.string()
        if vtype == V.ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise UserError(f"{self.path} is corrupt: arrays nested more than {MAX_ARRAY_DEPTH} deep")
            item_type, n = self.unpack("<I"), self.count("array item")
            if not keep_array and item_type == V.STRING:
                self.skip_strings(n)
                return ArrayInfo(item_type, n)
            if not keep_array and item_type in _SCALARS:
                self.take(n * struct.calcsize(_SCALARS[item_type]))
                return ArrayInfo(item_type, n)
            items = [self.value(item_type, keep_array, depth + 1) for _ in range(n)]
            return items if keep_array else ArrayInfo(item_type, n)
        raise UserError(f"{self.path} is corrupt: unknown metadata value type {vtype}")


def read_gguf_metadata(path: str | os.PathLike[str], *, arrays: Collection[str] = ()) -> GGUFMetadata:
    """Parse a GGUF header: keys (arrays only those named in `arrays`), tensor table, and size checks."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < len(GGUF_MAGIC):
                raise UserError(f"{path} is not a GGUF file (only {size} bytes)")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(_Cursor(buf, path), size, set(arrays))
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _parse(cur: _Cursor, size: int, arrays: set[str]) -> GGUFMetadata:
    path = cur.path
    if cur.take(4) != GGUF_MAGIC:
        raise UserError(f"{path} is not a GGUF file (wrong magic bytes)")
    version = cur.unpack("<I")
    if version not in SUPPORTED_VERSIONS:
        raise UserError(f"{path} is GGUF version {version}; only versions 2 and 3 are supported")
    n_tensors, n_kv = cur.count("tensor"), cur.count("metadata key")
    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        fields[key] = cur.value(cur.unpack("<I"), key in arrays)
    tensors = [_tensor_entry(cur) for _ in range(n_tensors)]
    alignment = fields.get(gguf.Keys.General.ALIGNMENT, DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise UserError(f"{path} is corrupt: alignment {alignment!r}")
    data_offset = -(-cur.pos // alignment) * alignment
    for tensor in tensors:
        end = data_offset + tensor.offset + _tensor_nbytes(tensor, path)
        if end > size:
            raise UserError(
                f"{path} is truncated: tensor {tensor.name} ends at byte {end} of {size} (incomplete download or copy?)"
            )
    return GGUFMetadata(version, fields, tensors, data_offset, size)


def _tensor_entry(cur: _Cursor) -> TensorEntry:
    name = cur.string()
    n_dims = cur.unpack("<I")
    if n_dims > MAX_DIMS:
        raise UserError(f"{cur.path} is corrupt: tensor {name} has {n_dims} dimensions")
    shape = tuple(cur.unpack("<Q") for _ in range(n_dims))
    return TensorEntry(name, shape, cur.unpack("<I"), cur.unpack("<Q"))


def _tensor_nbytes(tensor: TensorEntry, path: Path) -> int:
    try:
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(tensor.type)]
    except (ValueError, KeyError):
        raise UserError(f"{path} is corrupt or too new: tensor {tensor.name} has unknown type {tensor.type}") from None
    n = 1
    for dim in tensor.shape:
        n *= dim
    return n // block * type_size


@dataclass
class ModelInfo:
    """A MIDI-LLM GGUF's self-description: the `midillm.*` keys plus what llama.cpp's keys say."""

    path: Path
    text_vocab_size: int
    amt_vocab_size: int
    autoregress_token_id: int
    system_prompt: str
    temperature: float
    top_p: float
    max_new_tokens: int
    train_context_length: int
    source_repo: str
    source_revision: str
    converter_version: str
    layout: str
    quant: str
    n_tensors: int
    file_size: int
    n_vocab: int
    architecture: str
    n_layers: int
    embedding_length: int
    context_length: int
    bos_token_id: int | None
    eos_token_id: int | None
    name: str = ""
    companion: str = ""  # midi-head layout: path of the text companion (tokenizer + text embedding rows)
    extra: dict[str, Any] = field(default_factory=dict)  # any other midillm.* keys, for forward compatibility

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["path"] = str(self.path)
        return data


def quant_name(file_type: int | None) -> str:
    """general.file_type as the --quant name (`q4_k_m`), or the enum's name for types we do not produce."""
    if file_type is None:
        return "unknown"
    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return f"type {file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()


def _shortest(value: float) -> float:
    """A float32 key back as the decimal that was written (0.98, not 0.9800000190734863)."""
    return float(str(np.float32(value)))


def _check_types(path: Path, fields: dict[str, Any]) -> None:
    for key in gguf_keys.KEYS:
        if key.name not in fields:
            continue  # presence is checked against gguf_keys.REQUIRED
        value, wanted = fields[key.name], key.python_type
        if isinstance(value, bool) or not isinstance(value, wanted):
            shown = "an array" if isinstance(value, ArrayInfo | list) else type(value).__name__
            raise UserError(
                f"{path} is corrupt: {key.name} is {shown}, not the {_type_name(wanted)} the converter writes"
            )


def _check_values(path: Path, fields: dict[str, Any]) -> None:
    """Each midillm.* value against what it describes (gguf_keys' checks): a lying file is one line here, at read."""
    for key in gguf_keys.KEYS:
        if key.check is not None and key.name in fields and not key.check(fields[key.name], fields):
            shown = repr(fields[key.name])
            shown = shown if len(shown) <= 40 else shown[:40] + "..."
            raise UserError(
                f"{path} is corrupt or not for this runtime: {key.name} is {shown}; it must be {key.allowed}"
            )


def _type_name(wanted: type | tuple[type, ...]) -> str:
    return "number" if isinstance(wanted, tuple) else {int: "integer", str: "string"}[wanted]


def _check_layout(path: Path, fields: dict[str, Any], layout: Any, n_vocab: Any, width: Any) -> str:
    """The vocabulary each layout must have; a midi-head model's companion must be beside it. Returns its path."""
    if layout not in LAYOUTS:
        raise UserError(f"{path} has layout {layout!r}, which this version does not know ({', '.join(LAYOUTS)})")
    expected = vocab.FULL_VOCAB_SIZE if layout == LAYOUT_STANDARD else vocab.MIDI_VOCAB_SIZE
    offsets_ok = fields[gguf_keys.TEXT_VOCAB_SIZE] + fields[gguf_keys.MIDI_VOCAB_SIZE] == vocab.FULL_VOCAB_SIZE
    if n_vocab != expected or not offsets_ok:
        raise UserError(
            f"{path} is not a MIDI-LLM GGUF this runtime understands: {n_vocab} tokens where its {layout} layout "
            f"needs {expected} ({vocab.TEXT_VOCAB_SIZE} text + {vocab.MIDI_VOCAB_SIZE} MIDI in the full vocabulary)"
        )
    if layout == LAYOUT_STANDARD:
        return ""
    name = fields.get(gguf_keys.COMPANION)
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise UserError(f"{path} is a midi-head model without a valid {gguf_keys.COMPANION} key; reconvert it")
    # The name it was written with, else the name that follows a renamed model (x.gguf -> x.text.gguf).
    candidates = [path.with_name(name), companion_path(path)]
    companion = next((c for c in candidates if c.is_file()), None)
    if companion is None:
        raise UserError(f"{path} needs its text companion {candidates[0]} (tokenizer and text embeddings) beside it")
    _check_companion(path, companion, fields.get(gguf_keys.SPLIT_SHA256), width)
    return str(companion)


def _check_companion(path: Path, companion: Path, pair: Any, width: Any) -> None:
    """The companion must come from the same split as the model: llama.cpp and the row lookup trust its shapes.

    A companion of another width makes llama.cpp read past its input buffer (a crash, or garbage music). Files
    split before the pairing key existed are checked by width and vocabulary only.
    """
    meta = read_gguf_metadata(companion)
    fields = meta.fields
    fix = f"put the companion written with {path.name} beside it, or split the standard file again"
    theirs = fields.get(gguf_keys.SPLIT_SHA256)
    if isinstance(pair, str) and isinstance(theirs, str) and pair != theirs:
        raise UserError(f"{companion} is the text companion of another model, not of {path}; {fix}")
    embedding = next((t for t in meta.tensors if t.name == COMPANION_EMBEDDING), None)
    if embedding is None or len(embedding.shape) != 2:
        raise UserError(f"{companion} is not a midi-head text companion (no {COMPANION_EMBEDDING} matrix); {fix}")
    n_embd, n_rows = embedding.shape  # ggml order: the fastest dimension first
    tokens = fields.get(gguf.Keys.Tokenizer.LIST)
    n_tokens = tokens.count if isinstance(tokens, ArrayInfo) else None
    if n_embd != width:
        raise UserError(f"{companion} holds {n_embd}-wide text embeddings but {path} is {width} wide; {fix}")
    if n_rows != vocab.TEXT_VOCAB_SIZE or n_tokens != vocab.TEXT_VOCAB_SIZE:
        raise UserError(
            f"{companion} holds {n_rows} embedding rows and {n_tokens} tokens, not the {vocab.TEXT_VOCAB_SIZE} "
            f"text tokens of MIDI-LLM; {fix}"
        )


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """Read and check a MIDI-LLM GGUF; a plain Llama, a wrong vocabulary or a broken file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file; give the path of a .gguf model")
    meta = read_gguf_metadata(path)
    fields = meta.fields
    arch = fields.get(gguf.Keys.General.ARCHITECTURE)
    if arch != gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA]:
        raise UserError(f"{path} is not a MIDI-LLM GGUF: its architecture is {arch!r}, not llama; {NOT_MIDILLM_HINT}")
    missing = [key for key in gguf_keys.REQUIRED if key not in fields]
    if not missing:
        _check_types(path, fields)
        _check_values(path, fields)
    if missing:
        raise UserError(
            f"{path} is not a MIDI-LLM GGUF: it lacks {missing[0]} (and {len(missing) - 1} other "
            f"midillm.* keys), so it is a plain {arch} model; {NOT_MIDILLM_HINT}"
        )
    tokens = fields.get(gguf.Keys.Tokenizer.LIST)
    n_vocab = tokens.count if isinstance(tokens, ArrayInfo) else fields.get(gguf.Keys.LLM.VOCAB_SIZE.format(arch=arch))
    layout = fields[gguf_keys.LAYOUT]
    width = fields.get(gguf.Keys.LLM.EMBEDDING_LENGTH.format(arch=arch))
    companion = _check_layout(path, fields, layout, n_vocab, width)

    def llm(key: str) -> Any:
        return fields.get(key.format(arch=arch))

    return ModelInfo(
        path=path,
        text_vocab_size=fields[gguf_keys.TEXT_VOCAB_SIZE],
        amt_vocab_size=fields[gguf_keys.MIDI_VOCAB_SIZE],
        autoregress_token_id=fields[gguf_keys.AUTOREGRESS_ID],
        system_prompt=fields[gguf_keys.SYSTEM_PROMPT],
        temperature=_shortest(fields[gguf_keys.TEMPERATURE]),
        top_p=_shortest(fields[gguf_keys.TOP_P]),
        max_new_tokens=fields[gguf_keys.MAX_NEW_TOKENS],
        train_context_length=fields[gguf_keys.TRAIN_CONTEXT_LENGTH],
        source_repo=fields[gguf_keys.SOURCE_REPO],
        source_revision=fields[gguf_keys.SOURCE_REVISION],
        converter_version=fields[gguf_keys.CONVERTER_VERSION],
        layout=layout,
        companion=companion,
        quant=quant_name(fields.get(gguf.Keys.General.FILE_TYPE)),
        n_tensors=len(meta.tensors),
        file_size=meta.file_size,
        n_vocab=n_vocab,
        architecture=arch,
        n_layers=llm(gguf.Keys.LLM.BLOCK_COUNT),
        embedding_length=llm(gguf.Keys.LLM.EMBEDDING_LENGTH),
        context_length=llm(gguf.Keys.LLM.CONTEXT_LENGTH),
        bos_token_id=fields.get(gguf.Keys.Tokenizer.BOS_ID),
        eos_token_id=fields.get(gguf.Keys.Tokenizer.EOS_ID),
        name=fields.get(gguf.Keys.General.NAME, ""),
        extra={
            k: v for k, v in fields.items() if k.startswith(gguf_keys.NAMESPACE + ".") and k not in gguf_keys.BY_NAME
        },
    )
