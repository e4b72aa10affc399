"""The Python API of text-to-MIDI: `Generator` loads a model once and turns descriptions into MIDI results.

    from midillm_lite import Generator
    with Generator() as gen:
        result = gen.generate("a gentle chorale for string quartet", n=4, seed=1)
        result.outputs[0].midi.save("chorale.mid")

`generate` streams progress through `on_step`; Ctrl-C (KeyboardInterrupt)
during sampling ends it early and returns what was made, marked partial
(`result.interrupted`), so nothing generated is lost. `check_settings` checks
every argument without a model, so a caller can refuse bad input before
loading one. An output whose tokens decode to no notes is `failed`; one with
more than 64 notes at one onset is `rejected` (as the reference rejects it).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mido

from . import __version__
from .amt.anticipation import Anticipation
from .amt.codec import Decoded, decode_tokens
from .amt.continuation import Continuation
from .amt.grid import GridRequest
from .amt.ops import is_control, is_time, time_seconds, time_ticks
from .amt.transcode import MusicSummary, decoded_to_midi
from .amt.vocab import DRUM_INSTRUMENT, MAX_TIME, TIME_RESOLUTION, TOKENS_PER_NOTE
from .engine import Generation, Model, StepEvent, Timings, build_prompt, cpu_contended, generate_tokens, load_model
from .errors import Opt, UserError, check_range
from .fsutil import sha256_file
from .limits import MAX_NEW_TOKENS, MAX_OUTPUTS, MAX_SECONDS, MIN_NEW_TOKENS
from .modelinfo import ModelInfo
from .models import ModelChoice, find_model
from .sampling import MAX_SIMULTANEOUS_NOTES, NoteState, SamplingParams

HASH_PREFIX = 16
# Why an output's last tokens are not in its token file (stats: trimmed_reason); they start no complete note.
TRIM_SECONDS = "seconds"  # the arrival time that crossed the seconds limit
TRIM_MAX_TOKENS = "max_tokens"  # strict mode: the token budget ran out inside a note
# Strict mode never lets time run backwards, so an output whose onsets reach AMT's last arrival time (99.99 s)
# could only pile every later note onto that one tick: it ends there (the time token that reached it is dropped).
TIME_CEILING_TICKS = MAX_TIME - 1


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
    generated: int = 0  # tokens sampled; `tokens` may end before them (see `trimmed`)
    trimmed: str | None = None  # why the last generated tokens were left out: TRIM_SECONDS or TRIM_MAX_TOKENS
    failed: str | None = None  # why this output holds no music at all (its tokens decode to no notes)

    @property
    def usable(self) -> bool:
        return self.failed is None and self.rejected is None

    degenerate: str | None = None  # why this is not music from a working model (NaN logits, one note repeated)
    new_notes: int | None = None  # infilling/accompaniment: the notes written into the span (the rest are kept)


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
    anticipation: Anticipation | None = None
    interrupted: bool = False
    wall_s: float = 0.0
    model_sha256: str = ""
    model_name: str = ""
    warnings: list[str] = field(default_factory=list)  # settings that give a poor result (setting_warnings)

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
            "anticipation": None if self.anticipation is None else self.anticipation.to_dict(),
            "interrupted": self.interrupted,
            "warnings": self.warnings,
            "outputs": [
                {
                    "index": o.index,
                    "tokens": len(o.tokens),
                    "tokens_generated": o.generated,
                    "tokens_trimmed": o.generated - len(o.tokens),
                    "trimmed_reason": o.trimmed,
                    "partial": o.partial,
                    "failed": o.failed,
                    "rejected": o.rejected,
                    "degenerate": o.degenerate,
                    **({} if o.new_notes is None else {"new_notes": o.new_notes}),
                    **o.summary.to_dict(),
                }
                for o in self.outputs
            ],
            "timings": {
                "prompt_tokens": t.prompt_tokens,
                "queue_s": round(t.queue_s, 4),
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
        convert_progress: Callable[[str, int, int], None] | None = None,
    ):
        # Its name and whether it is the bundled demo; a hub repo or checkpoint folder is converted here, once.
        self.choice: ModelChoice = find_model(model, progress=convert_progress)
        self.path = self.choice.path
        # The stats name the file that was loaded: hashed while llama.cpp reads it (a thread: both mostly wait
        # on I/O or run in C), and refused if it changed meanwhile (an overwritten model generated garbage).
        before = _identity(self.path)
        digest: dict[str, str] = {}
        # A daemon thread: a failed or interrupted load does not wait for the hash to finish.
        hasher = threading.Thread(target=lambda: digest.update(sha256=sha256_file(self.path)), daemon=True)
        hasher.start()
        self.model: Model = load_model(self.path, n_threads=threads, n_gpu_layers=gpu_layers, device=device)
        hasher.join()
        if "sha256" not in digest or _identity(self.path) != before:
            self.model.close()
            raise UserError(f"{self.path} changed on disk while it was loading; load it again once it is complete")
        self._sha256 = digest["sha256"][:HASH_PREFIX]

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    def sha256_prefix(self) -> str:
        """The first hex digits of the sha256 of the model file as it was loaded."""
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
        cancel: threading.Event | None = None,
        anticipation: Anticipation | None = None,
    ) -> GenerationResult:
        """Generate n outputs for one description; defaults come from the model's own metadata.

        `anticipation` (amt.anticipation.prepare_infill / prepare_accompaniment) writes new notes inside its span
        around the notes it keeps, which every output holds unchanged; the span's end ends the music.

        `instruments` (AMT instruments) is a hard mask on the notes; `grid` sets each MIDI file's tempo and meter.
        Setting `cancel` (from any thread) stops sampling at the next step; the result is then partial, as
        after Ctrl-C (`interrupted`), and keeps what was made.
        """
        plan = self.prepare(prompt, n=n, seed=seed, temperature=temperature, top_p=top_p, top_k=top_k,
                            strict=strict, max_tokens=max_tokens, seconds=seconds, continuation=continuation,
                            instruments=instruments, grid=grid, anticipation=anticipation)  # fmt: skip
        interrupted = _drive(plan.generation, on_step, cancel)
        return self.finish(plan, interrupted=interrupted)

    def prepare(
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
        instruments: frozenset[int] | None = None,
        grid: GridRequest | None = None,
        anticipation: Anticipation | None = None,
    ) -> Plan:
        """`generate` up to sampling: every check, the prompt's tokens, and an engine Generation not yet run.

        Whoever runs the Generation (generate's own loop, or batching.BatchScheduler) passes it to `finish`.
        """
        info = self.info
        _check_modes(continuation, anticipation, seconds)
        check_settings(prompt, n=n, temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens,
                       seconds=seconds)  # fmt: skip
        params = SamplingParams(
            temperature=info.temperature if temperature is None else temperature,
            top_p=info.top_p if top_p is None else top_p,
            top_k=top_k,
            strict=strict,
            instruments=instruments,
            events_only=anticipation is not None,
            rest=anticipation is not None,
        ).validate()
        warnings = setting_warnings(n=n, temperature=params.temperature)
        started = time.perf_counter()
        prefix = continuation.prefix if continuation else anticipation.prefix if anticipation else []
        if anticipation is not None:
            seconds_left = anticipation.end_relative / TIME_RESOLUTION
            limit = _time_limit(seconds_left, strict=strict)
            warnings += anticipation.warnings
        else:
            limit = _time_limit(seconds, strict=strict)
        prompt_tokens = build_prompt(self.model, prompt, anticipate=anticipation is not None)
        _check_prompt_length(len(prompt_tokens), len(prefix), info.train_context_length)
        generation = generate_tokens(
            self.model,
            prompt_tokens,
            n=n,
            params=params,
            seed=seed,
            max_new_tokens=max_tokens,
            prefix_amt=prefix,
            stop=_time_stop(limit),
            inject=anticipation.schedule(n) if anticipation else None,
            initial_state=_anticipation_state(anticipation),
        )
        return Plan(prompt, generation, seconds, limit, continuation, anticipation, grid, warnings, started)

    def finish(self, plan: Plan, *, interrupted: bool) -> GenerationResult:
        """The result of a prepared Generation once it has run (to its end, or `interrupted`: partial outputs)."""
        generation, params = plan.generation, plan.generation.params
        outputs = [
            _make_output(
                i,
                tokens,
                plan.continuation,
                partial=interrupted and not generation.finished[i],
                strict=params.strict,
                limit=plan.limit,
                grid=plan.grid,
                anticipation=plan.anticipation,
            )
            for i, tokens in enumerate(generation.tokens)
        ]
        for output, nonfinite in zip(outputs, generation.nonfinite, strict=False):
            output.degenerate = degenerate_reason(_events(output.tokens), nonfinite)
        return GenerationResult(
            prompt=plan.prompt,
            seed=generation.seed,
            params=params,
            max_tokens=generation.max_new_tokens,
            seconds=plan.seconds,
            outputs=outputs,
            timings=generation.timings,
            model=self.info,
            threads=self.model.n_threads,
            gpu_layers=self.model.n_gpu_layers,
            continuation=plan.continuation,
            anticipation=plan.anticipation,
            interrupted=interrupted,
            wall_s=time.perf_counter() - plan.started,
            model_sha256=self.sha256_prefix(),
            model_name=self.choice.name,
            warnings=plan.warnings,
        )


@dataclass
class Plan:
    """A generation prepared by Generator.prepare: the engine Generation to run and what `finish` needs after it."""

    prompt: str
    generation: Generation
    seconds: float | None
    limit: int | None  # the arrival time (ticks) that ends an output (_time_limit)
    continuation: Continuation | None
    anticipation: Anticipation | None
    grid: GridRequest | None
    warnings: list[str]
    started: float  # perf_counter when generate was called, for wall_s


def check_settings(
    prompt: str | None = None,
    *,
    n: int = 4,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int = 0,
    max_tokens: int | None = None,
    seconds: float | None = None,
) -> None:
    """Every check of `generate`'s arguments that needs no model; None means "the model's default"."""
    if prompt is not None and not prompt.strip():
        raise UserError('the description is empty; describe the music, e.g. "a gentle piece for solo piano"')
    check_range("n", n, 1, MAX_OUTPUTS, integer=True)
    SamplingParams(
        temperature=0.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        top_k=top_k,
    ).validate()
    if max_tokens is not None:
        check_range("max_tokens", max_tokens, MIN_NEW_TOKENS, MAX_NEW_TOKENS, integer=True)  # one note at least
    if seconds is not None:
        check_range("seconds", seconds, 0, MAX_SECONDS, lo_open=True)


def setting_warnings(*, n: int, temperature: float) -> list[str]:
    """Settings that are allowed but give a poor result, said in words a Python caller and the CLI share."""
    if n > 1 and temperature <= 0:
        return [f"a temperature of {temperature:g} is greedy decoding: all {n} outputs will be the same"]
    return []


def _identity(path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _check_prompt_length(prompt: int, prefix: int, trained: int) -> None:
    """MIDI-LLM saw at most `trained` tokens per sequence; a longer prompt is outside anything it learned."""
    if prompt + prefix >= trained:
        what = f"the prompt is {prompt} tokens" + (f" and the continuation window {prefix}" if prefix else "")
        raise UserError(f"{what}; the model was trained on {trained}-token sequences: shorten the description")


def _check_modes(continuation: Continuation | None, anticipation: Anticipation | None, seconds: float | None) -> None:
    if anticipation is None:
        return
    if continuation is not None:
        raise UserError("continue a piece (", Opt("continuation"), ") or fill in or accompany one, not both")
    if seconds is not None:
        raise UserError("when filling in or accompanying, the span's end ends the music: leave out ", Opt("seconds"))


def _anticipation_state(anticipation: Anticipation | None) -> NoteState | None:
    """The masks' start: new onsets from the span's start, and the kept instruments counted against the channels."""
    if anticipation is None:
        return None
    kept = anticipation.kept_instruments
    return NoteState(
        last_onset=anticipation.start_relative,
        instruments={i for i in kept if i != DRUM_INSTRUMENT},
        drums=DRUM_INSTRUMENT in kept,
    )


def _events(tokens: list[int]) -> list[int]:
    """The sampled tokens of a sequence: the controls inserted among them left out."""
    return [t for t in tokens if not is_control(t)]


def _time_limit(seconds: float | None, *, strict: bool) -> int | None:
    """The arrival time (ticks) that ends an output: `seconds`, and in strict mode never past TIME_CEILING_TICKS."""
    limit = None if seconds is None else round(seconds * TIME_RESOLUTION)
    if strict:
        limit = TIME_CEILING_TICKS if limit is None else min(limit, TIME_CEILING_TICKS)
    return limit


def _time_stop(limit: int | None):
    """Stop a sequence when it samples an arrival time at or past `limit` (that time token is dropped later)."""
    if limit is None:
        return None

    def stop(seq: int, tokens: list[int], state: NoteState) -> bool:
        last = tokens[-1]
        return is_time(last) and time_ticks(last) >= limit and state.slot == 1

    return stop


def _drive(generation: Generation, on_step: ProgressCallback | None, cancel: threading.Event | None = None) -> bool:
    """Run the generation, reporting progress; True when it was interrupted or cancelled (what exists is kept)."""
    progress = [OutputProgress() for _ in range(generation.n)]
    try:
        for event in generation:
            _track(progress, event, generation)
            if on_step is not None:
                on_step(progress, generation.timings)
            if cancel is not None and cancel.is_set():
                return True
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


MIN_NOTES_TO_JUDGE = 4  # fewer identical notes can be a deliberate repeat


def degenerate_reason(tokens: list[int], nonfinite_steps: int) -> str | None:
    """Why an output is not music a working model makes, or None: NaN/inf logits, or one note over and over."""
    if nonfinite_steps:
        return f"the model's logits were NaN or infinite at {nonfinite_steps} steps: its weights are broken"
    whole = len(tokens) - len(tokens) % TOKENS_PER_NOTE
    notes = {tuple(tokens[i : i + TOKENS_PER_NOTE]) for i in range(0, whole, TOKENS_PER_NOTE)}
    if len(tokens) >= MIN_NOTES_TO_JUDGE * TOKENS_PER_NOTE and len(notes) == 1:
        return f"all {len(tokens) // TOKENS_PER_NOTE} notes are the same note at the same time: the model is broken"
    return None


def _trim(tokens: list[int], *, partial: bool, strict: bool, limit: int | None) -> tuple[list[int], str | None]:
    """The tokens worth writing, and why any were left out: a finished output ends on a whole note.

    An interrupted output keeps everything (nothing made is lost). Free mode keeps an unfinished note for the
    decoder to count, since its triplets need not be aligned.
    """
    extra = len(tokens) % TOKENS_PER_NOTE
    if partial or not extra:
        return tokens, None
    if limit is not None and extra == 1 and is_time(tokens[-1]) and time_ticks(tokens[-1]) >= limit:
        return tokens[:-1], TRIM_SECONDS
    if strict:
        return tokens[:-extra], TRIM_MAX_TOKENS
    return tokens, None


def _make_output(
    seq: int,
    generated: list[int],
    continuation: Continuation | None,
    *,
    partial: bool,
    strict: bool = True,
    limit: int | None = None,
    grid: GridRequest | None = None,
    anticipation: Anticipation | None = None,
) -> Output:
    tokens, trimmed = _trim(generated, partial=partial, strict=strict, limit=limit)
    decoded = decode_tokens(_events(tokens))
    notes = continuation.reassemble(decoded.notes) if continuation else None
    if anticipation is not None:
        notes, repairs = anticipation.reassemble(decoded.notes)
        decoded.repairs.update(repairs)
    midi, summary = decoded_to_midi(decoded, notes=notes, grid=grid)
    failed = _failure(decoded, len(tokens))
    rejected = None if failed else _rejection(decoded)
    output = Output(seq + 1, tokens, midi, summary, partial=partial, rejected=rejected, failed=failed,
                    generated=len(generated), trimmed=trimmed)  # fmt: skip
    if anticipation is not None:
        output.new_notes = len(notes) - len(anticipation.kept)
    return output


def _failure(decoded: Decoded, n_tokens: int) -> str | None:
    """Why the generated tokens hold no music (the summary's repairs say what was skipped); None with notes."""
    if decoded.notes:
        return None
    return f"its {n_tokens} tokens decode to no notes" if n_tokens else "no tokens were generated"


def _rejection(decoded: Decoded) -> str | None:
    """The reference's test, on the notes the file holds: more than 64 notes starting at one onset."""
    busiest = busiest_onset(decoded)
    if busiest <= MAX_SIMULTANEOUS_NOTES:
        return None
    return f"{busiest} notes at one onset (the reference rejects more than {MAX_SIMULTANEOUS_NOTES})"


def busiest_onset(decoded: Decoded) -> int:
    """The most generated notes that share one onset (0 without notes)."""
    return max(Counter(note.onset for note in decoded.notes).values(), default=0)
