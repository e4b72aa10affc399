"""Infilling and accompaniment with AMT anticipation: which notes are history, controls or rewritten, the token
layout after the text prompt, the controls inserted while sampling, and the piece put back together.

MIDI-LLM's fine-tuning saw AMT's anticipation mode ("AMT infilling augmentation", its model card), but its exact
layout after the text prompt is not published. ASSUMPTION: it is AMT's own, and `layout` is the one place that
says so, to change if the authors publish theirs. After the prompt's text comes ANTICIPATE, then the history padded
with REST triplets (`ops.pad`), interleaved with control triplets as `ops.anticipate` interleaves them: a control
goes in as soon as the latest event time reaches its time minus DELTA (5 s). While sampling, `ControlSchedule`
inserts the rest the same way (AMT's `sample.generate`); the model never samples a control.

A request names a span [start, end) of a piece and the instruments kept inside it. Notes before the span are the
history (events); notes after it, and kept instruments' notes inside it, are controls; the other notes inside it
are rewritten. Infilling keeps no instrument inside the span; accompaniment keeps the named ones over the span
(by default the whole piece). The output holds every kept note exactly as read (`reassemble`), plus new notes
inside the span. AMT times are relative to a window of at most 100 s: the window starts at the first history note
it holds (the last notes before the span, at most HISTORY_TOKENS of them) and reaches DELTA past the span's end,
so a span is at most MAX_SPAN_SECONDS; longer pieces work as `gen --continue` does, the window sliding with the span.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Opt, UserError, check_range
from ..limits import MAX_INPUT_SECONDS, MAX_SPAN_SECONDS
from . import gm, ops
from .codec import Note, encode_notes, shift_notes
from .midi import read_midi, read_midi_tracks
from .vocab import (
    DELTA,
    DRUM_INSTRUMENT,
    DUR_OFFSET,
    MAX_TIME,
    PAD_DENSITY,
    REST,
    TIME_OFFSET,
    TIME_RESOLUTION,
    TOKENS_PER_NOTE,
)

MODE_INFILL = "infill"
MODE_ACCOMPANY = "accompany"
HISTORY_TOKENS = 1023  # history notes in the prompt, as `gen --continue`'s window: the rest of 2,048 is for the span
MAX_SPAN = MAX_SPAN_SECONDS * TIME_RESOLUTION  # ticks
MAX_MELODIC = len(gm.MELODIC_CHANNELS)  # a MIDI file's melodic channels: more instruments would share one


# --- AMT's operations, on token lists -----------------------------------------------------------------------------
def pad(events: Sequence[int], end_time: int, density: int = PAD_DENSITY) -> list[int]:
    """AMT's `ops.pad`: REST triplets wherever `density` ticks pass without an event, up to `end_time`."""
    out: list[int] = []
    previous = 0
    for i in range(0, len(events), TOKENS_PER_NOTE):
        time = ops.time_ticks(events[i])
        while time > previous + density:
            previous += density
            out += rest_triplet(previous)
        out += events[i : i + TOKENS_PER_NOTE]
        previous = time
    while end_time > previous + density:
        previous += density
        out += rest_triplet(previous)
    return out


def rest_triplet(time: int) -> list[int]:
    return [TIME_OFFSET + time, DUR_OFFSET, REST]


def anticipate(events: Sequence[int], controls: Sequence[int], delta: int = DELTA) -> tuple[list[int], list[int]]:
    """AMT's `ops.anticipate`: each control triplet goes before the first event that follows an event at or past
    its time minus `delta` (time 0 before any event). Returns the tokens and the controls not yet placed."""
    tokens: list[int] = []
    placed = 0
    event_time = 0
    for i in range(0, len(events), TOKENS_PER_NOTE):
        placed, tokens = _place(controls, placed, event_time, delta, tokens)
        event_time = ops.time_ticks(events[i])
        tokens += events[i : i + TOKENS_PER_NOTE]
    return tokens, list(controls[placed:])


def due(controls: Sequence[int], now: int, delta: int = DELTA, start: int = 0) -> int:
    """Index past the control triplets from `start` on that are due once the latest event time is `now`."""
    i = start
    while i < len(controls) and ops.control_time_ticks(controls[i]) - delta <= now:
        i += TOKENS_PER_NOTE
    return i


def _place(controls: Sequence[int], placed: int, now: int, delta: int, tokens: list[int]) -> tuple[int, list[int]]:
    end = due(controls, now, delta, placed)
    return end, tokens + list(controls[placed:end]) if end > placed else tokens


def layout(
    history: Sequence[int], controls: Sequence[int], start: int, delta: int = DELTA
) -> tuple[list[int], list[int]]:
    """The AMT ids after ANTICIPATE, and the control triplets sampling inserts later: THE layout assumption.

    As AMT's `sample.generate` builds its prompt: the history events padded to `start` (the span's start,
    relative), interleaved with the controls, then the controls already due at the history's last event time.
    """
    events = pad(history, start)
    tokens, rest = anticipate(events, controls, delta)
    now = max((ops.time_ticks(t) for t in events[::TOKENS_PER_NOTE]), default=0)
    n = due(rest, now, delta)
    return tokens + rest[:n], rest[n:]


def control_tokens(notes: Sequence[Note]) -> list[int]:
    """Control triplets of notes (relative times; durations clip to AMT's longest, as events do)."""
    return [ops.as_control(t) for t in encode_notes(notes).tokens]


# --- which notes are what -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpanSplit:
    history: list[Note]  # onset before the span: events
    controls: list[Note]  # onset at or after its end, or a kept part inside it
    rewritten: list[Note]  # the model writes these parts anew


def split_notes(notes: Sequence[Note], start: int, end: int, keep: Sequence[bool] | None = None) -> SpanSplit:
    """Span selection (AMT's `clip` at the span's ends) plus part extraction (`extract_instruments`) inside it.

    keep[i] says whether notes[i] is kept inside the span (None: nothing is, as for infilling).
    """
    out = SpanSplit([], [], [])
    for i, note in enumerate(notes):
        if note.onset < start:
            out.history.append(note)
        elif note.onset >= end or (keep is not None and keep[i]):
            out.controls.append(note)
        else:
            out.rewritten.append(note)
    return out


def instrument_mask(notes: Sequence[Note], instruments: frozenset[int]) -> list[bool]:
    return [n.instrument in instruments for n in notes]


def subset_mask(notes: Sequence[Note], subset: Iterable[Note]) -> list[bool]:
    """True for the notes of `subset` (a multiset: equal notes are taken in file order)."""
    left = Counter(subset)
    mask = []
    for note in notes:
        mask.append(left[note] > 0)
        left[note] -= 1
    return mask


# --- the request ---------------------------------------------------------------------------------------------------
@dataclass
class Anticipation:
    """An infilling or accompaniment request, planned: what the model sees, and the notes the output keeps."""

    mode: str
    source: Path
    start: int  # the span, absolute ticks: new notes start in [start, end)
    end: int
    keep: frozenset[int]  # instruments kept inside the span (none for infilling)
    kept: list[Note]  # every note the output keeps exactly, in file order
    window_start: int  # absolute tick of relative time 0
    prefix: list[int]  # AMT ids after ANTICIPATE: history and the controls placed so far
    pending: list[int]  # control triplets that sampling inserts
    history_notes: int = 0
    delta: int = DELTA
    warnings: list[str] = field(default_factory=list)

    @property
    def start_relative(self) -> int:
        return self.start - self.window_start

    @property
    def end_relative(self) -> int:
        return self.end - self.window_start

    @property
    def kept_instruments(self) -> frozenset[int]:
        return frozenset(n.instrument for n in self.kept)

    def schedule(self, n: int) -> ControlSchedule:
        return ControlSchedule(self.pending, n, self.delta)

    def reassemble(self, generated: Iterable[Note]) -> tuple[list[Note], Counter[str]]:
        """The kept notes as they were, plus the generated ones (relative times) that leave them intact.

        New notes are left out when they start outside the span, sound over a kept note of the same pitch and
        instrument, or need a 16th melodic channel; one that would run into such a kept note ends where it
        starts. Each is counted (codec.REPAIRS): a MIDI file cannot tell overlapping same-key notes apart, so any of
        these would change a kept note when the file is read back.
        """
        absolute = [Note(n.onset + self.window_start, n.duration, n.instrument, n.pitch) for n in generated]
        new, repairs = fit_new_notes(self.kept, absolute, self.start, self.end)
        return [*self.kept, *new], repairs

    def to_dict(self) -> dict:
        """For generation_stats.json."""
        return {
            "mode": self.mode,
            "source": str(self.source),
            "span_seconds": [self.start / TIME_RESOLUTION, self.end / TIME_RESOLUTION],
            "kept_instruments": [gm.instrument_name(i) for i in sorted(self.keep)],
            "delta_seconds": self.delta / TIME_RESOLUTION,
            "window_start_seconds": self.window_start / TIME_RESOLUTION,
            "history_notes": self.history_notes,
            "controls": sum(map(ops.is_control, self.prefix + self.pending)) // TOKENS_PER_NOTE,
            "kept_notes": len(self.kept),
        }


def plan(
    notes: Sequence[Note],
    start: int,
    end: int,
    *,
    keep: Sequence[bool] | None = None,
    mode: str = MODE_INFILL,
    source: Path = Path("-"),
    history_tokens: int = HISTORY_TOKENS,
) -> Anticipation:
    """Split the notes at the span, choose the window, lay the tokens out (see the module docstring)."""
    if end - start > MAX_SPAN:
        raise UserError(
            f"the span is {(end - start) / TIME_RESOLUTION:g} s; one pass writes at most {MAX_SPAN_SECONDS} s "
            "(AMT's 100 s window less the 5 s anticipation interval): rewrite it in parts"
        )
    split = split_notes(notes, start, end, keep)
    earliest = max(0, end + DELTA - MAX_TIME)  # the window must reach the controls due before the span ends
    candidates = [n for n in split.history if n.onset >= earliest]
    history = candidates[max(0, len(candidates) - history_tokens // TOKENS_PER_NOTE) :]
    window_start = history[0].onset if history else start
    # Sampling ends before `end`, so later controls never come due; the window reaches these (`earliest`).
    ahead = [n for n in split.controls if n.onset < end + DELTA]
    ahead.sort(key=lambda n: n.onset)  # stable, as AMT's ops.sort
    prefix, pending = layout(
        encode_notes(shift_notes(history, window_start)).tokens,
        control_tokens(shift_notes(ahead, window_start)),
        start - window_start,
    )
    rewritten = set(map(id, split.rewritten))  # by identity: of two equal notes one may be kept, one rewritten
    inside = [n for n in split.controls if start <= n.onset < end]
    return Anticipation(mode=mode, source=source, start=start, end=end,
                        keep=frozenset(n.instrument for n in inside),
                        kept=[n for n in notes if id(n) not in rewritten], window_start=window_start,
                        prefix=prefix, pending=pending, history_notes=len(history))  # fmt: skip


# --- from files ----------------------------------------------------------------------------------------------------
def prepare_infill(path: str | os.PathLike[str], *, from_seconds: float, to_seconds: float) -> Anticipation:
    """Rewrite [from_seconds, to_seconds) of the piece at `path`, keeping everything around it."""
    start, end = _span(from_seconds, to_seconds)
    notes = read_midi(path).notes
    _check_inside(path, notes, start)
    anticipation = plan(notes, start, end, mode=MODE_INFILL, source=Path(path))
    if not anticipation.kept:
        raise UserError(f"{path} has no notes outside {from_seconds:g}-{to_seconds:g} s: nothing to keep "
                        "(generate without infilling instead)")  # fmt: skip
    return anticipation


def prepare_accompaniment(
    path: str | os.PathLike[str],
    *,
    keep_instruments: Iterable[int | frozenset[int]] | None = None,
    keep_tracks: Iterable[int] | None = None,
    from_seconds: float | None = None,
    to_seconds: float | None = None,
) -> Anticipation:
    """Write new parts around the kept instruments or tracks (default: everything) of the piece at `path`.

    The span defaults to the whole piece: from 0 to the end of its last kept note, at most MAX_SPAN_SECONDS
    (a warning then says where to go on from). Outside the span, the piece stays as it is. An entry of
    `keep_instruments` is an AMT instrument or a group of them (a GM family): each must play in the file.
    """
    if keep_instruments is not None and keep_tracks is not None:
        raise UserError("give the instruments or the tracks to keep, not both (", Opt("keep_instruments"), ", ",
                        Opt("keep_tracks"), ")")  # fmt: skip
    if keep_tracks is not None:
        read, track_notes = read_midi_tracks(path, keep_tracks)
        notes = read.notes
        keep = subset_mask(notes, track_notes)
    else:
        notes = read_midi(path).notes
        if keep_instruments is None:
            keep = [True] * len(notes)
        else:
            keep = instrument_mask(notes, _present(path, keep_instruments, {n.instrument for n in notes}))
    if not notes:
        raise UserError(f"{path} has no notes to accompany")
    start = 0 if from_seconds is None else _ticks("from_seconds", from_seconds)
    kept_ends = [n.end for n, k in zip(notes, keep, strict=True) if k and n.onset >= start]
    if not kept_ends:
        raise UserError(f"{path} has no notes of the kept parts from {start / TIME_RESOLUTION:g} s on")
    warnings = []
    if to_seconds is None:
        end = max(max(kept_ends), start + 1)
        if end - start > MAX_SPAN:
            end = start + MAX_SPAN
            warnings.append(f"accompanying {start / TIME_RESOLUTION:g}-{end / TIME_RESOLUTION:g} s (one pass "
                            f"writes {MAX_SPAN_SECONDS} s); go on from {end / TIME_RESOLUTION:g} s with the "
                            "output as the input")  # fmt: skip
    else:
        start, end = _span(start / TIME_RESOLUTION, to_seconds)
    _check_inside(path, notes, start)
    anticipation = plan(notes, start, end, keep=keep, mode=MODE_ACCOMPANY, source=Path(path))
    anticipation.warnings += warnings
    return anticipation


def parse_tracks(text: str) -> list[int]:
    """A comma-separated list of track numbers (from 0, as stored)."""
    words = [word.strip() for word in text.split(",") if word.strip()]
    if not words or not all(word.isdigit() for word in words):
        raise UserError(Opt("keep_tracks"), f" takes track numbers from 0, like 1,3, not {text!r}")
    return [int(word) for word in words]


def _present(path, entries: Iterable[int | frozenset[int]], present: set[int]) -> frozenset[int]:
    """The kept instruments that play in the file; an entry none of whose instruments plays is a UserError."""
    kept: set[int] = set()
    for entry in entries:
        group = frozenset({entry}) if isinstance(entry, int) else frozenset(entry)
        if not group & present:
            names = ", ".join(f"{gm.instrument_name(i)} ({'drums' if i == DRUM_INSTRUMENT else i})"
                              for i in sorted(present))  # fmt: skip
            what = gm.instrument_name(min(group)) if len(group) == 1 else "instrument of " + _family(group)
            raise UserError(f"{path} has no {what}; its instruments are: {names}")
        kept |= group & present
    return frozenset(kept)


def _family(group: frozenset[int]) -> str:
    families = {gm.family(i) for i in group if i != DRUM_INSTRUMENT}
    return gm.FAMILY_NAMES[families.pop()] if len(families) == 1 else "those named"


def _ticks(option: str, seconds: float) -> int:
    check_range(option, seconds, 0, MAX_INPUT_SECONDS)
    return round(seconds * TIME_RESOLUTION)


def _span(from_seconds: float, to_seconds: float) -> tuple[int, int]:
    start, end = _ticks("from_seconds", from_seconds), _ticks("to_seconds", to_seconds)
    if end <= start:
        raise UserError("the span is empty: ", Opt("to_seconds"), f" ({to_seconds:g}) must come after ",
                        Opt("from_seconds"), f" ({from_seconds:g})")  # fmt: skip
    return start, end


def _check_inside(path, notes: Sequence[Note], start: int) -> None:
    last = max((n.end for n in notes), default=0)
    if start >= last:
        raise UserError(f"the span starts at {start / TIME_RESOLUTION:g} s, after the end of {path} "
                        f"({last / TIME_RESOLUTION:g} s)")  # fmt: skip


# --- sampling and the output ---------------------------------------------------------------------------------------
class ControlSchedule:
    """engine.InjectFn: after each whole sampled triplet, the control triplets now due in that sequence."""

    def __init__(self, pending: Sequence[int], n: int, delta: int = DELTA):
        self.pending = list(pending)
        self.delta = delta
        self.next = [0] * n  # per sequence, the first control not yet inserted

    def __call__(self, seq: int, tokens: list[int], state) -> list[int]:
        if state.slot != 0:  # AMT inserts between triplets only
            return []
        start = self.next[seq]
        end = due(self.pending, state.last_onset, self.delta, start)
        self.next[seq] = end
        return self.pending[start:end]


def fit_new_notes(kept: Sequence[Note], new: Iterable[Note], start: int, end: int) -> tuple[list[Note], Counter[str]]:
    """The new notes that a MIDI file can hold beside the kept ones without changing any (see `reassemble`)."""
    repairs: Counter[str] = Counter()
    by_key: dict[tuple[int, int], list[Note]] = {}
    for note in sorted(kept, key=lambda n: n.onset):
        by_key.setdefault((note.instrument, note.pitch), []).append(note)
    melodic = {n.instrument for n in kept if n.instrument != DRUM_INSTRUMENT}
    out = []
    for note in new:
        if not start <= note.onset < end:
            repairs["outside_span"] += 1
            continue
        if note.instrument != DRUM_INSTRUMENT and note.instrument not in melodic:
            if len(melodic) >= MAX_MELODIC:
                repairs["over_channels"] += 1
                continue
            melodic.add(note.instrument)
        fitted = _clear_of(note, by_key.get((note.instrument, note.pitch), ()))
        if fitted is None:
            repairs["overlaps_kept"] += 1
        else:
            repairs["shortened_before_kept"] += fitted.duration != note.duration
            out.append(fitted)
    return out, +repairs


def _clear_of(note: Note, same_key: Sequence[Note]) -> Note | None:
    """`note` ended before the next kept note of its key starts; None when it starts while one sounds or with one."""
    for kept in same_key:  # sorted by onset
        if kept.onset <= note.onset < kept.end or kept.onset == note.onset:
            return None
        if kept.onset > note.onset:
            return Note(note.onset, min(note.duration, kept.onset - note.onset), note.instrument, note.pitch)
    return note
