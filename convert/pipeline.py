"""`convert()`: a checkpoint folder or hub id to one GGUF file, streamed a block of rows at a time.

F32/F16/BF16/Q8_0/Q4_0 are written here with gguf's writer and numpy
quantizers; the K-quants go through llama.cpp's own quantizer from an
intermediate file in the target folder that is removed afterwards. The output
appears under its final name only when complete.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from midillm_lite import __version__, gguf_keys
from midillm_lite.errors import Opt, UserError, check_range
from midillm_lite.fsutil import atomic_path, check_writable_target, remove_stale_parts
from midillm_lite.layouts import LAYOUT_MIDI_HEAD, LAYOUT_STANDARD, LAYOUTS, companion_path
from midillm_lite.limits import MAX_THREADS
from midillm_lite.modelinfo import read_model_info

from .quants import DEFAULT_QUANT, K_OUTPUT_TYPE, K_TYPES, QUANTS, F, Q, QuantSpec, quant_spec
from .source import Checkpoint, open_checkpoint
from .tensors import ARCH, EMBEDDING_NAME, OUTPUT_NAME, TensorJob, plan_tensors
from .tokenizer import GGUF_PRE_TOKENIZER, GGUF_TOKENIZER_MODEL, Vocabulary, build_vocabulary

log = logging.getLogger(__name__)

BLOCK_BYTES = 64 * 1024 * 1024  # float32 working set per block of rows: bounds peak memory

# Progress: (phase, done, total) in the phase's unit: "convert" counts bytes of source read, "quantize" the
# tensors llama.cpp's K-quantizer has done.
ProgressCallback = Callable[[str, int, int], None]
PHASE_UNITS = {"convert": "bytes", "quantize": "tensors"}


@dataclass(frozen=True)
class ConvertResult:
    path: Path
    quant: str
    file_size: int
    seconds: float
    n_tensors: int
    source_repo: str
    source_revision: str
    midi_tokens_named: int  # MIDI ids that tokenizer.json lacked and got AMT names
    layout: str = LAYOUT_STANDARD
    companion: Path | None = None  # midi-head: the text companion written beside `path`


def convert(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    quant: str = DEFAULT_QUANT,
    force: bool = False,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    layout: str = LAYOUT_STANDARD,
) -> ConvertResult:
    """Convert a MIDI-LLM checkpoint (local folder or hub repo id) to a GGUF file at `out`.

    layout="midi-head" writes the MIDI-only model and its text companion (convert/layout.py);
    its SOURCE may also be a standard-layout GGUF, which is split as it is.
    """
    if threads is not None:
        check_range("threads", threads, 1, MAX_THREADS, integer=True)
    if layout != LAYOUT_STANDARD:
        return _convert_midi_head(source, Path(out), quant=quant, force=force, threads=threads,
                                  progress=progress, layout=layout)  # fmt: skip
    if str(source).endswith(".gguf"):
        raise UserError(
            f"{source} is already a GGUF; ", Opt("layout", LAYOUT_MIDI_HEAD), " is the only conversion of one"
        )
    spec, quant = quant_spec(quant), quant.lower()
    out = Path(out)
    check_writable_target(out, force=force)
    _clean_leftovers(out)
    started = time.monotonic()
    checkpoint = open_checkpoint(source)
    hp = checkpoint.hparams
    words = build_vocabulary(
        checkpoint.tokenizer,
        checkpoint.tokenizer_config,
        vocab_size=hp.vocab_size,
        bos_id=hp.bos_token_id,
        eos_ids=hp.eos_token_ids,
    )
    jobs = plan_tensors(checkpoint.tensors, hp)
    report = progress or _no_progress
    with atomic_path(out, force=True) as tmp:
        if spec.matrix_type is not None:
            types = {job.name: _tensor_type(job, spec.matrix_type) for job in jobs}
            write_gguf(tmp, checkpoint, words, jobs, types, spec.file_type, report)
        else:
            _write_k_quant(tmp, checkpoint, words, jobs, spec, report, threads)
    result = ConvertResult(
        out,
        quant,
        out.stat().st_size,
        time.monotonic() - started,
        len(jobs),
        checkpoint.repo,
        checkpoint.revision,
        words.midi_named,
    )
    log.info("wrote %s (%s, %d bytes) in %.1f s", out, quant, result.file_size, result.seconds)
    return result


def _clean_leftovers(out: Path) -> None:
    """A killed convert leaves hidden temporary files (GBs for a real model) beside its target: the next
    convert to that target removes them, and says so."""
    removed = remove_stale_parts(out)
    if removed:
        log.warning("removed %d temporary file(s) left beside %s by an interrupted convert", len(removed), out)


def _convert_midi_head(
    source: str | os.PathLike[str], out: Path, *, quant: str, force: bool, threads: int | None,
    progress: ProgressCallback | None, layout: str,
) -> ConvertResult:  # fmt: skip
    from .layout import split_midi_head

    if layout != LAYOUT_MIDI_HEAD:
        raise UserError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    check_writable_target(out, force=force)
    check_writable_target(companion_path(out), force=force)
    for target in (out, companion_path(out)):
        _clean_leftovers(target)
    started = time.monotonic()
    if str(source).endswith(".gguf") and Path(source).is_file():
        standard = Path(source)
        info = read_model_info(standard)
        companion = split_midi_head(standard, out, force=force)
        repo, revision, named = info.source_repo, info.source_revision, 0
    else:
        # Convert to a hidden standard file beside the target, then split it; it is removed either way.
        standard = out.with_name(f".{out.name}.standard.gguf")
        try:
            first = convert(source, standard, quant=quant, force=True, threads=threads, progress=progress)
            companion = split_midi_head(standard, out, force=force)
        finally:
            standard.unlink(missing_ok=True)
        repo, revision, named = first.source_repo, first.source_revision, first.midi_tokens_named
    info = read_model_info(out)
    return ConvertResult(out, info.quant, info.file_size, time.monotonic() - started, info.n_tensors, repo, revision,
                         named, layout=LAYOUT_MIDI_HEAD, companion=companion)  # fmt: skip


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


def write_gguf(
    path: Path,
    checkpoint: Checkpoint,
    words: Vocabulary,
    jobs: list[TensorJob],
    types: dict[str, Q],
    file_type: F,
    progress: ProgressCallback,
) -> None:
    """Write the whole GGUF, each tensor as `types[name]`, streaming tensor data block by block."""
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[ARCH])
    _add_model_metadata(writer, checkpoint, file_type)
    _add_tokenizer(writer, words)
    _add_midillm_metadata(writer, checkpoint)
    for job in jobs:
        qtype = types[job.name]
        nbytes = int(np.prod(gguf.quant_shape_to_byte_shape(job.shape, qtype)))
        writer.add_tensor_info(job.name, job.shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
    total = sum(job.source_bytes for job in jobs)
    done = 0
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        fout = writer.fout[0]
        for job in jobs:
            # GGUFWriter.write_tensor_data wants whole tensors; we stream, so we align and append ourselves.
            writer.write_padding(fout, fout.tell())
            for source_bytes, chunk in _encoded_blocks(job, types[job.name]):
                np.ascontiguousarray(chunk).tofile(fout)
                done += source_bytes
                progress("convert", done, total)
            _finish_tensor(writer, job.name)
        writer.flush()
    finally:
        writer.close()


def _tensor_type(job: TensorJob, matrix_type: Q) -> Q:
    """Vectors stay F32 (llama.cpp's rule); a matrix whose rows do not fit the block size falls back to F16."""
    if not job.is_matrix:
        return Q.F32
    block = gguf.GGML_QUANT_SIZES[matrix_type][0]
    if job.shape[-1] % block:
        log.warning(
            "%s: rows of %d values are not a multiple of %s's block of %d; writing it as F16",
            job.name,
            job.shape[-1],
            matrix_type.name,
            block,
        )
        return Q.F16
    return matrix_type


def _encoded_blocks(job: TensorJob, qtype: Q) -> Iterator[tuple[int, np.ndarray]]:
    """(source bytes consumed, encoded bytes) per block of rows; a hook that mixes rows gets the whole tensor."""
    if job.values is not None:
        yield 0, encode(job.values.astype(np.float32), qtype)
        return
    assert job.slot is not None
    if job.transform is not None:
        yield job.slot.nbytes, encode(job.transform(job.slot.read_all()), qtype)
        return
    row_bytes = job.slot.nbytes // max(1, job.slot.n_rows)
    for _start, rows in job.slot.iter_row_blocks(BLOCK_BYTES):
        yield len(rows) * row_bytes if job.is_matrix else job.slot.nbytes, encode(rows, qtype)


def encode(rows: np.ndarray, qtype: Q) -> np.ndarray:
    """float32 rows as `qtype` bytes: gguf's numpy quantizers, or ggml's own kernels for the K types."""
    if qtype in K_TYPES:
        from midillm_lite.llamacpp import ggml_quantize

        return ggml_quantize(rows, qtype)
    return gguf.quants.quantize(rows, qtype)


def _finish_tensor(writer: gguf.GGUFWriter, name: str) -> None:
    info = writer.tensors[0].pop(name)
    writer.write_padding(writer.fout[0], info.nbytes)
    writer.state = gguf.gguf_writer.WriterState.WEIGHTS


def _add_model_metadata(writer: gguf.GGUFWriter, checkpoint: Checkpoint, file_type: F) -> None:
    hp = checkpoint.hparams
    writer.add_name(checkpoint.repo.split("/")[-1])
    writer.add_context_length(hp.max_position_embeddings)
    writer.add_embedding_length(hp.hidden_size)
    writer.add_block_count(hp.n_layers)
    writer.add_feed_forward_length(hp.ffn_size)
    writer.add_head_count(hp.n_heads)
    writer.add_head_count_kv(hp.n_kv_heads)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_layer_norm_rms_eps(hp.rms_norm_eps)
    writer.add_rope_dimension_count(hp.head_dim)
    writer.add_key_length(hp.head_dim)
    writer.add_value_length(hp.head_dim)
    writer.add_vocab_size(hp.vocab_size)
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_tokenizer(writer: gguf.GGUFWriter, words: Vocabulary) -> None:
    writer.add_tokenizer_model(GGUF_TOKENIZER_MODEL)
    writer.add_tokenizer_pre(GGUF_PRE_TOKENIZER)
    writer.add_token_list(words.tokens)
    writer.add_token_types(words.types)
    writer.add_token_merges(words.merges)
    if words.bos_id is not None:
        writer.add_bos_token_id(words.bos_id)
    if words.eos_id is not None:
        writer.add_eos_token_id(words.eos_id)
    if words.eot_id is not None:
        writer.add_eot_token_id(words.eot_id)
    writer.add_add_bos_token(words.add_bos)


def _add_midillm_metadata(writer: gguf.GGUFWriter, checkpoint: Checkpoint) -> None:
    provenance = gguf_keys.Provenance(checkpoint.repo, checkpoint.revision, __version__)
    for name, value, vtype in gguf_keys.converter_values(provenance):
        writer.add_key_value(name, value, vtype)


def _write_k_quant(
    path: Path,
    checkpoint: Checkpoint,
    words: Vocabulary,
    jobs: list[TensorJob],
    spec: QuantSpec,
    progress: ProgressCallback,
    threads: int | None,
) -> None:
    """Lossless intermediate (BF16 for BF16 checkpoints, else F32) in the target folder, then llama.cpp quantizes.

    The vocabulary-sized tensors are the exception: llama.cpp would widen a whole one to
    float32 (1.4 GiB for MIDI-LLM), so they are quantized here, a block of rows at a time,
    with ggml's own kernels to the type llama.cpp picks for them, and passed through as is.
    """
    from .kquant import llama_quantize

    stored = {job.slot.dtype for job in jobs if job.slot is not None}
    inter = QUANTS["bf16"] if stored == {"BF16"} else QUANTS["f32"]
    assert inter.matrix_type is not None
    types = {job.name: _tensor_type(job, inter.matrix_type) for job in jobs}
    embedding = _kquant_embedding_types(jobs, spec, checkpoint.hparams.tied_embeddings)
    types |= embedding
    intermediate = path.with_name(path.name + ".intermediate.gguf")
    try:
        write_gguf(intermediate, checkpoint, words, jobs, types, inter.file_type, progress)
        progress("quantize", 0, len(jobs))
        llama_quantize(intermediate, path, spec, threads=threads, **_llama_type_overrides(embedding),
                       progress=lambda done, total: progress("quantize", done, total))  # fmt: skip
        progress("quantize", len(jobs), len(jobs))
    finally:
        intermediate.unlink(missing_ok=True)


def _kquant_embedding_types(jobs: list[TensorJob], spec: QuantSpec, tied: bool) -> dict[str, Q]:
    """The types llama.cpp would give the embedding and head, for those whose rows fit K blocks (256 values)."""
    assert spec.k_base_type is not None
    block = gguf.GGML_QUANT_SIZES[K_OUTPUT_TYPE][0]
    wanted = {EMBEDDING_NAME: K_OUTPUT_TYPE if tied else spec.k_base_type, OUTPUT_NAME: K_OUTPUT_TYPE}
    return {job.name: wanted[job.name] for job in jobs if job.name in wanted and job.shape[-1] % block == 0}


def _llama_type_overrides(embedding: dict[str, Q]) -> dict[str, int]:
    # A tied token_embd is the output head to llama.cpp, so the output override must name its type too.
    overrides = {}
    if EMBEDDING_NAME in embedding:
        overrides["token_embedding_type"] = overrides["output_tensor_type"] = int(embedding[EMBEDDING_NAME])
    if OUTPUT_NAME in embedding:
        overrides["output_tensor_type"] = int(embedding[OUTPUT_NAME])
    return overrides
