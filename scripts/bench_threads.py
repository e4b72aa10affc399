#!/usr/bin/env python3
"""Benchmark of llama.cpp thread counts on a quiet and a loaded machine (make bench-threads).

For the bundled demo model and a full-size random-weight Q4_K_M model (cached
under ~/.cache/midillm-lite/bench by scripts/bench_gen.py), under three loads
(none added; one busy-loop process per half the cores; one per core), with
1, cores-1 and cores threads and two OpenMP wait policies (libgomp's default,
which spins at barriers, and PASSIVE, midillm-lite's default), it measures
generation tokens/s for n = 1 and n = 4 and the share of its threads' time the
process got on a CPU. Each cell is a fresh child process (libgomp reads its wait
policy once, when it loads); the busy loops are started and killed here, and
end by themselves after BUSY_LIMIT_S should this script die. The 1-minute load
average is recorded beside each row: on a shared machine "quiet" is not quiet,
so compare ratios within one run. Results go to BENCHMARKS.md's "Threads"
section with the machine and the date. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bench_convert import machine, update_benchmarks
from bench_gen import full_model

from midillm_lite.llamacpp import OMP_WAIT_POLICY, WAIT_POLICY_DEFAULT, physical_cores

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "midillm-demo-q8_0.gguf"
SECTION = "## Threads"
BUSY_LIMIT_S = 3600  # a busy loop left behind by a killed script ends by itself after this
CHILD_TIMEOUT_S = 900
NS = (1, 4)
SPIN = "spin"  # libgomp's own default: llama.cpp is loaded before midillm-lite can choose
POLICIES = (SPIN, WAIT_POLICY_DEFAULT.lower())
BUSY_LOOP = f"import time\nend = time.monotonic() + {BUSY_LIMIT_S}\nwhile time.monotonic() < end:\n    pass\n"
CHILD = """
import json, sys
if sys.argv[4] == "spin":
    import llama_cpp  # loaded first: libgomp starts with its own default wait policy
from midillm_lite.bench import run_bench
rows = run_bench(sys.argv[1], ns=(1, 4), steps=int(sys.argv[2]), threads=int(sys.argv[3]), device="cpu")
print(json.dumps([r.to_dict() for r in rows]))
"""


@contextlib.contextmanager
def busy_loops(count: int) -> Iterator[None]:
    """`count` CPU-bound processes competing with the benchmark, killed on the way out (Ctrl-C included)."""
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
        for loop in loops:
            loop.wait()


def run_cell(model: Path, steps: int, threads: int, policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != OMP_WAIT_POLICY}
    command = [sys.executable, "-c", CHILD, str(model), str(steps), str(threads), policy]
    try:
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"over {CHILD_TIMEOUT_S} s"}
    if run.returncode != 0:
        return {"error": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit {run.returncode}"}
    rows = json.loads(run.stdout.strip().splitlines()[-1])
    return {
        "tps": {r["n"]: r["gen_tps"] for r in rows},
        "cpu_share": {r["n"]: r["decode_cpu_s"] / (r["decode_s"] * threads) if r["decode_s"] else 0.0 for r in rows},
    }


def loads(cores: int) -> list[tuple[str, int]]:
    half = max(1, cores // 2)
    return [
        ("none added", 0),
        (f"{half} busy loop(s) (half the cores)", half),
        (f"{cores} busy loops (one per core)", cores),
    ]


def thread_counts(cores: int) -> list[int]:
    return sorted({1, max(1, cores - 1), cores})


def markdown(results: list[dict], *, cores: int, steps: dict[str, int]) -> str:
    today = datetime.date.today().isoformat()
    counts = thread_counts(cores)
    same = " (on this machine cores-1 = 1, so two counts)" if cores - 1 <= 1 else ""
    lines = [
        SECTION,
        "",
        f"`make bench-threads` ({today}; {machine()}; {cores} physical core(s)). Threads: {', '.join(map(str, counts))}"
        f"{same}. Wait policy: `spin` is libgomp's default (llama.cpp's OpenMP threads spin at every barrier before "
        f"sleeping), `passive` is `OMP_WAIT_POLICY=PASSIVE`, midillm-lite's default. Busy loops: `python -c 'while "
        f"True: pass'` processes started by the script. Each cell is a fresh process generating "
        + ", ".join(f"{v} tokens per sequence with the {k} model" for k, v in steps.items())
        + "; tok/s is aggregate over n sequences; CPU share = the process's CPU time during llama_decode / (wall "
        "time x threads). Load: the 1-minute load average when the cell ended (it includes the busy loops and "
        "everything else on the machine).",
        "",
        "| model | added load | policy | threads | n=1 tok/s | n=4 tok/s | CPU share n=4 | load |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['load']} | {r['policy']} | {r['threads']} | {r['error']} | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['load']} | {r['policy']} | {r['threads']} | {r['tps'][1]:.1f} | {r['tps'][4]:.1f} "
            f"| {r['cpu_share'][4]:.2f} | {r['loadavg']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=["demo", "full"], default=["demo", "full"])
    parser.add_argument("--demo-steps", type=int, default=128)
    parser.add_argument("--full-steps", type=int, default=24)
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--cores", type=int, default=physical_cores(), help="cores to plan for (default: measured)")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    models = {"demo": (DEMO, args.demo_steps)}
    if "full" in args.models:
        models["full"] = (full_model("q4_k_m")[1], args.full_steps)
    models = {name: models[name] for name in args.models}
    results = []
    for name, (model, steps) in models.items():
        for load, busy in loads(args.cores):
            with busy_loops(busy):
                for policy in args.policies:
                    for threads in thread_counts(args.cores):
                        cell = run_cell(model, steps, threads, policy)
                        row = {"model": name, "load": load, "policy": policy, "threads": threads, **cell,
                               "loadavg": os.getloadavg()[0]}  # fmt: skip
                        results.append(row)
                        print(json.dumps(row), file=sys.stderr, flush=True)
    section = markdown(results, cores=args.cores, steps={name: steps for name, (_, steps) in models.items()})
    print(section)
    if args.write:
        update_benchmarks(section, SECTION)


if __name__ == "__main__":
    main()
