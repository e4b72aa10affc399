"""The one boundary to llama.cpp and ggml: backend start-up, the log callback, signals, ctypes bindings, hardware.

llama.cpp has one process-wide log callback, so exactly one module may set it:
this one, for the engine and the converter alike; `log_lines` lets a caller
watch the lines during one call (the quantizer's per-tensor lines are its only
progress report). The ggml functions that
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
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import gguf
import numpy as np

from .errors import Opt, UserError, check_range
from .limits import ALL_LAYERS, MAX_GPU_LAYERS

llama_log = logging.getLogger("midillm_lite.llama")

DEVICES = ("auto", "cpu", "gpu")
# Where llama.cpp's own log (the reason behind a failed load or quantization) can be seen.
VERBOSE = Opt("verbose", True, python="DEBUG logging for 'midillm_lite.llama'")
# ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT. Only errors reach a user; the rest is debug chatter.
_GGML_ERROR = 4
# llama.cpp's CPU backend runs its threads under OpenMP (libgomp), which reads OMP_WAIT_POLICY once, when it loads.
# Its default spins a waiting thread at each of the hundreds of barriers in a decode; on a busy machine the spinning
# thread burns the time slice the thread it waits for needs, and generation collapses (17-50x slower; BENCHMARKS.md,
# "Threads"). PASSIVE makes a waiting thread sleep instead; a user's own setting wins.
OMP_WAIT_POLICY = "OMP_WAIT_POLICY"
WAIT_POLICY_DEFAULT = "PASSIVE"


def _import_llama_cpp():
    """llama_cpp, loaded with the wait policy above; the variable is set for the load only, not for children."""
    if "llama_cpp" in sys.modules:
        return sys.modules["llama_cpp"]
    previous = os.environ.get(OMP_WAIT_POLICY)
    os.environ.setdefault(OMP_WAIT_POLICY, WAIT_POLICY_DEFAULT)
    try:
        import llama_cpp
    finally:
        if previous is None:
            os.environ.pop(OMP_WAIT_POLICY, None)
    return llama_cpp


def __getattr__(name: str):
    # `from .llamacpp import llama_cpp`: every module gets llama.cpp through the loader above.
    if name == "llama_cpp":
        return _import_llama_cpp()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- start-up and logging ------------------------------------------------------------------
LogListener = Callable[[str], None]
_listeners: list[LogListener] = []  # see log_lines


def _route_llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # Called from C for every log line; keep it cheap and never let an exception escape into C.
    try:
        wanted = logging.WARNING if level == _GGML_ERROR else logging.DEBUG
        logged = llama_log.isEnabledFor(wanted)
        if not (logged or _listeners):
            return
        message = text.decode("utf-8", "replace").rstrip()
        if not message:
            return
        if logged:
            llama_log.log(wanted, "%s", message)
        for listener in tuple(_listeners):
            with contextlib.suppress(Exception):  # one listener's bug must not cost the others their lines
                listener(message)
    except Exception:  # a C callback must not raise
        pass


@contextlib.contextmanager
def log_lines(listener: LogListener) -> Iterator[None]:
    """Call `listener(line)` with every llama.cpp log line while the block runs (possibly from llama.cpp's threads).

    The listener must be quick; what it raises is swallowed, since it runs inside a C callback.
    """
    init_backend()
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


_log_callback = None  # the ctypes wrapper of _route_llama_log, kept alive while llama.cpp may call it


def init_backend() -> None:
    """Start llama.cpp's backends once and route its log lines to Python logging (errors as warnings)."""
    global _log_callback
    if _log_callback is None:
        llama_cpp = _import_llama_cpp()

        _log_callback = llama_cpp.llama_log_callback(_route_llama_log)
        with signals_deferred():
            llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()


# --- signals during C calls ----------------------------------------------------------------
# Python runs a signal's handler at the next bytecode of the main thread; during a C call that is inside
# _route_llama_log, where a KeyboardInterrupt is printed ("Exception ignored on calling ctypes callback")
# and dropped, so the Ctrl-C was lost. Blocking the signals (pthread_sigmask) is not enough: it covers the
# main thread only, and the kernel hands a process-wide signal to any of llama.cpp's worker threads.
# So during a C call the handlers only record the signal; it is delivered when the call returns.
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_deferring = False
_caught: list[int] = []  # signals that arrived during the current C call


def _record(signum: int, frame) -> None:
    _caught.append(signum)


def interrupt_pending() -> bool:
    """A signal arrived during the current C call (a progress callback returns False on it to stop a load)."""
    return bool(_caught)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Around every llama.cpp call that may log: SIGINT/SIGTERM are recorded, then delivered when it returns.

    Delivered means: the handler that was in place runs (Python's raises KeyboardInterrupt; the CLI's
    SIGTERM handler too), or a default action is taken, right after the block, in ordinary Python code.
    """
    global _deferring
    if _deferring or threading.current_thread() is not threading.main_thread():
        yield  # nested, or a thread where Python never runs signal handlers
        return
    previous = {sig: signal.signal(sig, _record) for sig in DEFERRED_SIGNALS}
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        caught, _caught[:] = _caught[:], []
        if caught:
            _deliver(caught[0], previous[caught[0]])


def _deliver(signum: int, handler) -> None:
    llama_log.debug("signal %d arrived during a llama.cpp call; acting on it now", signum)
    if callable(handler):
        handler(signum, None)  # e.g. signal.default_int_handler: raises KeyboardInterrupt here
    elif handler in (signal.SIG_DFL, None):
        signal.raise_signal(signum)  # the default action (SIGTERM, or SIGINT set to default: the process ends)


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
    _import_llama_cpp()
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
SYSFS_CPU = Path("/sys/devices/system/cpu")
INTEL_HYBRID_P_CORES = Path("/sys/devices/cpu_core/cpus")  # Intel hybrid CPUs list their performance cores here
MACOS_PERF_CORES = ("hw.perflevel0.physicalcpu", "hw.physicalcpu")  # perflevel0 = performance cores (Apple Silicon)
WIN_RELATION_PROCESSOR_CORE = 0  # LOGICAL_PROCESSOR_RELATIONSHIP RelationProcessorCore
WIN_RECORD_HEADER = 8  # SYSTEM_LOGICAL_PROCESSOR_INFORMATION_EX: DWORD Relationship, DWORD Size
WIN_EFFICIENCY_CLASS = WIN_RECORD_HEADER + 1  # PROCESSOR_RELATIONSHIP: BYTE Flags, BYTE EfficiencyClass, ...
# Above this many performance cores the default leaves one free for the rest of the machine (the audio thread of a
# DAW, a browser): with fewer, one core is too large a share to give up (BENCHMARKS.md, "Threads").
LEAVE_ONE_FREE_ABOVE = 4


def physical_cores() -> int:
    """Physical performance cores this process may run on: llama.cpp gains nothing from SMT siblings.

    Efficiency cores (Intel hybrid, ARM big.LITTLE, Apple Silicon) are left out: one slow
    thread holds every other thread at each of llama.cpp's barriers.
    """
    if sys.platform == "darwin":
        return _macos_cores(_sysctl) or os.cpu_count() or 1
    if sys.platform == "win32":
        return _windows_cores() or os.cpu_count() or 1
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # another Unix
        return os.cpu_count() or 1
    return linux_cores(cpus, SYSFS_CPU, INTEL_HYBRID_P_CORES) or len(cpus) or 1


def default_threads(cores: int | None = None) -> int:
    """llama.cpp threads when none are asked for: one per performance core, less one above LEAVE_ONE_FREE_ABOVE."""
    cores = physical_cores() if cores is None else cores
    return max(1, cores - 1 if cores > LEAVE_ONE_FREE_ABOVE else cores)


def linux_cores(cpus: set[int], sysfs: Path, hybrid_list: Path) -> int:
    """Distinct (package, core) pairs among `cpus`, keeping only the performance cores; 0 if sysfs cannot say."""
    performance = _performance_cpus(cpus, sysfs, hybrid_list)
    cores = set()
    for cpu in performance:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            return len(performance)
    return len(cores)


def _performance_cpus(cpus: set[int], sysfs: Path, hybrid_list: Path) -> set[int]:
    """The CPUs of `cpus` that are performance cores: Intel's P-core list, else those of the largest cpu_capacity."""
    try:
        p_cores = parse_cpu_list(hybrid_list.read_text()) & cpus
        if p_cores:
            return p_cores
    except (OSError, ValueError):
        pass
    capacity = {}
    for cpu in cpus:
        try:
            capacity[cpu] = int((sysfs / f"cpu{cpu}" / "cpu_capacity").read_text())
        except (OSError, ValueError):
            return cpus  # no capacities (most x86 machines): every CPU counts
    top = max(capacity.values(), default=0)
    return {cpu for cpu, value in capacity.items() if value == top}


def parse_cpu_list(text: str) -> set[int]:
    """A kernel CPU list ("0-3,8,10-11") as a set; ValueError when malformed."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if high < low:
            raise ValueError(f"bad CPU range {part!r}")
        cpus.update(range(low, high + 1))
    return cpus


def _sysctl(name: str) -> str | None:
    try:
        run = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return run.stdout.strip() if run.returncode == 0 else None


def _macos_cores(sysctl: Callable[[str], str | None]) -> int:
    """Performance cores on macOS (perflevel0 on Apple Silicon, all physical cores on Intel Macs); 0 if unknown."""
    for name in MACOS_PERF_CORES:
        value = sysctl(name)
        if value and value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def _windows_cores() -> int:
    """Performance cores from GetLogicalProcessorInformationEx; 0 if the call fails."""
    try:
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        size = ctypes.c_uint32(0)
        kernel32.GetLogicalProcessorInformationEx(WIN_RELATION_PROCESSOR_CORE, None, ctypes.byref(size))
        buffer = ctypes.create_string_buffer(size.value)
        if not kernel32.GetLogicalProcessorInformationEx(WIN_RELATION_PROCESSOR_CORE, buffer, ctypes.byref(size)):
            return 0
        return windows_cores(buffer.raw[: size.value])
    except (AttributeError, OSError):
        return 0


def windows_cores(records: bytes) -> int:
    """Cores of the highest EfficiencyClass in RelationProcessorCore records (on hybrid CPUs, the P-cores)."""
    classes = []
    offset = 0
    while offset + WIN_EFFICIENCY_CLASS < len(records):
        relationship, size = struct.unpack_from("<II", records, offset)
        if size < WIN_RECORD_HEADER:
            break  # a malformed record: stop rather than loop
        if relationship == WIN_RELATION_PROCESSOR_CORE:
            classes.append(records[offset + WIN_EFFICIENCY_CLASS])
        offset += size
    return classes.count(max(classes)) if classes else 0


def gpu_layers(device: str, n_gpu_layers: int | None) -> int:
    """Layers to offload for a device choice; an explicit count wins."""
    llama_cpp = _import_llama_cpp()

    if device not in DEVICES:
        raise UserError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    with signals_deferred():  # the first call loads ggml's backends, which log
        has_gpu = bool(llama_cpp.llama_supports_gpu_offload())
    if device == "gpu" and not has_gpu:
        raise UserError(
            "this llama.cpp build has no GPU support; use ", Opt("device", "cpu"),
            " or rebuild llama-cpp-python for your GPU",
        )  # fmt: skip
    if n_gpu_layers is not None:
        check_range("gpu_layers", n_gpu_layers, ALL_LAYERS, MAX_GPU_LAYERS, integer=True)
        return n_gpu_layers
    if device == "cpu":
        return 0
    return ALL_LAYERS if has_gpu else 0


def backend_description() -> str:
    """What this llama.cpp build can run on: GPU offload or CPU only, and the CPU features it was compiled for."""
    llama_cpp = _import_llama_cpp()

    init_backend()
    with signals_deferred():
        features = llama_cpp.llama_print_system_info().decode(errors="replace")
        where = "GPU offload available" if llama_cpp.llama_supports_gpu_offload() else "CPU only"
    cpu = " ".join(part.split("=")[0].strip() for part in features.split("|") if part.strip().endswith("= 1"))
    return f"llama-cpp-python {llama_cpp.__version__}, {where}; CPU: {cpu.removeprefix('CPU : ')}"
