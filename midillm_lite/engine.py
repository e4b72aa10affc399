"""llama.cpp for MIDI-LLM: loading a GGUF, building the prompt, and batched decoding of n sequences from one prompt.

Uses llama-cpp-python's low-level API so one context can hold n sequences:
the prompt is evaluated once for sequence 0, its KV cells are shared with the
others (`llama_memory_seq_cp` on a unified cache), and each step is a single
`llama_decode` carrying one token per live sequence. Only the MIDI slice of
each logits row is read (a numpy view over llama.cpp's buffer, no copy);
sampling.py picks the tokens. A midi-head model (layouts.py) takes its
prompt text as input vectors from its companion and works in AMT ids;
everything else is the same.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import sampling
from .amt import vocab
from .companion import TextCompanion
from .errors import Opt, UserError, check_range
from .layouts import LAYOUT_MIDI_HEAD
from .limits import MAX_NEW_TOKENS, MAX_SEED, MAX_THREADS
from .llamacpp import (
    VERBOSE,
    default_threads,
    gpu_layers,
    init_backend,
    interrupt_pending,
    llama_cpp,
    signals_deferred,
)
from .modelinfo import ModelInfo, read_model_info
from .sampling import NoteState, SamplingParams

log = logging.getLogger(__name__)

LOAD_MODE_READ = 0  # llama_load_mode NONE: read the weights into memory (1 would memory-map them)
LAZY_MODE_OFF = 0  # llama_lazy_mode OFF: read every tensor at load, none on demand
CTX_ROUND = 256  # llama.cpp pads context sizes to this anyway
MIN_UBATCH = 512  # llama.cpp's default micro-batch
FLOAT_BYTES = ctypes.sizeof(ctypes.c_float)
_MidiRow = ctypes.c_float * vocab.MIDI_VOCAB_SIZE

# Below this share of its threads' time on a CPU during the decodes, other programs held the cores: every barrier in
# a decode waits for the slowest thread, so tokens/s falls far below the machine's (BENCHMARKS.md, "Threads").
CONTENDED_CPU_SHARE = 0.5
MIN_JUDGED_DECODE_S = 1.0  # shorter generations are too few decodes to judge
# (seq index, tokens generated so far, its note state) -> True to finish that sequence.
StopPredicate = Callable[[int, list[int], NoteState], bool]
# Tokens a caller adds to one sequence after each sampled token (AMT anticipation's control triplets, issue 16):
# inject(seq, tokens_so_far, state) -> AMT ids appended to that sequence (and to its state) and decoded with it at
# the next step; called unless the sampled token finished the sequence. The model never samples them (the masks
# exclude controls). The batch scheduler (issue 17) takes the same hook.
InjectFn = Callable[[int, list[int], NoteState], Sequence[int]]


# --- model ---------------------------------------------------------------------------------
class Model:
    """A loaded MIDI-LLM GGUF: its ModelInfo, the llama.cpp model and vocabulary, and one reusable context."""

    def __init__(self, info: ModelInfo, handle, n_threads: int, n_gpu_layers: int, n_ctx: int | None, kv_unified: bool):
        self.info = info
        self.kv_unified = kv_unified
        self.n_threads = n_threads
        self.n_gpu_layers = n_gpu_layers
        self.n_ctx_limit = n_ctx or info.context_length or info.train_context_length
        self._handle = handle
        # midi-head: the model's ids are AMT ids; the prompt's text goes in as vectors from the companion.
        self.companion = (
            TextCompanion(Path(info.companion), info.embedding_length) if info.layout == LAYOUT_MIDI_HEAD else None
        )
        self.midi_base = 0 if self.companion else vocab.TEXT_VOCAB_SIZE
        self._vocab = self.companion.vocab if self.companion else llama_cpp.llama_model_get_vocab(handle)
        self._context: _Context | None = None
        # Contexts must go before their model, also when both are garbage-collected together.
        self._live_contexts: list[_Context] = []
        self._finalizer = weakref.finalize(self, _free_model, handle, self._live_contexts, self.companion)

    @property
    def path(self) -> Path:
        return self.info.path

    def tokenize(self, text: str) -> list[int]:
        """Plain-text tokenization (no BOS, special-token text stays text)."""
        raw = text.encode("utf-8")
        capacity = len(raw) + 8
        for _ in range(2):
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, raw, len(raw), buf, capacity, False, False)
            if n >= 0:
                return list(buf[:n])
            capacity = -n  # llama.cpp says how much room it needs
        raise RuntimeError(f"llama_tokenize failed for {len(raw)} bytes")

    def token_id(self, amt_id: int) -> int:
        """The model's id for an AMT id (full-vocabulary id for a standard file, the AMT id for midi-head)."""
        return self.midi_base + amt_id

    def bos_token(self) -> int:
        bos = llama_cpp.llama_vocab_bos(self._vocab)
        if bos < 0:
            raise UserError(f"{self.path} has no beginning-of-text token; reconvert it with `midillm-lite convert`")
        return bos

    def context(self, n_seq: int, n_ctx: int, n_batch: int) -> _Context:
        """A cleared context of exactly this shape; reused when the shape repeats, so reruns are bit-identical."""
        if not self._finalizer.alive:
            raise RuntimeError(f"{self.path} was closed; load it again")
        shape = (n_seq, n_ctx, n_batch, self.kv_unified)
        if self._context is not None and self._context.shape == shape:
            self._context.clear()
            return self._context
        if self._context is not None:
            self._context.close()
            self._live_contexts.remove(self._context)
            self._context = None
        self._context = self.own_context(*shape[:3])
        return self._context

    def own_context(self, n_seq: int, n_ctx: int, n_batch: int) -> _Context:
        """A new context that `context()` never reuses or closes (a batch scheduler's); freed before the model.

        Its owner closes it (`release_context`) and must stop using it before the model is closed.
        """
        if not self._finalizer.alive:
            raise RuntimeError(f"{self.path} was closed; load it again")
        context = _Context(self, n_seq, n_ctx, n_batch, self.kv_unified)
        self._live_contexts.append(context)
        return context

    def release_context(self, context: _Context) -> None:
        """Free a context from `own_context` now."""
        context.close()
        if context in self._live_contexts:
            self._live_contexts.remove(context)

    def close(self) -> None:
        """Free the context and the model; the object is unusable afterwards."""
        self._context = None
        self._finalizer()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _free_model(handle, contexts: list[_Context], companion: TextCompanion | None) -> None:
    for context in contexts:
        context.close()
    contexts.clear()
    _free_handle(handle)
    if companion is not None:
        companion.close()


def load_model(
    path: str | os.PathLike[str],
    *,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    device: str = "auto",
    kv_unified: bool = True,
) -> Model:
    """Check that `path` is a MIDI-LLM GGUF, then load it with llama.cpp.

    n_ctx caps prompt + continuation + new tokens per sequence (default: the
    model's context length); contexts themselves are sized per generation.
    n_gpu_layers overrides what `device` implies ("auto": all layers on a GPU
    build, else none). kv_unified=False gives each sequence its own cache
    stream: the prompt is copied n times, but attention no longer spans the
    other sequences' cells (cheaper for many long sequences).
    """
    info = read_model_info(path)
    layers = gpu_layers(device, n_gpu_layers)
    threads = default_threads() if n_threads is None else n_threads
    check_range("threads", threads, 1, MAX_THREADS, integer=True)  # the count recorded in the stats is this one
    if n_ctx is not None and n_ctx < 1:
        raise UserError(f"context size must be positive, not {n_ctx}")
    init_backend()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = layers
    # Read the weights in instead of memory-mapping them: a model file truncated or rewritten in place while
    # loaded would otherwise kill the process with SIGBUS. The CPU backend repacks most matrices into its own
    # buffers anyway, so the mapping saves little memory.
    params.load_mode = LOAD_MODE_READ
    params.lazy_mode = LAZY_MODE_OFF
    # A Ctrl-C during the load ends it at the next tensor instead of after the whole file.
    params.progress_callback = _load_progress
    handle = None
    try:
        with signals_deferred():
            handle = llama_cpp.llama_model_load_from_file(str(info.path).encode(), params)
    except BaseException:
        if handle:
            _free_handle(handle)
        raise
    if not handle:
        raise UserError(f"llama.cpp could not load {info.path}; its log says why (", VERBOSE, ")")
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(handle))
    expected = vocab.MIDI_VOCAB_SIZE if info.layout == LAYOUT_MIDI_HEAD else vocab.FULL_VOCAB_SIZE
    if n_vocab != expected:
        _free_handle(handle)
        raise UserError(f"{info.path} has {n_vocab} tokens in llama.cpp's eyes, not {expected}")
    log.debug("loaded %s: %d threads, %d GPU layers", info.path, threads, layers)
    try:
        with signals_deferred():
            return Model(info, handle, threads, layers, n_ctx, kv_unified)
    except BaseException:
        _free_handle(handle)  # e.g. a broken companion: nothing may leak
        raise


@llama_cpp.llama_progress_callback
def _load_progress(progress: float, user_data) -> bool:  # a ctypes callback object, alive as long as the module
    return not interrupt_pending()  # False aborts the load


def _free_handle(handle) -> None:
    with signals_deferred():
        llama_cpp.llama_model_free(handle)


# --- context -------------------------------------------------------------------------------
class _Context:
    """One llama.cpp context plus a reusable batch; sequences 0..n_seq-1."""

    def __init__(self, model: Model, n_seq: int, n_ctx: int, n_batch: int, unified: bool):
        self.shape = (n_seq, n_ctx, n_batch, unified)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = min(n_batch, MIN_UBATCH)
        params.n_seq_max = n_seq
        # Unified: the prompt's cells are shared, not copied, but every sequence's attention spans all cells.
        params.kv_unified = unified
        params.n_threads = params.n_threads_batch = model.n_threads
        params.no_perf = True
        with signals_deferred():
            self.ctx = llama_cpp.llama_init_from_model(model._handle, params)
        if not self.ctx:
            raise UserError(
                f"llama.cpp could not create a {n_ctx}-token context for {n_seq} sequences (out of memory?)"
            )
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.midi_base = model.midi_base
        # A midi-head model's prompt text goes in as vectors: a second batch that carries embeddings.
        width = model.info.embedding_length if model.companion else 0
        self.embd_batch = llama_cpp.llama_batch_init(n_batch, width, 1) if width else None
        self._finalizer = weakref.finalize(self, _free_context, self.ctx, self.batch, self.embd_batch)

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.memory, True)

    def close(self) -> None:
        self._finalizer()

    def decode(self, items: Sequence[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, seq, wants logits) items, in this order in the batch."""
        batch = self.batch
        for i, (token, pos, seq, logits) in enumerate(items):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(items)
        with signals_deferred():
            code = llama_cpp.llama_decode(self.ctx, batch)
        self._check(code)

    @staticmethod
    def _check(code: int) -> None:
        if code == 1:
            raise UserError(
                "llama.cpp ran out of context space; lower ", Opt("max_tokens"), " or the number of outputs"
            )
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code}")

    def decode_vectors(self, vectors: np.ndarray, start: int, seq: int = 0) -> None:
        """One llama_decode of input vectors (rows) at positions start.., sequence `seq`, no logits."""
        batch = self.embd_batch
        assert batch is not None, "only a midi-head model takes input vectors"
        n, width = vectors.shape
        ctypes.memmove(batch.embd, np.ascontiguousarray(vectors, dtype=np.float32).ctypes.data, n * width * FLOAT_BYTES)
        for i in range(n):
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = False
        batch.n_tokens = n
        with signals_deferred():
            code = llama_cpp.llama_decode(self.ctx, batch)
        self._check(code)

    def midi_logits(self, i: int) -> np.ndarray:
        """A float32 view of the MIDI slice of batch item i's logits; valid until the next decode."""
        row = llama_cpp.llama_get_logits_ith(self.ctx, i)
        if not row:
            raise RuntimeError(f"llama.cpp returned no logits for batch item {i}")
        address = ctypes.addressof(row.contents) + self.midi_base * FLOAT_BYTES
        return np.ctypeslib.as_array(_MidiRow.from_address(address))

    def share_prefix(self, n_seq: int) -> None:
        """Give sequences 1..n_seq-1 sequence 0's cells (the whole prompt)."""
        for seq in range(1, n_seq):
            self.seq_cp(0, seq)

    def seq_cp(self, src: int, dst: int) -> None:
        """Sequence `dst` also owns every cell of `src` (a unified cache shares them; split ones copy)."""
        llama_cpp.llama_memory_seq_cp(self.memory, src, dst, -1, -1)

    def seq_rm(self, seq: int) -> None:
        """Forget sequence `seq`: its cells are free once no other sequence shares them, so the id can be reused."""
        if not llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1):
            raise RuntimeError(f"llama.cpp could not remove sequence {seq} from its cache")

    def decode_feeds(self, heads: Sequence[Item], tails: Sequence[Item]) -> None:
        """`feed_batches`' decodes: the heads (injected tokens, no logits) a batch at a time, then the tails."""
        n_batch = self.shape[2]
        for i in range(0, len(heads), n_batch):
            self.decode(heads[i : i + n_batch])
        self.decode(tails)


def _free_context(ctx, batch, embd_batch) -> None:
    with signals_deferred():  # ~llama_context logs
        llama_cpp.llama_batch_free(batch)
        if embd_batch is not None:
            llama_cpp.llama_batch_free(embd_batch)
        llama_cpp.llama_free(ctx)


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


# --- prompt --------------------------------------------------------------------------------
def build_prompt(model: Model, description: str, *, anticipate: bool = False) -> list[int]:
    """[BOS] + tokens of system prompt + description + " " + [AUTOREGRESS], all taken from the GGUF.

    anticipate=True ends it with ANTICIPATE instead: AMT's mode for sequences that carry controls.

    The description is tokenized as text, so typing "<|eot_id|>" cannot inject a control token.
    """
    if not description or not description.strip():
        raise UserError('the description is empty; describe the music, e.g. "a cheerful piano melody"')
    if any(0xD800 <= ord(c) < 0xE000 for c in description):  # how Python carries bytes that were not UTF-8
        raise UserError("the description holds bytes that are not UTF-8 (lone surrogates); decode it with "
                        "errors='replace' first")  # fmt: skip
    info = model.info
    mode = vocab.MIDI_ANTICIPATE_ID if anticipate else info.autoregress_token_id
    tokens = [model.bos_token(), *model.tokenize(info.system_prompt + description + " "), mode]
    if len(tokens) >= model.n_ctx_limit:
        raise UserError(
            f"the prompt is {len(tokens)} tokens but the context holds {model.n_ctx_limit}; shorten the description"
        )
    return tokens


# --- generation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StepEvent:
    """One decoding step: the token each live sequence got, and where the time went."""

    step: int
    tokens: list[tuple[int, int]]  # (sequence index, AMT id)
    decode_s: float  # inside llama_decode (0 for step 0, which reuses the prompt's logits)
    sample_s: float


@dataclass
class Timings:
    prompt_tokens: int = 0
    prompt_s: float = 0.0
    decode_s: float = 0.0  # inside llama_decode, generation steps only
    decode_cpu_s: float = 0.0  # CPU time of the whole process (all llama.cpp threads) during those decodes
    sample_s: float = 0.0  # masks + sampling + state updates
    steps_s: float = 0.0  # wall time of the generation steps, everything included
    steps: int = 0
    generated: int = 0  # tokens over all sequences
    queue_s: float = 0.0  # waiting for a batch scheduler's slots before the prompt was evaluated

    @property
    def overhead_fraction(self) -> float:
        """Share of step time spent outside llama_decode (sampling and Python)."""
        return 1.0 - self.decode_s / self.steps_s if self.steps_s > 0 else 0.0

    def cpu_share(self, threads: int) -> float | None:
        """CPU time the process got during the decodes / (their wall time x threads); None if too short to judge."""
        if self.decode_s < MIN_JUDGED_DECODE_S or threads < 1:
            return None
        return self.decode_cpu_s / (self.decode_s * threads)


def cpu_contended(share: float | None) -> bool:
    """True when llama.cpp's threads got so little CPU that other programs must have been using it."""
    return share is not None and share < CONTENDED_CPU_SHARE


@dataclass
class Generation:
    """n sequences decoded from one prompt. Iterate it for StepEvents; tokens accumulate here as they come.

    Interrupting the iteration (e.g. KeyboardInterrupt) leaves everything generated so far in `tokens`.
    Iterating owns a context of its own; a batch scheduler (batching.py) instead drives `begin`, `advance`
    and `unfed` itself, for several Generations in one context.
    """

    model: Model = field(repr=False)
    prompt_tokens: list[int]
    n: int
    params: SamplingParams
    seed: int
    max_new_tokens: int
    prefix_amt: tuple[int, ...] = ()
    stop: StopPredicate | None = None
    inject: InjectFn | None = None
    initial_state: NoteState | None = None  # what each sequence's masks start from before the prefix
    tokens: list[list[int]] = field(default_factory=list)  # per sequence, AMT ids after the prefix (injected too)
    finished: list[bool] = field(default_factory=list)
    nonfinite: list[int] = field(default_factory=list)  # per sequence, steps whose logits held NaN or inf
    timings: Timings = field(default_factory=Timings)
    _fed: list[int] = field(default_factory=list, repr=False)  # per sequence, tokens already in the KV cache
    states: list[NoteState] = field(default_factory=list, repr=False)  # per sequence, for the strict masks
    rngs: list[np.random.Generator] = field(default_factory=list, repr=False)

    def __iter__(self) -> Iterator[StepEvent]:
        return self._run()

    def run(self) -> Generation:
        """Decode to the end without looking at the steps."""
        for _ in self:
            pass
        return self

    @property
    def done(self) -> bool:
        return bool(self.finished) and all(self.finished)

    @property
    def full_prompt(self) -> list[int]:
        """The prompt's model ids, continuation window included: what the model reads before sampling."""
        return [*self.prompt_tokens, *(vocab.to_full(t) for t in self.prefix_amt)]

    def begin(self) -> None:
        """Fresh per-sequence state: no tokens, note states that have seen the prefix, one RNG each, zero timings."""
        self.states = [(self.initial_state or NoteState()).copy().extend(self.prefix_amt) for _ in range(self.n)]
        self.rngs = sampling.sequence_rngs(self.seed, self.n)
        self.tokens = [[] for _ in range(self.n)]
        self._fed = [0] * self.n
        self.finished = [self.max_new_tokens <= 0] * self.n
        self.nonfinite = [0] * self.n
        self.timings = Timings(prompt_tokens=len(self.prompt_tokens) + len(self.prefix_amt))

    def _run(self) -> Iterator[StepEvent]:
        prompt = self.full_prompt
        ctx = self.model.context(
            self.n, *context_shape(len(prompt), self.n, self.max_new_tokens, self.model.kv_unified)
        )
        self.begin()
        t = self.timings

        start = time.perf_counter()
        last = _decode_prompt(self.model, ctx, prompt)
        ctx.share_prefix(self.n)
        t.prompt_s = time.perf_counter() - start
        log.debug("prompt of %d tokens evaluated in %.2f s; sampling %d sequences", len(prompt), t.prompt_s, self.n)
        if self.done:
            return
        rows = [ctx.midi_logits(last)] * self.n
        live = list(range(self.n))
        for step in range(self.max_new_tokens):
            step_start = time.perf_counter()
            decode_s = 0.0
            if step > 0:
                cpu_start = time.process_time()
                heads, tails = feed_batches(self.model, [(s, len(prompt), *self.unfed(s)) for s in live])
                ctx.decode_feeds(heads, tails)
                decode_s = time.perf_counter() - step_start
                t.decode_cpu_s += time.process_time() - cpu_start
                rows = [ctx.midi_logits(i) for i in range(len(tails))]
            sample_start = time.perf_counter()
            picked = [(s, self.advance(s, row)) for s, row in zip(live, rows, strict=True)]
            now = time.perf_counter()
            t.decode_s += decode_s
            t.sample_s += now - sample_start
            t.steps_s += now - step_start
            t.steps += 1
            t.generated += len(picked)
            live = [s for s in live if not self.finished[s]]
            yield StepEvent(step, picked, decode_s, now - sample_start)
            if not live:
                break

    def unfed(self, seq: int) -> tuple[int, list[int]]:
        """Sequence `seq`'s tokens not yet in the KV cache, and how many before them are; from now on counted in."""
        done, new = self._fed[seq], self.tokens[seq][self._fed[seq] :]
        self._fed[seq] = len(self.tokens[seq])
        return done, new

    def advance(self, seq: int, row: np.ndarray) -> int:
        """Sample sequence `seq`'s next AMT id from its MIDI logits row; records it (and what `inject` adds after
        it) and whether the sequence is done."""
        state = self.states[seq]
        # Broken weights (random bytes, NaN) give NaN logits, and the sampler then always picks the lowest id:
        # counted here so the result can say so. max() is the cheap test (~20 us a row): NaN and +inf survive it.
        if not math.isfinite(row.max()):
            self.nonfinite[seq] += 1
        amt_id = sampling.sample_next(row, state, self.params, self.rngs[seq])
        state.update(amt_id)
        out = self.tokens[seq]
        out.append(amt_id)
        if len(out) >= self.max_new_tokens or (self.stop is not None and self.stop(seq, out, state)):
            self.finished[seq] = True
        elif self.inject is not None:
            added = [int(t) for t in self.inject(seq, out, state)]
            assert all(not 0 <= t < vocab.CONTROL_OFFSET for t in added), "the model alone writes events"
            state.extend(added)
            out += added
            self.finished[seq] = len(out) >= self.max_new_tokens
        return amt_id


Item = tuple[int, int, int, bool]  # (model token id, position, llama sequence id, wants logits)


def feed_batches(model: Model, feeds: Sequence[tuple[int, int, int, Sequence[int]]]) -> tuple[list[Item], list[Item]]:
    """(heads, tails) for feeds of (llama seq id, prompt length, tokens already fed, AMT ids to feed).

    Without injected tokens a feed is one token, and this is one decode of one token per sequence. Injected ones
    (all of a feed but its last id) go in the heads, without logits; each feed's last id goes in the tails, with
    logits: tail i's row is batch index i of the tails' decode.
    """
    heads: list[Item] = []
    tails: list[Item] = []
    for seq, base, done, new in feeds:
        pos = base + done
        heads += [(model.token_id(tok), pos + i, seq, False) for i, tok in enumerate(new[:-1])]
        tails.append((model.token_id(new[-1]), pos + len(new) - 1, seq, True))
    return heads, tails


def _decode_prompt(model: Model, ctx: _Context, prompt: list[int], seq: int = 0) -> int:
    """Evaluate the prompt as sequence `seq`; returns the batch index whose logits come next.

    Two decodes in both layouts: the text, then AUTOREGRESS (and any continuation)
    as MIDI ids. A midi-head model takes the text as input vectors from its
    companion. Splitting the standard layout the same way keeps the two layouts'
    results bit-identical: llama.cpp's kernels round differently for different
    batch sizes, so equal batches are what make equal logits.
    """
    n_text = next(i for i, tok in enumerate(prompt) if tok >= vocab.TEXT_VOCAB_SIZE)
    text, midi = prompt[:n_text], [tok - vocab.TEXT_VOCAB_SIZE for tok in prompt[n_text:]]
    if model.companion is None:
        ctx.decode([(tok, pos, seq, False) for pos, tok in enumerate(text)])
    else:
        ctx.decode_vectors(model.companion.rows(text), 0, seq)
    ctx.decode([(model.token_id(tok), n_text + i, seq, i == len(midi) - 1) for i, tok in enumerate(midi)])
    return len(midi) - 1


def context_shape(n_prompt: int, n: int, max_new_tokens: int, unified: bool = True) -> tuple[int, int]:
    """(n_ctx, n_batch): a unified cache holds the prompt once plus each sequence's tokens; split ones hold n copies."""
    new = max(max_new_tokens, 1)
    n_ctx = round_up(n_prompt + n * new, CTX_ROUND) if unified else n * round_up(n_prompt + new, CTX_ROUND)
    return n_ctx, max(n_prompt, n)


def generate_tokens(
    model: Model,
    prompt_tokens: Sequence[int],
    *,
    n: int = 1,
    params: SamplingParams | None = None,
    seed: int | None = None,
    max_new_tokens: int | None = None,
    prefix_amt: Sequence[int] = (),
    stop: StopPredicate | None = None,
    inject: InjectFn | None = None,
    initial_state: NoteState | None = None,
) -> Generation:
    """Set up n sequences continuing `prompt_tokens` (+ `prefix_amt`, AMT ids); iterate the result to decode.

    seed=None draws one and records it in `Generation.seed`, so any run can be repeated. `inject` adds tokens
    (controls) after sampled ones, counted in `max_new_tokens`; `initial_state` gives the masks a time floor and
    the instruments the output already holds.
    """
    params = (params or SamplingParams()).validate()
    if not 1 <= n <= llama_cpp.llama_max_parallel_sequences():
        raise UserError(f"the number of outputs must be 1..{llama_cpp.llama_max_parallel_sequences()}, not {n}")
    max_new = model.info.max_new_tokens if max_new_tokens is None else max_new_tokens
    check_range("max_tokens", max_new, 0, MAX_NEW_TOKENS, integer=True)
    if seed is not None:
        check_range("seed", seed, 0, MAX_SEED, integer=True)
    prefix = tuple(int(t) for t in prefix_amt)
    bad = [t for t in prefix if not 0 <= t < vocab.SEPARATOR]
    if bad:
        raise UserError(f"continuation token {bad[0]} is not an AMT event or control id (0..{vocab.SEPARATOR - 1})")
    needed = len(prompt_tokens) + len(prefix) + max_new
    if needed > model.n_ctx_limit:
        raise UserError(
            f"prompt ({len(prompt_tokens)}) + continuation ({len(prefix)}) + new tokens ({max_new}) = {needed} "
            f"exceeds the context of {model.n_ctx_limit} tokens; lower ",
            Opt("max_tokens"),
            " or shorten the input",
        )
    return Generation(
        model=model,
        prompt_tokens=list(prompt_tokens),
        n=n,
        params=params,
        seed=sampling.fresh_seed() if seed is None else seed,
        max_new_tokens=max_new,
        prefix_amt=prefix,
        stop=stop,
        inject=inject,
        initial_state=initial_state,
    )
