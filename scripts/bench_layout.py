#!/usr/bin/env python3
"""Benchmark of the midi-head layout against the standard one on full-size random-weight models (make bench-layout).

For each type (Q4_K_M and Q8_0) the standard GGUF comes from our converter
(cached by `make bench`, built here if missing) and the midi-head pair is split
from it, so both hold the same weights. Every (layout, n) pair runs in its own
child process, standard and midi-head alternating, so the two layouts share the
machine's noise; the child's peak resident memory comes from GNU time. Results
go to BENCHMARKS.md's "Layouts" section with the machine and the date. Not a
test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from bench_convert import machine, run_measured, update_benchmarks
from bench_gen import full_model
from midillm_lite.convert import convert

from midillm_lite.layouts import LAYOUT_MIDI_HEAD, companion_path

SECTION = "## Layouts"
CHILD = (
    "import json, sys; from midillm_lite.bench import run_bench; "
    "rows = run_bench(sys.argv[1], ns=(int(sys.argv[2]),), steps=int(sys.argv[3]), threads=int(sys.argv[4])); "
    "print(json.dumps(rows[0].to_dict()))"
)


def midi_head(standard: Path) -> Path:
    head = standard.with_name(standard.name.removesuffix(".gguf") + "-mh.gguf")
    if not head.exists() or not companion_path(head).exists():
        convert(standard, head, layout=LAYOUT_MIDI_HEAD, force=True)
    return head


def run_child(model: Path, n: int, steps: int, threads: int) -> dict:
    command = [sys.executable, "-c", CHILD, str(model), str(n), str(steps), str(threads)]
    rc, _, peak_gib, stdout = run_measured(command, model.with_suffix(".rss"))
    if rc != 0:
        raise SystemExit(f"benchmark child for {model.name} n={n} failed with exit code {rc}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_rss_gib": peak_gib}


def file_gib(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths) / 1024**3


def markdown(results: list[dict], *, steps: int, threads: int, repeats: int) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        SECTION,
        "",
        f"`make bench-layout` ({today}; {machine()}; {threads} thread(s)). Full-size random-weight models of the real "
        f"shape; the midi-head pair is split from the standard file (same weights). Each cell: {steps} tokens per "
        f"sequence, best of {repeats} runs, each run a fresh process (standard and midi-head alternate). Peak RSS: "
        f"GNU time's maximum resident set of that process (the engine reads the weights into memory at load). "
        f"Files: model (+ companion).",
        "",
        "| type | layout | files (GiB) | n=1 tok/s | n=4 tok/s | peak RSS n=1 / n=4 (GiB) | speed-up n=1 / n=4 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        speed = f"{r['speedup'][1]:.2f}× / {r['speedup'][4]:.2f}×" if r.get("speedup") else "1×"
        lines.append(
            f"| {r['quant']} | {r['layout']} | {r['files_gib']:.2f} | {r['tps'][1]:.1f} | {r['tps'][4]:.1f} | "
            f"{r['rss'][1]:.2f} / {r['rss'][4]:.2f} | {speed} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quants", nargs="+", default=["q4_k_m", "q8_0"])
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    results = []
    for quant in args.quants:
        _, standard = full_model(quant)
        head = midi_head(standard)
        rows = {"standard": {1: [], 4: []}, LAYOUT_MIDI_HEAD: {1: [], 4: []}}
        for _ in range(args.repeats):
            for n in (1, 4):
                for layout, model in (("standard", standard), (LAYOUT_MIDI_HEAD, head)):
                    row = run_child(model, n, args.steps, args.threads)
                    rows[layout][n].append(row)
                    print(json.dumps({"quant": quant, "layout": layout, "n": n, **row}), file=sys.stderr, flush=True)
        for layout, model_files in (("standard", [standard]), (LAYOUT_MIDI_HEAD, [head, companion_path(head)])):
            results.append({
                "quant": quant, "layout": layout, "files_gib": file_gib(*model_files),
                "tps": {n: max(r["gen_tps"] for r in rows[layout][n]) for n in (1, 4)},
                "rss": {n: max(r["peak_rss_gib"] for r in rows[layout][n]) for n in (1, 4)},
            })  # fmt: skip
        results[-1]["speedup"] = {n: results[-1]["tps"][n] / results[-2]["tps"][n] for n in (1, 4)}
    section = markdown(results, steps=args.steps, threads=args.threads, repeats=args.repeats)
    print(section)
    if args.write:
        update_benchmarks(section, SECTION)


if __name__ == "__main__":
    main()
