"""Signals at the exact moments issue 14 found them lost: inside llama.cpp's log callback, and during the writes.

The child runs the CLI with a logging handler that stops at a chosen log line (a "gate") and waits for the
parent on stdin: the parent sends the signal while the child is inside that call, then lets it go on. No
timing guesses: the signal lands in the window every time.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import mido
import pytest

from midillm_lite.outputs import STATS_NAME

pytestmark = pytest.mark.slow

EXIT_INTERRUPTED = 130
WAIT_S = 120
SWALLOWED = "Exception ignored"
GATE = "GATE-REACHED"
GEN_FAST = ["-n", "2", "--max-tokens", "30", "--threads", "2", "--quiet", "--seed", "1"]

WRITE_GATE = "<first output write>"  # a gate before gen writes its first output file, not a log line

# argv: the gates' markers joined by "|", then the CLI's arguments. Each gate stops the child once, in order:
# at a log line (llama.cpp's debug lines and midillm_lite's pass through) holding its marker, or for
# WRITE_GATE before gen's first write_output.
CHILD = textwrap.dedent(
    """
    import logging, signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)
    gates = sys.argv[1].split("|")

    def stop():
        gates.pop(0)
        sys.stderr.write("GATE-REACHED\\n")
        sys.stderr.flush()
        sys.stdin.readline()  # the parent signals us here, then writes a line

    class Gate(logging.Handler):
        def emit(self, record):
            if gates and gates[0] in record.getMessage():
                stop()

    logging.getLogger().addHandler(Gate())
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("midillm_lite").setLevel(logging.DEBUG)
    from midillm_lite import outputs
    real_write = outputs.write_output

    def write_output(*args, **kwargs):
        if gates and gates[0] == "WRITE_GATE":
            stop()
        return real_write(*args, **kwargs)

    outputs.write_output = write_output
    from midillm_lite.__main__ import run
    sys.argv = ["midillm-lite", *sys.argv[2:]]
    run()
    """
).replace("WRITE_GATE", WRITE_GATE)


def run_gated(steps: list[tuple[str, list[signal.Signals]]], args: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI through its gates: at each, send that step's signals, then let it go on. The finished process."""
    markers = "|".join(marker for marker, _ in steps)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, markers, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines: list[str] = []
    reached = queue.Queue()

    def read_stderr() -> None:  # a thread, so that no line is lost to a buffer between readers
        for line in proc.stderr:
            if line.strip() == GATE:
                reached.put(True)
            else:
                lines.append(line)
        reached.put(False)  # the child ended

    reader = threading.Thread(target=read_stderr)
    reader.start()
    for marker, signals in steps:
        if not reached.get(timeout=WAIT_S):
            proc.wait(WAIT_S)
            reader.join(WAIT_S)
            pytest.fail(f"the child never reached {marker!r}: exit {proc.returncode}, {''.join(lines)[-2000:]}")
        for sig in signals:
            proc.send_signal(sig)
        proc.stdin.write("go\n")
        proc.stdin.flush()
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
    done = run_gated([(marker, [sig])], ["gen", "piano", "-m", str(tiny_gguf()), "-o", str(out), *GEN_FAST])
    assert SWALLOWED not in done.stderr, done.stderr[-3000:]
    assert done.returncode == EXIT_INTERRUPTED, done.stderr[-3000:]
    assert "interrupted" in done.stderr.strip().splitlines()[-1]
    assert not [name for name in files(out) if name.endswith(".part")]


def complete_outputs(out: Path) -> dict:
    """The folder holds the prompt, every output's MIDI and tokens, and the stats; nothing temporary."""
    stats = json.loads((out / STATS_NAME).read_text())
    names = files(out)
    assert not [n for n in names if n.endswith((".part", ".lock"))], names
    for entry in stats["outputs"]:
        midi = Path(entry["file"])
        mido.MidiFile(midi)
        assert midi.with_name(midi.stem + "_tokens.txt").is_file()
    assert len(stats["outputs"]) == 2 and "prompt.txt" in names
    return stats


def test_second_signal_while_writing_keeps_the_files(tiny_gguf, tmp_path) -> None:
    # Issue 14: SIGTERM, then another 30 ms later, exited 130 with no files (the second cut the partial write).
    out = tmp_path / "run"
    steps = [("sampling 2 sequences", [signal.SIGTERM]), (WRITE_GATE, [signal.SIGTERM])]
    done = run_gated(steps, ["gen", "piano", "-m", str(tiny_gguf()), "-o", str(out), *GEN_FAST])
    assert done.returncode == EXIT_INTERRUPTED, done.stderr[-3000:]
    assert "further signal arrived while writing" in done.stderr and SWALLOWED not in done.stderr
    stats = complete_outputs(out)
    assert stats["interrupted"] and all(o["partial"] for o in stats["outputs"])


def test_signal_after_sampling_ended_says_the_files_are_complete(tiny_gguf, tmp_path) -> None:
    # Issue 14: a SIGINT right after sampling exited 130 with no message; the files were complete.
    out = tmp_path / "run"
    done = run_gated([(WRITE_GATE, [signal.SIGINT])], ["gen", "piano", "-m", str(tiny_gguf()), "-o", str(out),
                                                        *GEN_FAST])  # fmt: skip
    assert done.returncode == EXIT_INTERRUPTED, done.stderr[-3000:]
    assert f"interrupted after sampling ended: the outputs in {out} are complete" in done.stderr
    assert not complete_outputs(out)["interrupted"]
