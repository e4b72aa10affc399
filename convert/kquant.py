"""K-quants through llama.cpp's own quantizer (llama-cpp-python's `llama_model_quantize`)."""

from __future__ import annotations

import ctypes
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from midillm_lite.errors import UserError
from midillm_lite.llamacpp import VERBOSE, init_backend, log_lines, signals_deferred

if TYPE_CHECKING:
    from .quants import QuantSpec

log = logging.getLogger(__name__)

# llama.cpp logs "[  12/ 147] blk.0.attn_k.weight - [...], type = ..." as it starts each tensor.
_TENSOR_LINE = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\]")
TensorProgress = Callable[[int, int], None]  # (tensors done, tensors in all)


def tensor_progress_listener(progress: TensorProgress) -> Callable[[str], None]:
    """A log listener that turns llama.cpp's per-tensor lines into (done, total); other lines are ignored."""

    def listen(line: str) -> None:
        found = _TENSOR_LINE.match(line)
        if found:
            started, total = int(found[1]), int(found[2])
            if 1 <= started <= total:
                progress(started - 1, total)  # the tensor named is starting: the ones before it are done

    return listen


def llama_quantize(
    source: Path,
    target: Path,
    spec: QuantSpec,
    *,
    threads: int | None = None,
    token_embedding_type: int | None = None,
    output_tensor_type: int | None = None,
    progress: TensorProgress | None = None,
) -> None:
    """Quantize GGUF `source` into `target` with llama.cpp; metadata and tokenizer are copied as they are.

    A type override equal to the tensor's type in `source` makes llama.cpp copy it unchanged.
    `progress(done, total)` follows the tensors from llama.cpp's log, as it quantizes them.
    """
    from midillm_lite.llamacpp import llama_cpp

    assert spec.llama_ftype_name is not None
    init_backend()  # llama.cpp's log lines (one per tensor) go to debug logging
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, spec.llama_ftype_name)
    params.nthread = threads or 0  # 0: llama.cpp picks the hardware's thread count
    if token_embedding_type is not None:
        params.token_embedding_type = token_embedding_type
    if output_tensor_type is not None:
        params.output_tensor_type = output_tensor_type
    listener = tensor_progress_listener(progress) if progress is not None else (lambda line: None)
    # llama.cpp logs a line per tensor: progress comes from them, and a Ctrl-C is acted on when it returns
    with log_lines(listener), signals_deferred():
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if rc != 0:
        raise UserError(
            f"llama.cpp could not quantize {source.name} to {spec.file_type.name} (code {rc}); its log says why (",
            VERBOSE,
            ")",
        )
