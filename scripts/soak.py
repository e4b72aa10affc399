"""Soak the Python API: one Generator, many generations in a row; resident memory, open files and throughput per run.

    .venv/bin/python scripts/soak.py --model models/x.gguf --runs 200 --max-tokens 60
    .venv/bin/python scripts/soak.py --tiny --runs 200          # builds the test suite's tiny random-weight model

Prints one JSON object: per-run rows and a summary (RSS first/last/peak in MiB, fd counts, tokens/s of the first
and last ten runs). tests/test_soak.py runs a short version and checks that nothing grows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "A calm piano piece with soft strings"
WINDOW = 10  # runs averaged for the first/last throughput figures


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS: resident now, VmHWM: peak resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def tiny_model(folder: Path) -> Path:
    """The suite's tiny MIDI-LLM (hidden 64, 2 layers, full vocabulary) converted to F32."""
    sys.path.insert(0, str(ROOT))  # devkit/
    from midillm_lite.convert import convert

    from devkit.checkpoints import make_checkpoint

    out = folder / "tiny-f32.gguf"
    convert(make_checkpoint(folder / "checkpoint"), out, quant="f32", threads=2)
    return out


def soak(model: Path, *, runs: int, max_tokens: int, n: int, threads: int) -> dict:
    from midillm_lite import Generator

    start = {"rss_kib": status_kib("VmRSS"), "fds": open_fds()}
    rows = []
    with Generator(model, threads=threads) as gen:
        loaded = {"rss_kib": status_kib("VmRSS"), "fds": open_fds()}
        for run in range(runs):
            began = time.perf_counter()
            result = gen.generate(PROMPT, n=n, max_tokens=max_tokens, seed=run)
            t = result.timings
            rows.append(
                {
                    "run": run + 1,
                    "wall_s": round(time.perf_counter() - began, 4),
                    "tokens": t.generated,
                    "tokens_per_s": round(t.generated / (t.steps_s or 1e-9), 1),
                    "rss_kib": status_kib("VmRSS"),
                    "fds": open_fds(),
                }
            )
    closed = {"rss_kib": status_kib("VmRSS"), "fds": open_fds()}
    tps = [r["tokens_per_s"] for r in rows]
    mib = 1024
    return {
        "model": str(model),
        "runs": runs,
        "max_tokens": max_tokens,
        "n": n,
        "threads": threads,
        "summary": {
            "rss_mib_before_load": round(start["rss_kib"] / mib, 1),
            "rss_mib_after_load": round(loaded["rss_kib"] / mib, 1),
            "rss_mib_first_run": round(rows[0]["rss_kib"] / mib, 1),
            "rss_mib_last_run": round(rows[-1]["rss_kib"] / mib, 1),
            "rss_mib_peak": round(status_kib("VmHWM") / mib, 1),
            "rss_mib_after_close": round(closed["rss_kib"] / mib, 1),
            "fds_before_load": start["fds"],
            "fds_first_run": rows[0]["fds"],
            "fds_last_run": rows[-1]["fds"],
            "fds_max": max(r["fds"] for r in rows),
            "fds_after_close": closed["fds"],
            "tokens_per_s_first": round(statistics.mean(tps[:WINDOW]), 1),
            "tokens_per_s_last": round(statistics.mean(tps[-WINDOW:]), 1),
            "tokens_per_s_min": min(tps),
            "tokens_per_s_max": max(tps),
            "wall_s_total": round(sum(r["wall_s"] for r in rows), 2),
        },
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path, help="a MIDI-LLM GGUF")
    which.add_argument("--tiny", action="store_true", help="build the tiny random-weight test model in a temp dir")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("-n", type=int, default=1, help="outputs per generation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--summary-only", action="store_true", help="leave the per-run rows out")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp)) if args.tiny else args.model
        report = soak(model, runs=args.runs, max_tokens=args.max_tokens, n=args.n, threads=args.threads)
    if args.summary_only:
        del report["rows"]
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
