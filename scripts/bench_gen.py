#!/usr/bin/env python3
"""Benchmark of generation: midillm-lite's batched llama.cpp path for n = 1, 2, 4, 8, against the reference path.

`make bench` runs `--full --write`: a random-weight checkpoint of MIDI-LLM's
real shape (cached under ~/.cache/midillm-lite/bench, ~2.5 GiB) converted by
our own stage to Q4_K_M, timed with midillm_lite.bench.run_bench; then, when
an interpreter with torch and transformers is given (`--reference-python`),
the reference's transformers path on the same weights (scripts/bench_reference.py,
4 return sequences, bf16 as the reference runs it, and f32). Both go into
BENCHMARKS.md's "Generation" section with the machine and the date. `--tiny`
uses the tests' tiny model, for a look at the Python overhead alone. Not a
test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # devkit/ (random-weight checkpoints) lives at the top of the repository

from bench_convert import machine, update_benchmarks, write_random_checkpoint  # noqa: E402

from midillm_lite.bench import DEFAULT_NS, DEFAULT_STEPS, BenchRow, format_table, run_bench  # noqa: E402
from midillm_lite.errors import UserError  # noqa: E402

CACHE = Path(os.environ.get("MIDILLM_HOME") or "~/.cache/midillm-lite").expanduser() / "bench"
SECTION = "## Generation"
REFERENCE_SCRIPT = ROOT / "scripts" / "bench_reference.py"
REFERENCE_N = 4  # the reference's default number of outputs


def tiny_model(folder: Path) -> Path:
    from midillm_lite.convert import convert

    from devkit.checkpoints import make_checkpoint

    out = folder / "tiny-f32.gguf"
    convert(make_checkpoint(folder / "checkpoint"), out, quant="f32", threads=2)
    return out


def full_model(quant: str) -> tuple[Path, Path]:
    """(checkpoint folder, GGUF) of the real shape, built once and cached."""
    from midillm_lite.convert import convert

    checkpoint = CACHE / "checkpoint"
    if not (checkpoint / "config.json").exists():
        checkpoint.mkdir(parents=True, exist_ok=True)
        print(f"building a random-weight checkpoint in {checkpoint}", file=sys.stderr)
        write_random_checkpoint(checkpoint)
    gguf = CACHE / f"full-{quant}.gguf"
    if not gguf.exists():
        print(f"converting it to {gguf}", file=sys.stderr)
        convert(checkpoint, gguf, quant=quant)
    return checkpoint, gguf


def reference(python: str, checkpoint: Path, *, steps: int, threads: int, dtype: str) -> dict | None:
    command = [python, str(REFERENCE_SCRIPT), str(checkpoint), "--n", str(REFERENCE_N), "--steps", str(steps),
               "--threads", str(threads), "--dtype", dtype]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        print(f"reference ({dtype}) failed:\n{run.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def markdown(rows: list[BenchRow], refs: list[dict], *, model: Path, steps: int, threads: int) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        SECTION,
        "",
        f"`make bench` ({today}; {machine()}; {threads} thread(s)). Model: random-weight checkpoint of the real "
        f"shape converted by `midillm-lite convert` to `{model.name}` ({model.stat().st_size / 1024**3:.2f} GiB). "
        f"Each n decodes {steps} tokens per sequence with the default strict sampler (temperature 1.0, top_p 0.98); "
        f"the prompt is evaluated once and shared. Overhead = share of step time outside llama_decode (sampling "
        f"and Python).",
        "",
        "| n | prompt tok/s | aggregate gen tok/s | ms/step | overhead |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.n} | {r.prompt_tps:.0f} | {r.gen_tps:.1f} | {r.ms_per_step:.0f} | {100 * r.overhead_fraction:.1f}% |"
        for r in rows
    ]
    ours = next((r for r in rows if r.n == REFERENCE_N), None)
    if refs:
        lines += [
            "",
            f"Reference path, same machine, same run, same weights: transformers `generate(num_return_sequences="
            f"{REFERENCE_N}, do_sample=True, top_p=0.98)` on the CPU, {steps} new tokens per sequence (prompt "
            f"included in the time, as a user waits for it), {threads} thread(s).",
            "",
            "| reference | aggregate tok/s | midillm-lite n=4 vs it |",
            "|---|---:|---:|",
        ]
        for ref in refs:
            ratio = f"{ours.gen_tps / ref['tokens_per_s']:.2f}×" if ours else "-"
            lines.append(f"| transformers {ref['dtype']} | {ref['tokens_per_s']:.1f} | {ratio} |")
    else:
        lines += ["", "Reference path not measured (no interpreter with torch given)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a MIDI-LLM GGUF")
    source.add_argument("--tiny", action="store_true", help="build and use the tests' tiny random model")
    source.add_argument("--full", action="store_true", help="full-size random-weight model (built once, cached)")
    parser.add_argument("--quant", default="q4_k_m", help="type of the --full model")
    parser.add_argument("--ns", type=int, nargs="+", default=list(DEFAULT_NS), help="parallel sequence counts")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="tokens generated per sequence")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads")
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--reference-python", help="interpreter with torch + transformers, for the reference path")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md (with --full)")
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    args = parser.parse_args()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if args.full:
                checkpoint, model = full_model(args.quant)
            else:
                model = tiny_model(Path(tmp)) if args.tiny else args.model
            rows = run_bench(model, ns=args.ns, steps=args.steps, threads=args.threads, device=args.device)
            print(json.dumps([r.to_dict() for r in rows], indent=2) if args.json else format_table(rows), flush=True)
            refs = []
            if checkpoint is not None and args.reference_python:
                for dtype in ("bfloat16", "float32"):
                    found = reference(args.reference_python, checkpoint, steps=args.steps, threads=args.threads,
                                      dtype=dtype)  # fmt: skip
                    if found:
                        print(json.dumps(found), flush=True)
                        refs.append(found)
            if args.full:
                section = markdown(rows, refs, model=model, steps=args.steps, threads=args.threads)
                print(section)
                if args.write:
                    update_benchmarks(section, SECTION)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
