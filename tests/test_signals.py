"""Signals at the exact moments issue 14 found them lost: inside llama.cpp's log callback, and during the writes.

The child runs the CLI with a logging handler that stops at a chosen log line (a "gate") and waits for the
parent on stdin: the parent sends the signal while the child is inside that call, then lets it go on. No
timing guesses: the signal lands in the window every time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXIT_INTERRUPTED = 130
WAIT_S = 120
SWALLOWED = "Exception ignored"
GATE = "GATE-REACHED"
GEN_FAST = ["-n", "2", "--max-tokens", "30", "--threads", "2", "--quiet", "--seed", "1"]

# argv: marker, then the CLI's arguments. Logs of llama.cpp (debug) and of midillm_lite pass through the gate.
CHILD = textwrap.dedent(
    """
    import logging, signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)
    marker = sys.argv[1]

    class Gate(logging.Handler):
        done = False

        def emit(self, record):
            if not self.done and marker in record.getMessage():
                self.done = True
                sys.stderr.write("GATE-REACHED\\n")
                sys.stderr.flush()
                sys.stdin.readline()  # the parent signals us here, then writes a line

    logging.getLogger().addHandler(Gate())
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("midillm_lite").setLevel(logging.DEBUG)
    from midillm_lite.__main__ import run
    sys.argv = ["midillm-lite", *sys.argv[2:]]
    run()
    """
)


def run_gated(marker: str, args: list[str], signals: list[signal.Signals]) -> subprocess.CompletedProcess:
    """Run the CLI until a log line holds `marker`, send `signals` there, let it go on; the finished process."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, marker, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines: list[str] = []
    gate = threading.Event()

    def read_stderr() -> None:  # a thread, so that no line is lost to a buffer between readers
        for line in proc.stderr:
            if line.strip() == GATE:
                gate.set()
            else:
                lines.append(line)
        gate.set()  # the child ended without reaching the gate

    reader = threading.Thread(target=read_stderr)
    reader.start()
    gate.wait(WAIT_S)
    if proc.poll() is not None:
        reader.join(WAIT_S)
        pytest.fail(f"the child never logged {marker!r}: exit {proc.returncode}, {''.join(lines)[-2000:]}")
    for sig in signals:
        proc.send_signal(sig)
    proc.stdin.write("go\n")
    proc.stdin.close()
    out = proc.stdout.read()
    proc.wait(WAIT_S)
    reader.join(WAIT_S)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(lines))


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(
    "marker",
    ["llama_model_loader: loaded meta data", "llama_context: constructing llama_context"],
    ids=["model-load", "context"],
)
def test_signal_inside_llama_log_callback_is_not_lost(tiny_gguf, tmp_path, marker: str, sig) -> None:
    # Issue 14: "Exception ignored on calling ctypes callback function ... KeyboardInterrupt", then the run went on.
    out = tmp_path / "run"
    done = run_gated(marker, ["gen", "piano", "-m", str(tiny_gguf()), "-o", str(out), *GEN_FAST], [sig])
    assert SWALLOWED not in done.stderr, done.stderr[-3000:]
    assert done.returncode == EXIT_INTERRUPTED, done.stderr[-3000:]
    assert "interrupted" in done.stderr.strip().splitlines()[-1]
    assert not [name for name in files(out) if name.endswith(".part")]
