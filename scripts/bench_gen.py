#!/usr/bin/env python3
"""Benchmark of generation on a MIDI-LLM GGUF: prompt and aggregate generation tokens/s for n parallel sequences.

Prints a table (or JSON) from midillm_lite.bench.run_bench. `--tiny` builds the
tests' tiny random-weight model in a temporary folder, for a quick look at the
Python overhead with llama_decode nearly free. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny-model builder, for --tiny

from midillm_lite.bench import DEFAULT_NS, DEFAULT_STEPS, format_table, run_bench  # noqa: E402
from midillm_lite.errors import UserError  # noqa: E402


def tiny_model(folder: Path) -> Path:
    from midillm_lite.convert import convert
    from tinymodel import make_checkpoint

    out = folder / "tiny-f32.gguf"
    convert(make_checkpoint(folder / "checkpoint"), out, quant="f32", threads=2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a MIDI-LLM GGUF")
    source.add_argument("--tiny", action="store_true", help="build and use the tests' tiny random model")
    parser.add_argument("--ns", type=int, nargs="+", default=list(DEFAULT_NS), help="parallel sequence counts")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="tokens generated per sequence")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    args = parser.parse_args()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = tiny_model(Path(tmp)) if args.tiny else args.model
            rows = run_bench(model, ns=args.ns, steps=args.steps, threads=args.threads, device=args.device)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps([r.to_dict() for r in rows], indent=2) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
