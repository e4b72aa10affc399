"""Generation throughput: prompt and aggregate tokens/s for n parallel sequences, and time outside llama_decode."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .sampling import SamplingParams

if TYPE_CHECKING:  # llama.cpp loads when a bench runs, not when the CLI reads the defaults above
    from . import engine

DEFAULT_NS = (1, 2, 4, 8)
DEFAULT_STEPS = 96  # 32 notes per sequence: enough steps to average out, short enough for a laptop
WARMUP_STEPS = 3  # the first decodes pay for allocations and cold caches
MIN_STEPS = WARMUP_STEPS + 1  # at least one measured step
BENCH_DESCRIPTION = "An upbeat jazz trio with piano, double bass and brushed drums"
BENCH_SEED = 0


@dataclass(frozen=True)
class BenchRow:
    n: int  # parallel sequences
    prompt_tokens: int
    prompt_s: float
    steps: int
    generated: int  # tokens over all sequences
    gen_s: float  # wall time of the generation steps
    decode_s: float  # of which inside llama_decode
    sample_s: float  # of which masking and sampling
    decode_cpu_s: float = 0.0  # process CPU time during the decodes (all llama.cpp threads)

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def gen_tps(self) -> float:
        """Aggregate tokens per second over all n sequences."""
        return self.generated / self.gen_s if self.gen_s > 0 else 0.0

    @property
    def ms_per_step(self) -> float:
        return 1000 * self.gen_s / self.steps if self.steps else 0.0

    @property
    def overhead_fraction(self) -> float:
        """Share of step time outside llama_decode: sampling plus Python."""
        return 1.0 - self.decode_s / self.gen_s if self.gen_s > 0 else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            **asdict(self),
            "prompt_tps": self.prompt_tps,
            "gen_tps": self.gen_tps,
            "ms_per_step": self.ms_per_step,
            "overhead_fraction": self.overhead_fraction,
        }


def run_bench(
    model_path: str | os.PathLike[str],
    *,
    ns: Sequence[int] = DEFAULT_NS,
    steps: int = DEFAULT_STEPS,
    threads: int | None = None,
    device: str = "auto",
    params: SamplingParams | None = None,
    kv_unified: bool = True,
) -> list[BenchRow]:
    """Generate `steps` tokens per sequence for each n in `ns` and time it; one row per n."""
    from . import engine

    with engine.load_model(model_path, n_threads=threads, device=device, kv_unified=kv_unified) as model:
        prompt = engine.build_prompt(model, BENCH_DESCRIPTION)
        engine.generate_tokens(model, prompt, n=1, seed=BENCH_SEED, max_new_tokens=WARMUP_STEPS).run()
        return [bench_one(model, prompt, n, steps, params) for n in ns]


def bench_one(model: engine.Model, prompt: list[int], n: int, steps: int, params: SamplingParams | None) -> BenchRow:
    from . import engine

    gen = engine.generate_tokens(model, prompt, n=n, params=params, seed=BENCH_SEED, max_new_tokens=steps).run()
    t = gen.timings
    return BenchRow(
        n=n,
        prompt_tokens=t.prompt_tokens,
        prompt_s=t.prompt_s,
        steps=t.steps,
        generated=t.generated,
        gen_s=t.steps_s,
        decode_s=t.decode_s,
        sample_s=t.sample_s,
        decode_cpu_s=t.decode_cpu_s,
    )


def format_table(rows: Sequence[BenchRow]) -> str:
    """A plain-text table of bench rows (the CLI may render its own)."""
    columns = ("n", 3), ("prompt tok/s", 13), ("gen tok/s", 10), ("ms/step", 8), ("decode %", 9), ("sample %", 9)
    lines = [" ".join(f"{name:>{width}}" for name, width in (*columns, ("other %", 8)))]
    for r in rows:
        decode = 100 * r.decode_s / r.gen_s if r.gen_s else 0.0
        sample = 100 * r.sample_s / r.gen_s if r.gen_s else 0.0
        lines.append(
            f"{r.n:>3} {r.prompt_tps:>13.1f} {r.gen_tps:>10.1f} {r.ms_per_step:>8.2f} "
            f"{decode:>9.1f} {sample:>9.1f} {100 - decode - sample:>8.1f}"
        )
    return "\n".join(lines)
