"""AMT token sequences <-> notes: the pure half of the codec, with explicit, counted repairs.

The decoder reads any list of integers. On a valid sequence it follows the AMT
reference (`anticipation.convert.events_to_compound`) note for note: control
triplets read as events, REST triplets sound nothing, a SEPARATOR triplet
starts a segment offset by the previous segment's latest note end. Where the
reference would crash or misalign, it repairs instead, by these rules, applied
in stream order so that one bad token costs at most one note:

- an id outside the vocabulary, or an AUTOREGRESS/ANTICIPATE mode token after
  the first position, is dropped;
- a token that cannot fill the next slot of the triplet being read is dropped,
  except an arrival time, which abandons the partial triplet and starts anew
  (a model that skipped a slot loses one note, not the rest of the piece);
- a run of fewer than three SEPARATORs is dropped; an unfinished triplet at the
  end is dropped.

Every repair is counted under a key of `REPAIRS`. MIDI-level repairs (more
instruments than channels) belong to `midi.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import ops
from .vocab import (
    ANTICIPATE,
    AUTOREGRESS,
    DUR_OFFSET,
    MAX_DUR,
    MAX_TIME,
    REST,
    SEPARATOR,
    TIME_OFFSET,
    TIME_RESOLUTION,
    TOKENS_PER_NOTE,
    to_amt,
)

# Why a token or triplet was skipped, as the summary says it.
REPAIRS = {
    "unknown_id": "ids outside the MIDI vocabulary",
    "mode_token": "AUTOREGRESS/ANTICIPATE tokens mid-stream",
    "misplaced_token": "tokens of the wrong kind for their slot",
    "incomplete_triplet": "incomplete triplets",
    "partial_separator": "incomplete SEPARATOR triplets",
    "unfinished_note": "unfinished triplet at the end",
    "merged_instrument": "notes moved to a shared channel (MIDI has 15 melodic channels)",
    # New notes that anticipation.reassemble leaves out or shortens, so that every kept note reads back unchanged.
    "outside_span": "new notes outside the span",
    "overlaps_kept": "new notes sounding over a kept note of the same pitch and instrument",
    "shortened_before_kept": "new notes shortened to end where a kept note of the same pitch starts",
    "over_channels": "new notes of instruments past MIDI's 15 melodic channels",
}

_TIME, _DUR, _NOTE, _REST, _SEP, _MODE, _UNKNOWN = range(7)
_SLOTS = (_TIME, _DUR, _NOTE)  # what each position of a triplet holds


@dataclass(frozen=True, slots=True, order=True)
class Note:
    """One note in AMT units: 10 ms ticks from the start, GM program 0..127 or 128 for drums."""

    onset: int
    duration: int
    instrument: int
    pitch: int

    @property
    def end(self) -> int:
        return self.onset + self.duration


@dataclass
class Decoded:
    """Notes read from a token sequence, in stream order, with what it took to read them."""

    notes: list[Note]
    repairs: Counter[str] = field(default_factory=Counter)
    rests: int = 0
    segments: int = 1

    @property
    def skipped(self) -> int:
        return sum(self.repairs.values())


def classify(amt_id: int) -> tuple[int, int]:
    """(kind, value) of an AMT id; control tokens fold onto the event block they mirror."""
    amt_id = ops.as_event(amt_id)
    if ops.is_time(amt_id):
        return _TIME, ops.time_ticks(amt_id)
    if ops.is_duration(amt_id):
        return _DUR, ops.duration_ticks(amt_id)
    if ops.is_note(amt_id):
        return _NOTE, amt_id
    if amt_id == REST:
        return _REST, 0
    if amt_id == SEPARATOR:
        return _SEP, 0
    if amt_id in (AUTOREGRESS, ANTICIPATE):
        return _MODE, 0
    return _UNKNOWN, 0


class _Reader:
    """The decoder's state machine: slots of the current triplet, the separator run, segment offsets."""

    def __init__(self) -> None:
        self.out = Decoded(notes=[])
        self.pending: list[int] = []  # values of the triplet being read
        self.has_rest = False
        self.separators = 0
        self.offset = 0  # start of the current segment
        self.segment_end = 0  # latest note end in the current segment, relative to its start

    def feed(self, kind: int, value: int) -> None:
        if kind == _SEP:
            self._abandon()
            self.separators += 1
            if self.separators == TOKENS_PER_NOTE:
                self._new_segment()
            return
        if self.separators:
            self.out.repairs["partial_separator"] += 1
            self.separators = 0
        if kind == _UNKNOWN:
            self.out.repairs["unknown_id"] += 1
        elif kind == _MODE:
            self.out.repairs["mode_token"] += 1
        elif kind == _SLOTS[len(self.pending)] or (kind == _REST and len(self.pending) == 2):
            self._take(kind, value)
        elif kind == _TIME:
            self._abandon()
            self._take(kind, value)
        else:
            self.out.repairs["misplaced_token"] += 1

    def finish(self) -> Decoded:
        if self.pending:
            self.out.repairs["unfinished_note"] += 1
        if self.separators:
            self.out.repairs["partial_separator"] += 1
        return self.out

    def _abandon(self) -> None:
        if self.pending:
            self.out.repairs["incomplete_triplet"] += 1
            self.pending = []

    def _take(self, kind: int, value: int) -> None:
        self.pending.append(value)
        if len(self.pending) < TOKENS_PER_NOTE:
            return
        time, duration, note = self.pending
        self.pending = []
        if kind == _REST:
            self.out.rests += 1  # REST triplets are padding: no note, no effect on segment ends
            return
        instrument, pitch = ops.instrument_pitch(note)
        self.out.notes.append(Note(self.offset + time, duration, instrument, pitch))
        self.segment_end = max(self.segment_end, time + duration)

    def _new_segment(self) -> None:
        self.separators = 0
        self.offset += self.segment_end
        self.segment_end = 0
        self.out.segments += 1


def decode_tokens(token_ids: Iterable[int]) -> Decoded:
    """Read notes from any integers: AMT ids, or full-vocabulary ids (>= TEXT_VOCAB_SIZE). Never raises."""
    reader = _Reader()
    for position, token_id in enumerate(token_ids):
        kind, value = classify(to_amt(int(token_id)))
        if position == 0 and kind == _MODE:
            continue  # a sequence may carry the prompt's AUTOREGRESS/ANTICIPATE token at its start
        reader.feed(kind, value)
    return reader.finish()


@dataclass
class Encoded:
    tokens: list[int]
    notes: list[Note]  # the notes the tokens hold (durations clipped)
    dropped_late: int = 0  # notes whose onset is past the last arrival-time token
    clipped_durations: int = 0


def encode_notes(notes: Sequence[Note]) -> Encoded:
    """AMT event triplets for notes in their given order (the caller sorts by onset).

    Durations clip to the longest duration token, as AMT does; a note starting
    at or after MAX_TIME ticks has no arrival-time token and is left out and
    counted (window the notes first to reach later music).
    """
    out = Encoded(tokens=[], notes=[])
    for note in notes:
        if not 0 <= note.onset < MAX_TIME:
            out.dropped_late += 1
            continue
        duration = note.duration
        if duration >= MAX_DUR:
            out.clipped_durations += 1
            duration = MAX_DUR - 1
        out.notes.append(Note(note.onset, duration, note.instrument, note.pitch))
        out.tokens += [
            TIME_OFFSET + note.onset,
            DUR_OFFSET + duration,
            ops.note_token(note.instrument, note.pitch),
        ]
    return out


def shift_notes(notes: Iterable[Note], start: int) -> list[Note]:
    """Notes starting at or after tick `start`, with times made relative to it (AMT's windows are relative)."""
    return [Note(n.onset - start, n.duration, n.instrument, n.pitch) for n in notes if n.onset >= start]


def length_seconds(notes: Iterable[Note]) -> float:
    """Time from zero to the end of the last note."""
    return max((n.end for n in notes), default=0) / TIME_RESOLUTION
