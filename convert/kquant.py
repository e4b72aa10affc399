"""K-quants through llama.cpp's own quantizer (llama-cpp-python's `llama_model_quantize`)."""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import gguf
import numpy as np

from midillm_lite.errors import UserError

if TYPE_CHECKING:
    from .pipeline import QuantSpec

log = logging.getLogger(__name__)

_log_callback = None  # kept alive for as long as llama.cpp may call it


def _forward_log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    # llama.cpp prints one line per tensor while quantizing; that belongs in debug logs, not on the terminal.
    message = text.decode("utf-8", "replace").rstrip()
    if message:
        log.debug("llama.cpp: %s", message)


def quiet_llama_logs() -> None:
    """Route llama.cpp's log lines to Python logging (debug); idempotent."""
    global _log_callback
    import llama_cpp

    if _log_callback is None:
        _log_callback = llama_cpp.llama_log_callback(_forward_log)
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def ggml_quantize(rows: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """Quantize float32 rows with ggml's own kernel (the one llama_model_quantize uses); returns the bytes."""
    from llama_cpp._ggml import libggml

    rows = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, rows.shape[-1])
    n_rows, n_per_row = rows.shape
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if n_per_row % block:
        raise ValueError(f"rows of {n_per_row} values do not fit {qtype.name} blocks of {block}")
    out = np.empty((n_rows, n_per_row // block * type_size), dtype=np.uint8)
    quantize = libggml.ggml_quantize_chunk
    quantize.restype = ctypes.c_size_t
    quantize.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                         ctypes.c_int64, ctypes.c_void_p]  # fmt: skip
    written = quantize(int(qtype), rows.ctypes.data, out.ctypes.data, 0, n_rows, n_per_row, None)
    assert written == out.nbytes, (written, out.nbytes)
    return out


def llama_quantize(
    source: Path,
    target: Path,
    spec: QuantSpec,
    *,
    threads: int | None = None,
    token_embedding_type: int | None = None,
    output_tensor_type: int | None = None,
) -> None:
    """Quantize GGUF `source` into `target` with llama.cpp; metadata and tokenizer are copied as they are.

    A type override equal to the tensor's type in `source` makes llama.cpp copy it unchanged.
    """
    import llama_cpp

    assert spec.llama_ftype_name is not None
    quiet_llama_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, spec.llama_ftype_name)
    params.nthread = threads or 0  # 0: llama.cpp picks the hardware's thread count
    if token_embedding_type is not None:
        params.token_embedding_type = token_embedding_type
    if output_tensor_type is not None:
        params.output_tensor_type = output_tensor_type
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if rc != 0:
        raise UserError(
            f"llama.cpp could not quantize {source.name} to {spec.file_type.name} (code {rc}); "
            f"run with --verbose for its log"
        )
