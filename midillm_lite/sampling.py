"""Constrained decoding over the MIDI slice of the logits: slot masks, note bookkeeping and nucleus sampling.

Everything here works on AMT ids (0..MIDI_VOCAB_SIZE-1); the engine slices the
logits row at TEXT_VOCAB_SIZE and adds it back. Strict mode forces the AMT
triplet grammar (arrival time, duration, instrument-pitch), keeps onsets
monotone and caps the instrument count at what a MIDI file can hold (15
melodic channels plus drums). Free mode reproduces the reference sampler,
which allows every AMT id below SEPARATOR at every position.

Masks are never materialised as 55k-element arrays: each position allows one
or a few contiguous id ranges, and sampling works on views of those ranges.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .amt.ops import Range, instrument_of, is_note, is_time, note_range, time_ticks
from .amt.vocab import (
    CONTROL_OFFSET,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    DRUM_INSTRUMENT,
    DUR_OFFSET,
    NOTE_OFFSET,
    REST,
    SEPARATOR,
    TIME_OFFSET,
    TOKENS_PER_NOTE,
)
from .errors import Opt, UserError, check_range

# The reference rejects a sample whose busiest onset carries more than this many notes.
MAX_SIMULTANEOUS_NOTES = 64
# A General MIDI file has 16 channels, one of them (channel 10) reserved for drums.
MAX_MELODIC_INSTRUMENTS = 15
SLOT_TIME, SLOT_DURATION, SLOT_NOTE = range(TOKENS_PER_NOTE)
# Nucleus search starts from this many top candidates and widens by NUCLEUS_GROWTH until the nucleus fits.
NUCLEUS_FIRST_K = 64
NUCLEUS_GROWTH = 8

FREE_RANGES: tuple[Range, ...] = ((0, SEPARATOR),)
FREE_EVENT_RANGES: tuple[Range, ...] = ((0, CONTROL_OFFSET),)  # free mode beside controls: AMT's safe_logits
DURATION_RANGES: tuple[Range, ...] = ((DUR_OFFSET, NOTE_OFFSET),)
NOTE_RANGES: tuple[Range, ...] = ((NOTE_OFFSET, REST),)
# AMT's padding triplet (a second passes without a note): a note-slot candidate only while anticipating, where the
# sequences are padded with it so that controls keep arriving through a silence (AMT's sampler allows it there).
REST_RANGE: Range = (REST, REST + 1)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each token.

    temperature <= 0 means greedy (argmax over the allowed ids); top_p = 1 and
    top_k = 0 switch those filters off. strict=False is the reference's free mode.
    """

    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = 0
    strict: bool = True
    instruments: frozenset[int] | None = None  # AMT instruments the note slot may use (None: all); strict only
    events_only: bool = False  # free mode never samples control ids either (anticipation: the runtime adds them)
    rest: bool = False  # strict: REST may fill the note slot (anticipation; the decoder drops it)

    def validate(self) -> SamplingParams:
        if not isinstance(self.temperature, int | float) or not math.isfinite(self.temperature):
            raise UserError(Opt("temperature"), f" must be a finite number (0 or less: greedy), not {self.temperature}")
        check_range("top_p", self.top_p, 0.0, 1.0, lo_open=True)  # 1 switches it off
        # 0 switches it off; a k beyond the vocabulary keeps every id, the same as off, so it is not an error here
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise UserError(Opt("top_k"), f" must be 0 (off) or a positive integer, not {self.top_k!r}")
        if self.instruments is not None:
            if not self.instruments:
                raise UserError(Opt("instruments"), " names no instrument")
            if not self.strict:  # free mode allows every id at every position: there is no note slot to mask
                raise UserError(Opt("instruments"), " needs strict sampling (", Opt("strict", True), ")")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass
class NoteState:
    """What one sequence has produced so far, as far as the strict masks need it."""

    position: int = 0  # tokens seen, prefix included; position % 3 is the slot
    last_onset: int = 0  # latest arrival time, in ticks
    instruments: set[int] = field(default_factory=set)  # melodic instruments in use
    drums: bool = False

    @property
    def slot(self) -> int:
        return self.position % TOKENS_PER_NOTE

    def update(self, amt_id: int) -> None:
        # Classify by token kind, not slot, so free-mode and continuation tokens keep the state honest too.
        if is_time(amt_id):
            self.last_onset = max(self.last_onset, time_ticks(amt_id))
        elif is_note(amt_id):
            instrument = instrument_of(amt_id)
            if instrument == DRUM_INSTRUMENT:
                self.drums = True
            else:
                self.instruments.add(instrument)
        self.position += 1

    def copy(self) -> NoteState:
        return NoteState(self.position, self.last_onset, set(self.instruments), self.drums)

    def extend(self, amt_ids: Iterable[int]) -> NoteState:
        for amt_id in amt_ids:
            self.update(int(amt_id))
        return self


def allowed_ranges(
    state: NoteState, strict: bool = True, instruments: frozenset[int] | None = None, rest: bool = False
) -> tuple[Range, ...]:
    """The AMT id ranges allowed at the next position, sorted and disjoint.

    `instruments` (strict only) limits the instrument-pitch slot to those AMT instruments: a hard control.
    `rest` (strict only) lets REST close a note slot too.
    """
    if not strict:
        return FREE_RANGES
    slot = state.slot
    if slot == SLOT_TIME:
        return ((TIME_OFFSET + state.last_onset, DUR_OFFSET),)
    if slot == SLOT_DURATION:
        return DURATION_RANGES
    notes = _note_ranges(state, instruments)
    return merge_ranges((*notes, REST_RANGE)) if rest else notes  # REST follows every instrument-pitch id


def _note_ranges(state: NoteState, instruments: frozenset[int] | None) -> tuple[Range, ...]:
    full = len(state.instruments) >= MAX_MELODIC_INSTRUMENTS
    if instruments is None and not full:
        return NOTE_RANGES
    # Full: only instruments already playing, plus drums (which have their own channel).
    allowed = state.instruments | {DRUM_INSTRUMENT} if full else None
    if instruments is not None:
        # A continued piece may already fill the channels with other instruments: the control wins, and the MIDI
        # writer shares channels (a counted repair) rather than the sampler having nothing to pick.
        allowed = instruments if allowed is None else (allowed & instruments) or instruments
    return merge_ranges(note_range(i) for i in sorted(allowed))


def merge_ranges(ranges: Iterable[Range]) -> tuple[Range, ...]:
    """Sorted ranges with touching neighbours joined (neighbouring instruments' notes are contiguous ids)."""
    merged: list[Range] = []
    for lo, hi in ranges:
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return tuple(merged)


def is_allowed(amt_id: int, ranges: Sequence[Range]) -> bool:
    return any(lo <= amt_id < hi for lo, hi in ranges)


def gather(row: np.ndarray, ranges: Sequence[Range]) -> tuple[np.ndarray, np.ndarray | int]:
    """Candidate logits and their ids: a view plus an offset for one range, copies for several."""
    if len(ranges) == 1:
        lo, hi = ranges[0]
        return row[lo:hi], lo
    values = np.concatenate([row[lo:hi] for lo, hi in ranges])
    ids = np.concatenate([np.arange(lo, hi) for lo, hi in ranges])
    return values, ids


def sample_next(row: np.ndarray, state: NoteState, params: SamplingParams, rng: np.random.Generator) -> int:
    """Pick the next AMT id from a MIDI logits row (index = AMT id) under the state's mask; does not update state."""
    ranges = FREE_EVENT_RANGES if params.events_only and not params.strict else None
    values, ids = gather(row, ranges or allowed_ranges(state, params.strict, params.instruments, params.rest))
    local = pick(values, params, rng)
    return int(ids + local) if isinstance(ids, int) else int(ids[local])


def pick(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """Index into `logits` chosen by greedy, or temperature + top-k + top-p sampling."""
    logits = np.asarray(logits, dtype=np.float64)
    if np.isnan(logits).any():  # a broken model must not crash the sampler; NaN never wins
        logits = np.where(np.isnan(logits), -np.inf, logits)
    best = int(np.argmax(logits))
    top = logits[best]
    if params.greedy or not np.isfinite(top):
        return best
    subset = None
    if 0 < params.top_k < logits.size:
        subset = np.argpartition(logits, logits.size - params.top_k)[-params.top_k :]
        logits = logits[subset]
        top = logits.max()
    # Subtracting the max first keeps exp() in range; the best token always weighs exactly 1.
    weights = np.exp((logits - top) / params.temperature)
    order, cumulative = nucleus(weights, params.top_p)
    u = rng.random() * cumulative[-1]
    chosen = int(order[min(int(np.searchsorted(cumulative, u, side="right")), order.size - 1)])
    return chosen if subset is None else int(subset[chosen])


def nucleus(weights: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the smallest top set whose mass reaches top_p of the total (at least one), and their cumsum.

    Sorts only the top NUCLEUS_FIRST_K candidates and widens when they fall
    short, so a peaked distribution never pays for a full 10k-element sort.
    """
    n = weights.size
    if top_p >= 1.0:
        order = np.arange(n)
        return order, np.cumsum(weights)
    target = top_p * float(weights.sum())
    k = min(n, NUCLEUS_FIRST_K)
    while True:
        if k >= n:
            order = np.argsort(-weights, kind="stable")
        else:
            part = np.argpartition(weights, n - k)[n - k :]
            order = part[np.argsort(-weights[part], kind="stable")]
        cumulative = np.cumsum(weights[order])
        if cumulative[-1] >= target or k >= n:
            cut = min(int(np.searchsorted(cumulative, target, side="left")) + 1, order.size)
            return order[:cut], cumulative[:cut]
        k = min(n, k * NUCLEUS_GROWTH)


def sequence_rngs(seed: int, n: int) -> list[np.random.Generator]:
    """One generator per sequence; sequence i's stream depends only on (seed, i), not on n."""
    root = np.random.SeedSequence(seed)
    return [np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(i,))) for i in range(n)]


def fresh_seed() -> int:
    """A random seed to record when the caller gave none, so the run can be repeated."""
    return int(np.random.SeedSequence().entropy % (1 << 63))
