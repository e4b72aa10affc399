"""The Python API of text-to-MIDI: `Generator` loads a model once and turns descriptions into MIDI results.

    from midillm_lite import Generator
    with Generator() as gen:
        result = gen.generate("a gentle chorale for string quartet", n=4, seed=1)
        result.outputs[0].midi.save("chorale.mid")

`generate` streams progress through `on_step`; Ctrl-C (KeyboardInterrupt)
during sampling ends it early and returns what was made, marked partial
(`result.interrupted`), so nothing generated is lost.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mido

from . import __version__
from .amt.codec import decode_tokens
from .amt.continuation import Continuation
from .amt.grid import GridRequest
from .amt.ops import is_time, time_seconds, time_ticks
from .amt.transcode import MusicSummary, decoded_to_midi
from .amt.vocab import TIME_RESOLUTION, TOKENS_PER_NOTE
from .engine import Generation, Model, StepEvent, Timings, build_prompt, cpu_contended, generate_tokens, load_model
from .errors import Opt, UserError
from .fsutil import sha256_file
from .modelinfo import ModelInfo
from .models import ModelChoice, find_model
from .sampling import MAX_SIMULTANEOUS_NOTES, NoteState, SamplingParams, too_many_simultaneous

MAX_OUTPUTS = 32  # each sequence holds its own ~2k-token KV cache; beyond this memory, not speed, is the limit
HASH_PREFIX = 16


@dataclass
class OutputProgress:
    """How far one output has come, for progress displays."""

    tokens: int = 0
    notes: int = 0
    seconds: float = 0.0
    done: bool = False


ProgressCallback = Callable[[list[OutputProgress], Timings], None]


@dataclass
class Output:
    index: int  # 1-based, as the files are named
    tokens: list[int]  # AMT ids generated (the continuation window excluded)
    midi: mido.MidiFile
    summary: MusicSummary
    partial: bool = False  # sampling stopped by an interrupt before this output finished
    rejected: str | None = None  # why the reference would have thrown this sample away


@dataclass
class GenerationResult:
    prompt: str
    seed: int
    params: SamplingParams
    max_tokens: int
    seconds: float | None
    outputs: list[Output]
    timings: Timings
    model: ModelInfo
    threads: int
    gpu_layers: int
    continuation: Continuation | None = None
    interrupted: bool = False
    wall_s: float = 0.0
    model_sha256: str = ""
    model_name: str = ""

    @property
    def cpu_share(self) -> float | None:
        """Share of its threads' time llama.cpp got on a CPU while decoding (None on a GPU or for short runs)."""
        return None if self.gpu_layers else self.timings.cpu_share(self.threads)

    @property
    def cpu_contended(self) -> bool:
        """Other programs held the CPU: tokens/s is far below what this machine can do."""
        return cpu_contended(self.cpu_share)

    def stats(self) -> dict[str, Any]:
        """generation_stats.json: everything needed to reproduce and judge the run."""
        t = self.timings
        gen_s = t.steps_s or 1e-9
        return {
            "prompt": self.prompt,
            "midillm_lite_version": __version__,
            "model": {
                "name": self.model_name,
                "path": str(self.model.path),
                "sha256_prefix": self.model_sha256,
                "quant": self.model.quant,
            },
            "sampling": {
                "temperature": self.params.temperature,
                "top_p": self.params.top_p,
                "top_k": self.params.top_k,
                "strict": self.params.strict,
                "instruments": None if self.params.instruments is None else sorted(self.params.instruments),
                "seed": self.seed,
                "max_tokens": self.max_tokens,
                "seconds": self.seconds,
            },
            "threads": self.threads,
            "gpu_layers": self.gpu_layers,
            "cpu_contended": self.cpu_contended,
            "continuation": None
            if self.continuation is None
            else {
                "source": str(self.continuation.source),
                "window_start_seconds": self.continuation.window_start / TIME_RESOLUTION,
                "window_notes": self.continuation.window_notes,
            },
            "interrupted": self.interrupted,
            "outputs": [
                {
                    "index": o.index,
                    "tokens": len(o.tokens),
                    "partial": o.partial,
                    "rejected": o.rejected,
                    **o.summary.to_dict(),
                }
                for o in self.outputs
            ],
            "timings": {
                "prompt_tokens": t.prompt_tokens,
                "prompt_s": round(t.prompt_s, 4),
                "generation_s": round(t.steps_s, 4),
                "decode_s": round(t.decode_s, 4),
                "sample_s": round(t.sample_s, 4),
                "tokens_generated": t.generated,
                "tokens_per_s": round(t.generated / gen_s, 2),
                "overhead_fraction": round(t.overhead_fraction, 4),
                "decode_cpu_s": round(t.decode_cpu_s, 4),
                "cpu_share": None if self.cpu_share is None else round(self.cpu_share, 3),
                "wall_s": round(self.wall_s, 3),
            },
        }


class Generator:
    """A MIDI-LLM model loaded once, generating any number of times."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        gpu_layers: int | None = None,
        threads: int | None = None,
    ):
        self.choice: ModelChoice = find_model(model)  # its name, and whether it is the bundled demo
        self.path = self.choice.path
        self.model: Model = load_model(self.path, n_threads=threads, n_gpu_layers=gpu_layers, device=device)
        self._sha256: str | None = None

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    def sha256_prefix(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)[:HASH_PREFIX]
        return self._sha256

    def close(self) -> None:
        self.model.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def generate(
        self,
        prompt: str,
        *,
        n: int = 4,
        seed: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int = 0,
        strict: bool = True,
        max_tokens: int | None = None,
        seconds: float | None = None,
        continuation: Continuation | None = None,
        on_step: ProgressCallback | None = None,
        instruments: frozenset[int] | None = None,
        grid: GridRequest | None = None,
    ) -> GenerationResult:
        """Generate n outputs for one description; defaults come from the model's own metadata.

        `instruments` (AMT instruments) is a hard mask on the notes; `grid` sets each MIDI file's tempo and meter.
        """
        info = self.info
        params = SamplingParams(
            temperature=info.temperature if temperature is None else temperature,
            top_p=info.top_p if top_p is None else top_p,
            top_k=top_k,
            strict=strict,
            instruments=instruments,
        ).validate()
        _check_counts(n, seconds)
        started = time.perf_counter()
        prefix = continuation.prefix if continuation else []
        prompt_tokens = build_prompt(self.model, prompt)
        _check_prompt_length(len(prompt_tokens), len(prefix), info.train_context_length)
        generation = generate_tokens(
            self.model,
            prompt_tokens,
            n=n,
            params=params,
            seed=seed,
            max_new_tokens=max_tokens,
            prefix_amt=prefix,
            stop=_seconds_stop(seconds),
        )
        interrupted = _drive(generation, on_step)
        outputs = [
            _make_output(i, tokens, continuation, partial=interrupted and not generation.finished[i], grid=grid)
            for i, tokens in enumerate(generation.tokens)
        ]
        return GenerationResult(
            prompt=prompt,
            seed=generation.seed,
            params=params,
            max_tokens=generation.max_new_tokens,
            seconds=seconds,
            outputs=outputs,
            timings=generation.timings,
            model=info,
            threads=self.model.n_threads,
            gpu_layers=self.model.n_gpu_layers,
            continuation=continuation,
            interrupted=interrupted,
            wall_s=time.perf_counter() - started,
            model_sha256=self.sha256_prefix(),
            model_name=self.choice.name,
        )


def _check_counts(n: int, seconds: float | None) -> None:
    if not 1 <= n <= MAX_OUTPUTS:
        raise UserError(f"the number of outputs must be between 1 and {MAX_OUTPUTS}, not {n}")
    if seconds is not None and not seconds > 0:
        raise UserError(Opt("seconds"), f" must be positive, not {seconds}")


def _check_prompt_length(prompt: int, prefix: int, trained: int) -> None:
    """MIDI-LLM saw at most `trained` tokens per sequence; a longer prompt is outside anything it learned."""
    if prompt + prefix >= trained:
        what = f"the prompt is {prompt} tokens" + (f" and the continuation window {prefix}" if prefix else "")
        raise UserError(f"{what}; the model was trained on {trained}-token sequences: shorten the description")


def _seconds_stop(seconds: float | None):
    """Stop a sequence when it samples an arrival time at or past the limit (that time token is dropped later)."""
    if seconds is None:
        return None
    limit = round(seconds * TIME_RESOLUTION)

    def stop(seq: int, tokens: list[int], state: NoteState) -> bool:
        last = tokens[-1]
        return is_time(last) and time_ticks(last) >= limit and state.slot == 1

    return stop


def _drive(generation: Generation, on_step: ProgressCallback | None) -> bool:
    """Run the generation, reporting progress; True when it was interrupted (what exists so far is kept)."""
    progress = [OutputProgress() for _ in range(generation.n)]
    try:
        for event in generation:
            _track(progress, event, generation)
            if on_step is not None:
                on_step(progress, generation.timings)
    except KeyboardInterrupt:
        return True
    return False


def _track(progress: list[OutputProgress], event: StepEvent, generation: Generation) -> None:
    for seq, amt_id in event.tokens:
        p = progress[seq]
        p.tokens += 1
        if is_time(amt_id):
            p.seconds = max(p.seconds, time_seconds(amt_id))
        p.notes = p.tokens // TOKENS_PER_NOTE
        p.done = generation.finished[seq]


def _make_output(
    seq: int, tokens: list[int], continuation: Continuation | None, *, partial: bool, grid: GridRequest | None = None
) -> Output:
    if not partial and len(tokens) % TOKENS_PER_NOTE == 1 and is_time(tokens[-1]):
        tokens = tokens[:-1]  # a --seconds stop: the arrival time past the limit starts no note
    decoded = decode_tokens(tokens)
    notes = continuation.reassemble(decoded.notes) if continuation else None
    midi, summary = decoded_to_midi(decoded, notes=notes, grid=grid)
    rejected = None
    if too_many_simultaneous(tokens):
        rejected = f"more than {MAX_SIMULTANEOUS_NOTES} notes at one onset (the reference rejects such samples)"
    return Output(seq + 1, tokens, midi, summary, partial=partial, rejected=rejected)
