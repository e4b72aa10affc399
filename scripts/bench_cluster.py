#!/usr/bin/env python3
"""Benchmark of `gen --cluster ray` on this machine: plain --prompts-file against 1 and 2 Ray workers, same threads.

Each row is a fresh `midillm-lite gen` process on the same prompts, seed and
settings; the cluster rows start their own local Ray cluster. Figures: the wall
time of the whole command (Ray start and model loads included), the start-up
(until every worker has loaded the model), tokens/s over the rest, and for one
worker the driver-side time per prompt that is not the worker generating
(dispatch, shipping the result back, the rest of the loop): the overhead Ray
adds per prompt, since the folder writes overlap the next prompt. Prints a
markdown section; --write puts it in BENCHMARKS.md ("Cluster"). Nothing is
asserted: on a shared machine compare rows of one run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_convert import machine, update_benchmarks

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "midillm-demo-q8_0.gguf"
SECTION = "## Cluster"
PROMPTS = ["A gentle piece for solo piano", "A cheerful march for brass band", "A slow waltz for strings",
           "A jazzy trio with walking bass", "A baroque fugue for organ", "A folk reel for fiddle",
           "A sad ballad for guitar", "A bright pop song"]  # fmt: skip


def run(args: list[str], out: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "midillm_lite", "gen", *args, "-o", str(out), "-q"], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"{args}: exit {proc.returncode}: {proc.stderr.strip()}")
    stats = [json.loads(p.read_text()) for p in out.rglob("generation_stats.json")]
    row = {"wall_s": wall, "tokens": sum(s["timings"]["tokens_generated"] for s in stats),
           "generate_s": sum(s["timings"]["wall_s"] for s in stats), "prompts": len(stats)}  # fmt: skip
    summary = out / "cluster_summary.json"
    if summary.exists():
        row["summary"] = json.loads(summary.read_text())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEMO))
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("-n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="midillm-bench-cluster-"))
    prompts = work / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[: args.prompts]) + "\n")
    common = ["--prompts-file", str(prompts), "-m", args.model, "-n", str(args.n), "--max-tokens",
              str(args.max_tokens), "--seed", "1", "--no-png"]  # fmt: skip
    cluster = ["--cluster", "ray", "--workers"]
    rows = {
        "plain --prompts-file, --threads 2": run([*common, "--threads", "2"], work / "plain"),
        "--cluster ray, 1 worker x 2 threads": run([*common, *cluster, "1", "--threads-per-worker", "2"], work / "c1"),
        "--cluster ray, 2 workers x 1 thread": run([*common, *cluster, "2", "--threads-per-worker", "1"], work / "c2"),
    }
    load = os.getloadavg()[0]
    lines = [SECTION, "", f"`scripts/bench_cluster.py` ({datetime.date.today().isoformat()}; {machine()}; 1-minute "
             f"load average {load:.1f} at the end: the machine was shared and loaded). Model {Path(args.model).name}, "
             f"{args.prompts} prompts, -n {args.n}, --max-tokens {args.max_tokens}, seed 1, strict; each row a fresh "
             "process. Steady tok/s: tokens / (wall - start-up). Overhead per prompt (one worker): (wall - start-up "
             "- the worker's generate() time) / prompts.", "",
             "| run | wall (s) | start-up (s) | tokens | steady tok/s | per-worker tok/s | overhead/prompt (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, row in rows.items():
        summary = row.get("summary")
        startup = summary["startup_s"] if summary else row["wall_s"] - row["generate_s"]
        steady = row["tokens"] / (row["wall_s"] - startup)
        per_worker = ", ".join(str(w["tokens_per_s"]) for w in summary["workers"]) if summary else "-"
        overhead = "-"
        if summary and len(summary["workers"]) == 1:
            overhead = f"{(summary['wall_s'] - startup - row['generate_s']) / row['prompts'] * 1000:.0f}"
        lines.append(f"| {name} | {row['wall_s']:.1f} | {startup:.1f} | {row['tokens']} | {steady:.1f} | "
                     f"{per_worker} | {overhead} |")  # fmt: skip
    section = "\n".join(lines) + "\n"
    print(section)
    if args.write:
        update_benchmarks(section, SECTION)


if __name__ == "__main__":
    main()
