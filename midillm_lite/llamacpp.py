"""The one boundary to llama.cpp and ggml: backend start-up, the log callback, signals, ctypes bindings, hardware.

llama.cpp has one process-wide log callback, so exactly one module may set it:
this one, for the engine and the converter alike. The ggml functions that
llama-cpp-python does not wrap (type traits, `ggml_quantize_chunk`) are bound
here with ctypes. Hardware probes (cores, GPU offload, compiled CPU features)
live here too, so engine.py keeps only models, contexts and the decoding loop.
llama_cpp itself is imported on first use: the CLI reads DEVICES at start-up,
and loading llama.cpp costs time that encode/decode/--help should not pay.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np

from .errors import Opt, UserError

llama_log = logging.getLogger("midillm_lite.llama")

DEVICES = ("auto", "cpu", "gpu")
ALL_LAYERS = -1  # llama.cpp: offload every layer
# Where llama.cpp's own log (the reason behind a failed load or quantization) can be seen.
VERBOSE = Opt("verbose", True, python="DEBUG logging for 'midillm_lite.llama'")
# ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT. Only errors reach a user; the rest is debug chatter.
_GGML_ERROR = 4


# --- start-up and logging ------------------------------------------------------------------
def _route_llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # Called from C for every log line; keep it cheap and never let an exception escape into C.
    try:
        wanted = logging.WARNING if level == _GGML_ERROR else logging.DEBUG
        if llama_log.isEnabledFor(wanted):
            message = text.decode("utf-8", "replace").rstrip()
            if message:
                llama_log.log(wanted, "%s", message)
    except Exception:  # a C callback must not raise
        pass


_log_callback = None  # the ctypes wrapper of _route_llama_log, kept alive while llama.cpp may call it


def init_backend() -> None:
    """Start llama.cpp's backends once and route its log lines to Python logging (errors as warnings)."""
    global _log_callback
    if _log_callback is None:
        import llama_cpp

        _log_callback = llama_cpp.llama_log_callback(_route_llama_log)
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while llama.cpp works (and logs through the Python callback above).

    A signal whose handler runs inside a ctypes callback is printed and dropped, so a
    Ctrl-C during loading would be lost; held, it is delivered the moment the C call ends.
    """
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# --- ggml bindings -------------------------------------------------------------------------
class _TypeTraits(ctypes.Structure):
    # struct ggml_type_traits, as in the ggml.h that llama-cpp-python 0.3.36 ships
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_ToFloat = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def _libggml():
    from llama_cpp._ggml import libggml

    return libggml


def ggml_to_float(rows: np.ndarray, qtype: gguf.GGMLQuantizationType, n_per_row: int) -> np.ndarray:
    """Dequantize contiguous rows of `qtype` bytes with ggml's own kernel; float32 (n_rows, n_per_row)."""
    if qtype == gguf.GGMLQuantizationType.F32:
        return rows.view(np.float32).reshape(len(rows), n_per_row).copy()
    get_traits = _libggml().ggml_get_type_traits
    get_traits.restype = ctypes.POINTER(_TypeTraits)
    get_traits.argtypes = [ctypes.c_int]
    traits = get_traits(int(qtype)).contents
    if not traits.to_float:  # no kernel for this type: gguf-py's numpy dequantizer
        return np.asarray(gguf.quants.dequantize(rows, qtype), dtype=np.float32).reshape(len(rows), n_per_row)
    out = np.empty((len(rows), n_per_row), dtype=np.float32)
    _ToFloat(traits.to_float)(rows.ctypes.data, out.ctypes.data, out.size)
    return out


def ggml_quantize(rows: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """Quantize float32 rows with ggml's own kernel (the one llama_model_quantize uses); returns the bytes."""
    rows = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, rows.shape[-1])
    n_rows, n_per_row = rows.shape
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if n_per_row % block:
        raise ValueError(f"rows of {n_per_row} values do not fit {qtype.name} blocks of {block}")
    out = np.empty((n_rows, n_per_row // block * type_size), dtype=np.uint8)
    quantize = _libggml().ggml_quantize_chunk
    quantize.restype = ctypes.c_size_t
    quantize.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                         ctypes.c_int64, ctypes.c_void_p]  # fmt: skip
    written = quantize(int(qtype), rows.ctypes.data, out.ctypes.data, 0, n_rows, n_per_row, None)
    assert written == out.nbytes, (written, out.nbytes)
    return out


# --- hardware ------------------------------------------------------------------------------
def physical_cores() -> int:
    """Physical cores this process may run on: llama.cpp gains nothing from SMT siblings."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            return len(cpus)
    return max(1, len(cores))


def gpu_layers(device: str, n_gpu_layers: int | None) -> int:
    """Layers to offload for a device choice; an explicit count wins."""
    import llama_cpp

    if device not in DEVICES:
        raise UserError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    has_gpu = bool(llama_cpp.llama_supports_gpu_offload())
    if device == "gpu" and not has_gpu:
        raise UserError(
            "this llama.cpp build has no GPU support; use ", Opt("device", "cpu"),
            " or rebuild llama-cpp-python for your GPU",
        )  # fmt: skip
    if n_gpu_layers is not None:
        return n_gpu_layers
    if device == "cpu":
        return 0
    return ALL_LAYERS if has_gpu else 0


def backend_description() -> str:
    """What this llama.cpp build can run on: GPU offload or CPU only, and the CPU features it was compiled for."""
    import llama_cpp

    init_backend()
    features = llama_cpp.llama_print_system_info().decode(errors="replace")
    cpu = " ".join(part.split("=")[0].strip() for part in features.split("|") if part.strip().endswith("= 1"))
    where = "GPU offload available" if llama_cpp.llama_supports_gpu_offload() else "CPU only"
    return f"llama-cpp-python {llama_cpp.__version__}, {where}; CPU: {cpu.removeprefix('CPU : ')}"
