"""Continuous batching: many callers' generations share one llama.cpp context and its decode steps.

    with Generator() as gen, BatchScheduler(gen, slots=4) as scheduler:
        # from any number of threads at once:
        result = scheduler.generate("a jazz trio", n=1, seed=1)

llama-server's model. One decode thread owns a context with `slots` sequence
ids. A request (one `generate` call) waits in a FIFO queue until enough slots
and KV cells are free; then its prompt is evaluated into one slot, shared with
its other n-1 slots (llama_memory_seq_cp, as engine.Generation shares it), its
first tokens are sampled from the prompt's logits, and its sequences join the
running batch at the next step: one llama_decode carries one feed per live
sequence of every request. A sequence leaves when it finishes (stop, max tokens)
or its request is cancelled; its cells are removed (llama_memory_seq_rm) and its
slot is reused.

Each request is an engine.Generation prepared by Generator.prepare and finished
by Generator.finish, so it samples with its own per-sequence RNGs and note states
and returns the GenerationResult Generator.generate would: the same seed gives
the same tokens, as far as llama.cpp's arithmetic allows (a batch of other
requests' tokens can round differently; BENCHMARKS.md, "Continuous batching").

A prompt is evaluated in decodes of its own, exactly as Generator.generate
evaluates it (never mixed into a step's batch), for that reason.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .engine import CTX_ROUND, StepEvent, _decode_prompt, feed_batches, round_up
from .errors import Opt, UserError, check_range
from .limits import MAX_QUEUE, MAX_SLOTS

if TYPE_CHECKING:
    from .engine import Generation, InjectFn
    from .generate import GenerationResult, Generator, OutputProgress, Plan, ProgressCallback

log = logging.getLogger(__name__)

DEFAULT_SLOTS = 4  # on 2 CPU cores aggregate tokens/s stops growing near 4 sequences (BENCHMARKS.md, "Generation")
DEFAULT_MAX_QUEUE = 64
# Room per slot for the prompt and a continuation window, on top of the model's default new tokens, when sizing
# the cache. A request needing more cells still runs once enough are free (admission counts cells, not slots).
PROMPT_ROOM = 256
EXIT_BUSY = 75  # sysexits.h EX_TEMPFAIL: try again later


class QueueFull(UserError):
    """The scheduler's queue holds `max_queue` waiting requests already (a server answers 429)."""

    exit_code = EXIT_BUSY


class SchedulerClosed(UserError):
    """generate() after close() began (a server answers 503)."""

    exit_code = EXIT_BUSY


@dataclass
class SchedulerStats:
    """Where the decode thread's time went, over every step it ran (idle time excluded)."""

    steps: int = 0  # batched decodes
    requests: int = 0  # admitted
    generated: int = 0  # tokens sampled, all requests
    busy_s: float = 0.0  # wall time of the loop while it had work: admissions, decodes, sampling, bookkeeping
    decode_s: float = 0.0  # inside llama_decode: steps and prompts
    prompt_s: float = 0.0  # of which prompts

    @property
    def overhead_fraction(self) -> float:
        """Share of the busy time outside llama_decode: sampling and Python."""
        return 1.0 - self.decode_s / self.busy_s if self.busy_s > 0 else 0.0


@dataclass(eq=False)
class _Request:
    plan: Plan
    cancel: threading.Event | None
    submitted: float
    stopping: bool = False  # cancelled from inside: the caller's Ctrl-C or failed callback, or close()
    # Its caller wakes after every step only to call on_step: a woken thread takes the GIL from the decode loop.
    wants_progress: bool = False
    slots: list[int] = field(default_factory=list)  # llama sequence id of each of its sequences
    held: set[int] = field(default_factory=set)  # those slots not yet given back
    prompt_length: int = 0  # model ids, continuation window included: its sequences' positions start there
    live: list[int] = field(default_factory=list)  # its sequences still decoding
    cells: int = 0  # KV cells reserved (unified cache)
    progress: list[OutputProgress] = field(default_factory=list)
    changed: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    interrupted: bool = False
    error: BaseException | None = None

    @property
    def generation(self) -> Generation:
        return self.plan.generation

    @property
    def cancelled(self) -> bool:
        return self.stopping or (self.cancel is not None and self.cancel.is_set())


class BatchScheduler:
    """A decode thread that runs every caller's generation in one shared batch; `generate` is thread-safe.

    `slots`: sequences decoded at once (a request of n outputs takes n). `max_queue`: requests waiting for slots
    beyond which `generate` raises QueueFull. `context`: KV cells in all (default: slots x the model's default
    new tokens plus PROMPT_ROOM). Close it (or leave its `with` block) before closing the Generator.
    """

    def __init__(
        self, generator: Generator, *, slots: int = DEFAULT_SLOTS, max_queue: int = DEFAULT_MAX_QUEUE,
        context: int | None = None,
    ):  # fmt: skip
        check_range("slots", slots, 1, MAX_SLOTS, integer=True)
        check_range("max_queue", max_queue, 1, MAX_QUEUE, integer=True)
        model = generator.model
        per_slot = min(model.n_ctx_limit, model.info.max_new_tokens + PROMPT_ROOM)
        n_ctx = round_up(slots * per_slot if context is None else context, CTX_ROUND * slots)
        check_range("context", n_ctx, CTX_ROUND, slots * model.n_ctx_limit, integer=True)
        self.generator = generator
        self.slots = slots
        self.max_queue = max_queue
        self.context = n_ctx
        self._unified = model.kv_unified
        # A split cache gives each sequence an equal stream; a unified one shares all cells (and prompts).
        self._cells_per_seq = n_ctx if self._unified else n_ctx // slots
        self._ctx = model.own_context(slots, n_ctx, max(self._cells_per_seq, slots))
        self._free = list(range(slots))
        self._cells_used = 0
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._drain = False
        self._stats = SchedulerStats()
        self._thread = threading.Thread(target=self._loop, name="midillm-batch", daemon=True)
        self._thread.start()

    # --- introspection (a server's status page, its 429 decision) --------------------------------------------
    @property
    def active(self) -> int:
        """Sequences decoding now."""
        with self._lock:
            return self.slots - len(self._free)

    @property
    def running(self) -> int:
        """Requests decoding now."""
        with self._lock:
            return len(self._running)

    @property
    def waiting(self) -> int:
        """Requests queued for slots."""
        with self._lock:
            return len(self._waiting)

    @property
    def stats(self) -> SchedulerStats:
        with self._lock:
            return replace(self._stats)

    @property
    def closed(self) -> bool:
        return self._closing

    # --- callers -------------------------------------------------------------------------------------------------
    def generate(
        self,
        prompt: str,
        *,
        cancel: threading.Event | None = None,
        on_step: ProgressCallback | None = None,
        inject: InjectFn | None = None,
        **kwargs: Any,
    ) -> GenerationResult:
        """Generator.generate's keywords and result, decoded in the shared batch; blocks until this request ends.

        `on_step(progress, timings)` runs in the calling thread with the latest progress (steps are coalesced
        when it is slower than the batch). `cancel` (set from any thread) ends the request at the next step with
        a partial result, as does Ctrl-C in the calling thread; a request cancelled before it started has no
        outputs (nothing was made). `inject` (engine.InjectFn) adds ids after each sampled token, decoded with it
        at the next step. Raises QueueFull when `max_queue` requests wait already, SchedulerClosed after close().
        """
        plan = self.generator.prepare(prompt, **kwargs)
        if inject is not None:
            plan.generation.inject = inject
        request = _Request(plan, cancel, time.perf_counter(), wants_progress=on_step is not None)
        self._check_fits(request)
        with self._wake:
            if self._closing:
                raise SchedulerClosed("the batch scheduler is closed; no new generations start")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} generations are waiting already (max_queue); try again later")
            self._waiting.append(request)
            self._wake.notify()
        try:
            self._follow(request, on_step)
        except KeyboardInterrupt:
            self._abandon(request)  # as Generator.generate after Ctrl-C: the partial result is returned
        except BaseException:
            self._abandon(request)  # on_step raised: its sequences stop, the error is the caller's
            raise
        if request.error is not None:
            raise request.error
        return self.generator.finish(plan, interrupted=request.interrupted)

    def _check_fits(self, request: _Request) -> None:
        gen = request.generation
        if gen.n > self.slots:
            raise UserError(Opt("n"), f" is {gen.n} but the batch scheduler decodes {self.slots} sequences at once "
                            "(slots); ask for fewer outputs or make more slots")  # fmt: skip
        if _cells_needed(request, self._unified) > self._cells_per_seq:
            raise UserError(f"prompt and new tokens need {_cells_needed(request, self._unified)} KV cells but the "
                            f"batch scheduler holds {self._cells_per_seq}; lower ", Opt("max_tokens"),
                            " or n, or give the scheduler a larger context")  # fmt: skip

    def _follow(self, request: _Request, on_step: ProgressCallback | None) -> None:
        """Wait for the request's end in the caller's thread, calling on_step as progress comes."""
        seen = -1
        while True:
            request.changed.wait()
            request.changed.clear()
            with self._lock:
                done, timings = request.done, copy.copy(request.generation.timings)
                progress = [replace(p) for p in request.progress]
            if on_step is not None and progress and timings.steps != seen:
                seen = timings.steps
                on_step(progress, timings)
            if done:
                return

    def _abandon(self, request: _Request) -> None:
        """Stop a request whose caller is leaving, and wait (briefly: one step) until its sequences are out."""
        with self._wake:
            request.stopping = True
            self._wake.notify()
        while True:
            try:
                while not request.done:
                    request.changed.wait()
                    request.changed.clear()
                return
            except KeyboardInterrupt:  # a second Ctrl-C: the partial result is one step away, keep waiting
                continue

    def close(self, *, drain: bool = False) -> None:
        """Stop accepting requests; cancel what runs and waits (their callers get partial results), or with
        `drain` let it all finish; then free the context. Idempotent."""
        with self._wake:
            first = not self._closing
            self._closing = True
            self._drain = self._drain or drain
            self._wake.notify()
        self._thread.join()
        if first:
            self.generator.model.release_context(self._ctx)

    def __enter__(self) -> BatchScheduler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the decode thread ---------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self._running or self._waiting or self._closing):
                    self._wake.wait()
                if self._closing and not self._drain:
                    for request in (*self._running, *self._waiting):
                        request.stopping = True
                if self._closing and not (self._running or self._waiting):
                    return
                dropped = self._drop_cancelled_waiting()
                admitted = self._take_admissible()
            for request in dropped:
                self._complete(request, interrupted=True)
            try:
                self._iteration(admitted)
            except Exception as exc:  # a bug or a failed decode: those requests end, the thread lives on
                log.exception("batch step failed")
                self._fail_all(exc)

    def _drop_cancelled_waiting(self) -> list[_Request]:
        dropped = [r for r in self._waiting if r.cancelled]
        for request in dropped:
            self._waiting.remove(request)
        return dropped

    def _take_admissible(self) -> list[_Request]:
        """Queued requests that fit now, in FIFO order: the first that does not fit holds back those after it."""
        admitted = []
        while self._waiting:
            request = self._waiting[0]
            cells = _cells_needed(request, self._unified) if self._unified else 0
            if request.generation.n > len(self._free) or self._cells_used + cells > self.context:
                break
            self._waiting.popleft()
            request.slots = [self._free.pop(0) for _ in range(request.generation.n)]
            request.held = set(request.slots)
            request.cells = cells
            self._cells_used += cells
            admitted.append(request)
        return admitted

    def _iteration(self, admitted: list[_Request]) -> None:
        start = time.perf_counter()
        prompt_s = sum(self._admit(request) for request in admitted)
        self._retire_cancelled()
        running = [r for r in self._running if r.live]
        if not running:
            self._account(start, prompt_s, 0.0, 0, stepped=False)
            return
        feeds = [(r.slots[i], r.prompt_length, *r.generation.unfed(i)) for r in running for i in r.live]
        heads, tails = feed_batches(self.generator.model, feeds)
        rows_at = list(range(len(tails)))
        cpu_start, decode_start = time.process_time(), time.perf_counter()
        try:
            self._ctx.decode_feeds(heads, tails)
        except Exception as exc:
            self._fail_all(exc)
            return
        decode_s = time.perf_counter() - decode_start
        decode_cpu_s = time.process_time() - cpu_start
        generated, at = 0, 0
        for request in running:
            n_live = len(request.live)
            # A request admitted in this iteration already counted its prompt; the others waited for every prompt.
            since, stalled = (decode_start, 0.0) if request in admitted else (start, prompt_s)
            generated += self._sample(request, rows_at[at : at + n_live], since, stalled, decode_s, decode_cpu_s)
            at += n_live
        self._account(start, prompt_s, decode_s, generated, stepped=True)

    def _account(self, start: float, prompt_s: float, decode_s: float, generated: int, *, stepped: bool) -> None:
        with self._lock:
            s = self._stats
            s.busy_s += time.perf_counter() - start
            s.decode_s += prompt_s + decode_s
            s.prompt_s += prompt_s
            s.steps += stepped
            s.generated += generated

    def _admit(self, request: _Request) -> float:
        """Evaluate the prompt and sample step 0 (as Generation does); returns the prompt's time in llama_decode."""
        gen = request.generation
        prompt = gen.full_prompt
        gen.begin()
        t = gen.timings
        t.queue_s = time.perf_counter() - request.submitted
        with self._lock:
            request.progress = [_new_progress() for _ in range(gen.n)]
            self._running.append(request)
            self._stats.requests += 1
        start = time.perf_counter()
        try:
            first = request.slots[0]
            last = _decode_prompt(self.generator.model, self._ctx, prompt, first)
            for slot in request.slots[1:]:
                self._ctx.seq_cp(first, slot)
            t.prompt_s = time.perf_counter() - start
            request.prompt_length = len(prompt)
            request.live = [i for i in range(gen.n) if not gen.finished[i]]
            if request.live:
                rows_at = [last] * len(request.live)  # every sequence samples its first token from the prompt
                step_start = time.perf_counter()
                generated = self._sample(request, rows_at, step_start, 0.0, 0.0, 0.0)
                with self._lock:
                    self._stats.generated += generated
            else:
                self._complete(request, interrupted=False)
        except Exception as exc:
            self._fail(request, exc)
        return t.prompt_s

    def _sample(self, request: _Request, rows_at: list[int], step_start: float, prompt_s: float, decode_s: float,
                decode_cpu_s: float) -> int:  # fmt: skip
        """One step of one request: sample each live sequence from its row; tokens sampled (0 if it failed)."""
        gen, t = request.generation, request.generation.timings
        sample_start = time.perf_counter()
        picked = []
        try:
            for i, row_at in zip(request.live, rows_at, strict=True):
                picked.append((i, gen.advance(i, self._ctx.midi_logits(row_at))))
        except Exception as exc:  # its stop or inject hook, or a bug: this request ends, not the batch
            self._fail(request, exc)
            return 0
        now = time.perf_counter()
        t.decode_s += prompt_s + decode_s  # other requests' prompts stalled this one too, inside llama_decode
        t.decode_cpu_s += decode_cpu_s
        t.sample_s += now - sample_start
        t.steps_s += now - step_start
        t.generated += len(picked)
        event = StepEvent(t.steps, picked, decode_s, now - sample_start)
        t.steps += 1
        with self._lock:
            _track(request.progress, event, gen)
        for i in [i for i in request.live if gen.finished[i]]:
            self._release(request, i)
        if not request.live:
            self._complete(request, interrupted=False)
        elif request.wants_progress:
            request.changed.set()
        return len(picked)

    def _retire_cancelled(self) -> None:
        for request in [r for r in self._running if r.cancelled]:
            request.live.clear()
            self._complete(request, interrupted=True)

    def _release(self, request: _Request, seq: int) -> None:
        """Sequence `seq` of `request` leaves the batch: its cells are removed and its slot is free again."""
        request.live.remove(seq)
        self._give_back(request, request.slots[seq])

    def _give_back(self, request: _Request, slot: int) -> None:
        request.held.discard(slot)
        self._ctx.seq_rm(slot)
        with self._lock:
            self._free.append(slot)
            self._free.sort()

    def _complete(self, request: _Request, *, interrupted: bool) -> None:
        for slot in sorted(request.held):  # cancelled, failed, or finished at once
            self._give_back(request, slot)
        with self._lock:
            if request in self._running:
                self._running.remove(request)
            self._cells_used -= request.cells
            request.cells = 0
            request.interrupted = interrupted
            request.done = True
        request.changed.set()

    def _fail(self, request: _Request, exc: BaseException) -> None:
        log.debug("generation failed in the batch: %s", exc)
        request.live.clear()
        request.error = exc
        self._complete(request, interrupted=True)

    def _fail_all(self, exc: BaseException) -> None:
        """A batched decode failed: every running request ends with the error and the cache starts empty."""
        self._ctx.clear()
        for request in list(self._running):
            request.live.clear()
            request.held.clear()  # the cleared cache holds none of their cells
            request.error = exc
            self._complete(request, interrupted=True)
        with self._lock:
            self._free = list(range(self.slots))
            self._cells_used = 0


def _cells_needed(request: _Request, unified: bool) -> int:
    """KV cells a request can fill: its prompt once (shared) plus n sequences of new tokens; per sequence if split."""
    gen = request.generation
    prompt = len(gen.prompt_tokens) + len(gen.prefix_amt)
    return prompt + gen.n * gen.max_new_tokens if unified else prompt + gen.max_new_tokens


def _new_progress() -> OutputProgress:
    from .generate import OutputProgress

    return OutputProgress()


def _track(progress: list[OutputProgress], event: StepEvent, generation: Generation) -> None:
    from .generate import _track as track

    track(progress, event, generation)
