#!/usr/bin/env python3
"""Benchmark of the conversion stage on a full-size random-weight checkpoint (`make bench-convert`).

Builds a checkpoint of MIDI-LLM's real shape (16 layers, hidden 2048, 32/8
heads, head_dim 64, FFN 8192, vocab 183,286, tied, BF16 safetensors, ~2.7 GB)
in a temporary folder, converts it to each type in a fresh child process, and
records wall time and the child's peak resident memory (wait4's ru_maxrss) in
BENCHMARKS.md's "Conversion" section. Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # devkit/ (random-weight checkpoints) lives at the top of the repository

from midillm_lite.convert import QUANT_NAMES  # noqa: E402

from devkit.checkpoints import (  # noqa: E402
    BOS_TEXT,
    EOS_IDS,
    EOT_TEXT,
    MAX_POSITIONS,
    llama3_tokenizer_json,
    model_config,
    to_bf16_bits,
)
from midillm_lite.amt import vocab  # noqa: E402

REAL_SHAPE = dict(hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192, head_dim=64, tied=True)
ROWS_PER_BLOCK = 4096  # rows generated at a time while writing the random checkpoint
BENCHMARKS = ROOT / "BENCHMARKS.md"
SECTION = "## Conversion"
TIME_BINARY = "/usr/bin/time"  # GNU time: reports the child's own peak RSS (%M, KiB)
RSS_LIMIT_BYTES = 2.5e9  # the ceiling for peak resident memory (2.5 GB = 2.33 GiB)
CHILD = (
    "import sys; from midillm_lite.convert import convert; "
    "convert(sys.argv[1], sys.argv[2], quant=sys.argv[3], threads=int(sys.argv[4]))"
)


def tensor_shapes(hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, head_dim: int, tied: bool) -> dict:
    shapes = {"model.embed_tokens.weight": (vocab.FULL_VOCAB_SIZE, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}"
        shapes |= {
            f"{p}.input_layernorm.weight": (hidden,),
            f"{p}.self_attn.q_proj.weight": (heads * head_dim, hidden),
            f"{p}.self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            f"{p}.self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            f"{p}.self_attn.o_proj.weight": (hidden, heads * head_dim),
            f"{p}.post_attention_layernorm.weight": (hidden,),
            f"{p}.mlp.gate_proj.weight": (ffn, hidden),
            f"{p}.mlp.up_proj.weight": (ffn, hidden),
            f"{p}.mlp.down_proj.weight": (hidden, ffn),
        }
    shapes["model.norm.weight"] = (hidden,)
    if not tied:
        shapes["lm_head.weight"] = (vocab.FULL_VOCAB_SIZE, hidden)
    return shapes


def write_random_checkpoint(folder: Path, seed: int = 0) -> int:
    """Stream a BF16 safetensors file of the real shape, a block of rows at a time; returns its size."""
    rng = np.random.default_rng(seed)
    shapes = tensor_shapes(**REAL_SHAPE)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(folder / "model.safetensors", "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for shape in shapes.values():
            rows, cols = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
            scale = 1.0 / np.sqrt(cols) if len(shape) == 2 else 0.0
            for start in range(0, rows, ROWS_PER_BLOCK):
                n = min(ROWS_PER_BLOCK, rows - start)
                block = rng.standard_normal((n, cols), dtype=np.float32) * scale + (0.0 if scale else 1.0)
                fh.write(to_bf16_bits(block).tobytes())
    config = model_config(**REAL_SHAPE, config_style="transformers4")
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 128000, "eos_token_id": list(EOS_IDS)}))
    (folder / "tokenizer.json").write_text(llama3_tokenizer_json(False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": BOS_TEXT, "eos_token": EOT_TEXT, "model_max_length": MAX_POSITIONS})
    )
    return (folder / "model.safetensors").stat().st_size


Measured = tuple[int, float, float, str]  # exit code, wall seconds, peak RSS (GiB), stdout


def run_measured(command: list[str], rss_file: Path, env: dict[str, str] | None = None) -> Measured:
    """Run a child: (exit code, wall seconds, the child's own peak RSS in GiB, its stdout).

    The child is started through /usr/bin/time where it exists: a process forked from this
    one (which may just have built a checkpoint) would inherit our high-water mark into its ru_maxrss.
    """
    if Path(TIME_BINARY).exists():
        command = [TIME_BINARY, "-f", "%M", "-o", str(rss_file), *command]
    started = time.monotonic()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    stdout = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - started
    peak_kib = int(rss_file.read_text().split()[-1]) if rss_file.exists() else usage.ru_maxrss
    rss_file.unlink(missing_ok=True)
    return os.waitstatus_to_exitcode(status), seconds, peak_kib / 1024**2, stdout


def run_one(checkpoint: Path, out: Path, quant: str, threads: int) -> dict:
    """Convert in a child process; wall time and that child's own peak RSS."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    command = [sys.executable, "-c", CHILD, str(checkpoint), str(out), quant, str(threads)]
    rc, seconds, peak_gib, _ = run_measured(command, out.with_suffix(".rss"), env)
    result = {"quant": quant, "rc": rc, "seconds": seconds, "peak_rss_gb": peak_gib}
    result["size_gb"] = out.stat().st_size / 1024**3 if out.exists() else 0.0
    out.unlink(missing_ok=True)
    return result


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def markdown(results: list[dict], *, source_gb: float, threads: int, build_s: float) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        SECTION,
        "",
        f"`make bench-convert` ({today}; {machine()}; {threads} thread(s)). Source: random-weight BF16 checkpoint of "
        f"the real shape (16 layers, hidden 2048, 32/8 heads, FFN 8192, vocab 183,286, tied; {source_gb:.2f} GiB, "
        f"built in {build_s:.0f} s). Each type converted in a fresh process; peak RSS is that process's maximum "
        f"resident set size from GNU time (includes file pages it mapped; the target is 2.5 GB = 2.33 GiB). "
        f"K-quants include writing and deleting the BF16 intermediate and llama.cpp's quantizer run with the same "
        f"thread count.",
        "",
        "| type | time (s) | peak RSS (GiB) | output (GiB) | status |",
        "|---|---:|---:|---:|---|",
    ]
    for r in results:
        status = "ok" if r["rc"] == 0 else f"exit {r['rc']}"
        if r["rc"] == 0 and r["peak_rss_gb"] * 1024**3 > RSS_LIMIT_BYTES:
            status = f"ok, over the {RSS_LIMIT_BYTES / 1e9} GB target"
        lines.append(f"| {r['quant']} | {r['seconds']:.0f} | {r['peak_rss_gb']:.2f} | {r['size_gb']:.2f} | {status} |")
    return "\n".join(lines) + "\n"


def update_benchmarks(section: str, title: str = SECTION) -> None:
    """Replace (or append) one `## ` section, leaving the rest of BENCHMARKS.md as it is."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    section = section.rstrip("\n") + "\n"  # one blank line before the next section, however the caller ended it
    start = text.find(title)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(title))
        text = text[:start] + section + ("\n" + text[end + 1 :] if end >= 0 else "")
    tmp = BENCHMARKS.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(BENCHMARKS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quants", nargs="*", default=list(QUANT_NAMES), choices=QUANT_NAMES)
    parser.add_argument("--threads", type=int, default=1, help="threads for numpy and llama.cpp's quantizer")
    parser.add_argument("--workdir", type=Path, default=None, help="where the ~3 GB checkpoint goes (temp dir)")
    parser.add_argument("--no-write", action="store_true", help="print the table without updating BENCHMARKS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="midillm-bench-", dir=args.workdir))
    try:
        started = time.monotonic()
        source_bytes = write_random_checkpoint(work)
        build_s = time.monotonic() - started
        print(f"checkpoint: {source_bytes / 1024**3:.2f} GiB in {build_s:.0f} s", file=sys.stderr)
        results = []
        for quant in args.quants:
            results.append(run_one(work, work / f"out-{quant}.gguf", quant, args.threads))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        section = markdown(results, source_gb=source_bytes / 1024**3, threads=args.threads, build_s=build_s)
        print(section)
        if not args.no_write:
            update_benchmarks(section)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
