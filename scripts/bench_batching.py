#!/usr/bin/env python3
"""Benchmark of continuous batching: 4 concurrent n=1 requests through BatchScheduler, against the same 4 one by
one (Generator.generate) and one n=4 request; time to first token under load; Python overhead per step.

`make bench-batching` runs `--full --write` on the full-size random-weight Q4_K_M that `make bench` builds and
caches (scripts/bench_gen.py), and puts the figures into BENCHMARKS.md's "Continuous batching" section with the
machine, the date and the load average. The same seeds run in every mode, so the concurrent outputs are also
compared token for token with the one-by-one ones (llama.cpp may round a batch of other requests differently).
`--model` or `--tiny` runs it on another file. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_convert import machine, update_benchmarks  # noqa: E402
from bench_gen import full_model, tiny_model  # noqa: E402

from midillm_lite.batching import BatchScheduler  # noqa: E402
from midillm_lite.generate import Generator  # noqa: E402

SECTION = "## Continuous batching"
PROMPTS = [
    "An upbeat jazz trio with piano, double bass and brushed drums",
    "A gentle chorale for string quartet",
    "A fast fiddle reel with guitar accompaniment",
    "A slow ambient piece for synth pads",
]
SEEDS = [1, 2, 3, 4]
WARMUP_TOKENS = 6
# Random weights reach strict mode's 100 s ceiling within a few notes, so every request runs the free sampler to its
# token count; top_k bounds its nucleus, which on random weights' flat logits would otherwise sort all 55k ids (a
# trained model's nucleus is small). The same settings in every mode.
SAMPLING = dict(strict=False, top_k=64)


def one_by_one(gen: Generator, steps: int) -> dict:
    start = time.perf_counter()
    results = [gen.generate(p, n=1, seed=s, max_tokens=steps, **SAMPLING) for p, s in zip(PROMPTS, SEEDS, strict=True)]
    wall = time.perf_counter() - start
    return summary(results, wall)


def one_n4(gen: Generator, steps: int) -> dict:
    start = time.perf_counter()
    result = gen.generate(PROMPTS[0], n=4, seed=SEEDS[0], max_tokens=steps, **SAMPLING)
    return summary([result], time.perf_counter() - start)


def concurrent(scheduler: BatchScheduler, steps: int, count: int = len(PROMPTS)) -> dict:
    before = scheduler.stats
    results: list = [None] * count

    def run(i: int) -> None:
        results[i] = scheduler.generate(PROMPTS[i], n=1, seed=SEEDS[i], max_tokens=steps, **SAMPLING)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    after = scheduler.stats
    row = summary(results, wall)
    busy = after.busy_s - before.busy_s
    decode = after.decode_s - before.decode_s
    prompt = after.prompt_s - before.prompt_s
    row.update(
        steps=after.steps - before.steps,
        busy_s=busy,
        overhead=1 - decode / busy if busy else 0.0,
        step_tps=row["tokens"] / (busy - prompt) if busy > prompt else 0.0,
        ms_per_step=1000 * (busy - prompt) / max(after.steps - before.steps, 1),
    )
    return row, results


def summary(results: list, wall: float) -> dict:
    tokens = sum(r.timings.generated for r in results)
    steps_s = sum(r.timings.steps_s for r in results)
    decode_s = sum(r.timings.decode_s for r in results)
    return {
        "tokens": tokens,
        "wall_s": wall,
        "tps": tokens / wall,
        # Generation steps only (prompts excluded): what the decode loop sustains.
        "step_tps": tokens / steps_s if steps_s else 0.0,
        "overhead": 1 - decode_s / steps_s if steps_s else 0.0,
        "cpu_share": [r.cpu_share for r in results],
        "results": results,
    }


def first_token_under_load(scheduler: BatchScheduler, steps: int, arrivals: int = 3) -> dict:
    """3 requests decoding; a 4th arrives (`arrivals` times, one after another): seconds from its submission to its
    first token as its caller sees it; the median arrival."""
    stop = threading.Event()
    started = [threading.Event() for _ in range(3)]

    def runner(i: int) -> None:
        def on_step(progress, timings) -> None:
            if timings.steps >= 3:  # past its prompt: decoding
                started[i].set()

        scheduler.generate(PROMPTS[i], n=1, seed=SEEDS[i], max_tokens=steps * 8, cancel=stop, on_step=on_step,
                           **SAMPLING)  # fmt: skip
        started[i].set()

    runners = [threading.Thread(target=runner, args=(i,)) for i in range(3)]
    for thread in runners:
        thread.start()
    samples = []
    for _ in range(arrivals):
        for event in started:
            event.wait()
        samples.append(_arrival(scheduler, steps))
    stop.set()
    for thread in runners:
        thread.join()
    return sorted(samples, key=lambda sample: sample["ttft_s"])[len(samples) // 2]


def _arrival(scheduler: BatchScheduler, steps: int) -> dict:
    """One request arriving: its time to first token as its caller sees it, then it is cancelled."""
    first: list[float] = []
    done = threading.Event()
    submitted = time.perf_counter()

    def on_step(progress, timings) -> None:
        if not first:
            first.append(time.perf_counter() - submitted)
            done.set()

    result = scheduler.generate(PROMPTS[3], n=1, seed=SEEDS[3], max_tokens=steps, on_step=on_step, cancel=done,
                                **SAMPLING)  # fmt: skip
    t = result.timings
    return {"ttft_s": first[0], "queue_s": t.queue_s, "prompt_s": t.prompt_s, "prompt_tokens": t.prompt_tokens}


def batch_rounding(gen: Generator, sizes: tuple[int, ...] = (2, 3, 4, 5, 8)) -> dict[int, float]:
    """Max |logit difference| of one sequence's next-token logits decoded alone and in a batch of `size` tokens
    (the others: other sequences of another prompt). 0.0 means bit-identical."""
    import numpy as np

    from midillm_lite import engine

    model = gen.model
    mine, other = (engine.build_prompt(model, text) for text in PROMPTS[:2])
    token = model.token_id(SEEDS[0])  # any MIDI id: a time token

    def logits(size: int) -> np.ndarray:
        ctx = model.own_context(max(sizes), 1024, 512)
        try:
            engine._decode_prompt(model, ctx, mine, 0)
            engine._decode_prompt(model, ctx, other, 1)
            for seq in range(2, size):
                ctx.seq_cp(1, seq)
            ctx.decode([(token, len(mine), 0, True)] + [(token, len(other), s, True) for s in range(1, size)])
            return ctx.midi_logits(0).copy()
        finally:
            model.release_context(ctx)

    alone = logits(1)
    return {size: float(np.abs(logits(size) - alone).max()) for size in sizes}


def same_tokens(a: list, b: list) -> tuple[int, list[int | None]]:
    """How many outputs match token for token, and for each the first step where they differ (None: same)."""
    firsts = []
    for x, y in zip(a, b, strict=True):
        tx, ty = x.outputs[0].tokens, y.outputs[0].tokens
        differ = (i for i, (p, q) in enumerate(zip(tx, ty, strict=False)) if p != q)
        firsts.append(next(differ, None if tx == ty else min(len(tx), len(ty))))
    return sum(f is None for f in firsts), firsts


def markdown(
    rows: dict,
    ttft: dict,
    match: tuple,
    match3: tuple,
    rounding: dict,
    *,
    model: Path,
    steps: int,
    threads: int,
    load: tuple,
    repeats: int,
) -> str:
    today = datetime.date.today().isoformat()
    seq, conc, n4 = rows["one by one"], rows["concurrent"], rows["n=4"]
    lines = [
        SECTION,
        "",
        f"`make bench-batching` ({today}; {machine()}; {threads} thread(s); load average {load[0]:.2f} before, "
        f"{load[1]:.2f} after: the machine was shared with other jobs). Model: random-weight checkpoint of the "
        f"real shape, `{model.name}` ({model.stat().st_size / 1024**3:.2f} GiB). Four prompts, seeds 1-4, "
        f"{steps} new tokens each, free sampler with top_k 64 (random weights end a strict output within a few "
        f"notes). *Wall* counts from the first submission to the "
        f"last token, prompts included; *steps* counts the generation steps only. Overhead = share of the decode "
        f"loop's time outside llama_decode (sampling, scheduling, Python). Each mode ran {repeats} times, "
        f"interleaved with the others; the table keeps each mode's best run.",
        "",
        "| mode | tokens | wall (s) | tok/s, wall | tok/s, steps | vs n=4 (wall) | overhead |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['tokens']} | {row['wall_s']:.1f} | {row['tps']:.1f} | {row['step_tps']:.1f} | "
            f"{row['tps'] / n4['tps']:.2f}× | {100 * row['overhead']:.1f}% |"
        )
    same, firsts = match
    lines += [
        "",
        f"- Concurrent vs n=4: {100 * (conc['tps'] / n4['tps'] - 1):+.1f}% (wall), "
        f"{100 * (conc['step_tps'] / n4['step_tps'] - 1):+.1f}% (steps); concurrent vs one by one: "
        f"{conc['tps'] / seq['tps']:.2f}× (wall). Scheduler: {conc['steps']} batched steps, "
        f"{conc['ms_per_step']:.0f} ms per step. The four requests evaluate four prompts where n=4 evaluates one "
        f"(shared), so *wall* favours n=4 beyond the steps.",
        f"- Time to first token under load (3 requests decoding, a 4th arrives; median of 3 arrivals): "
        f"{ttft['ttft_s']:.2f} s seen by the caller, of which"
        f" {ttft['queue_s']:.3f} s waiting for the next step and {ttft['prompt_s']:.2f} s evaluating "
        f"its {ttft['prompt_tokens']}-token prompt.",
        f"- Same seeds, same tokens: {same} of {len(firsts)} concurrent outputs equal their one-by-one run token for "
        f"token (first difference at token {', '.join('-' if f is None else str(f) for f in firsts)}); with 3 "
        f"concurrent requests, {match3[0]} of {len(match3[1])}. Why: one sequence's next-token logits decoded "
        f"in a batch of k tokens differ from the same decode alone by at most "
        + ", ".join(f"{diff:.3g} (k={k})" for k, diff in rounding.items())
        + " (0: bit-identical). llama.cpp's CPU kernels change with the batch size; random weights' flat "
        "distributions then flip a sampled token at the first difference.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a MIDI-LLM GGUF")
    source.add_argument("--tiny", action="store_true", help="build and use the tests' tiny random model")
    source.add_argument("--full", action="store_true", help="full-size random-weight Q4_K_M (built once, cached)")
    parser.add_argument("--steps", type=int, default=128, help="new tokens per request")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the three modes, interleaved; best kept")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md (with --full)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        model = full_model("q4_k_m")[1] if args.full else tiny_model(Path(tmp)) if args.tiny else args.model
        with Generator(model, threads=args.threads) as gen:
            gen.generate(PROMPTS[0], n=1, seed=0, max_tokens=WARMUP_TOKENS)
            with BatchScheduler(gen, slots=len(PROMPTS)) as scheduler:
                scheduler.generate(PROMPTS[0], n=1, seed=0, max_tokens=WARMUP_TOKENS)
                runs: dict[str, list[dict]] = {"one by one": [], "concurrent": [], "n=4": []}
                for _ in range(args.repeats):  # interleaved, so a burst of load elsewhere hits every mode alike
                    runs["one by one"].append(one_by_one(gen, args.steps))
                    runs["concurrent"].append(concurrent(scheduler, args.steps)[0])
                    runs["n=4"].append(one_n4(gen, args.steps))
                three, _ = concurrent(scheduler, args.steps, count=3)
                ttft = first_token_under_load(scheduler, args.steps)
            rounding = batch_rounding(gen)
        rows = {mode: max(found, key=lambda row: row["tps"]) for mode, found in runs.items()}
        match = same_tokens(rows["concurrent"]["results"], rows["one by one"]["results"])
        match3 = same_tokens(three["results"], rows["one by one"]["results"][:3])
        for row in rows.values():
            row.pop("results")
        print(json.dumps({"rows": rows, "ttft": ttft, "same": match, "same3": match3}, indent=2, default=str))
        section = markdown(rows, ttft, match, match3, rounding, model=model, steps=args.steps, threads=args.threads,
                           load=(load_before, os.getloadavg()[0]), repeats=args.repeats)  # fmt: skip
        print(section)
        if args.full and args.write:
            update_benchmarks(section, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
