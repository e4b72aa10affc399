"""`gen --continue`: the window of an existing MIDI file that the model continues, and putting the piece back together.

AMT arrival times are relative to the start of a window and reach 100 s, and
MIDI-LLM was trained on 2,048-token sequences. So the prompt carries the last
notes of the piece (at most `max_tokens` tokens, spanning at most `max_span`
ticks so the continuation still has time to go), with times made relative to
the window's first onset; generated times are in the same frame and are
shifted back when the piece is reassembled. Long pieces past 100 s work the
same way: only the window has to fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import Opt, UserError
from .codec import Note, encode_notes, shift_notes
from .midi import load_midi_file, read_midi
from .vocab import MAX_TIME, TIME_RESOLUTION, TOKENS_PER_NOTE

DEFAULT_WINDOW_TOKENS = 1023  # half the training length, in whole notes: the other half is for new music
DEFAULT_WINDOW_SPAN = MAX_TIME // 2  # ticks; leaves the continuation at least 50 s of arrival times


@dataclass(frozen=True)
class Continuation:
    source: Path
    notes: list[Note]  # the piece up to the cut, absolute ticks
    window_start: int  # tick of the window's first onset: generated times count from here
    prefix: list[int]  # AMT tokens of the window, relative times

    @property
    def window_notes(self) -> int:
        return len(self.prefix) // TOKENS_PER_NOTE

    def reassemble(self, generated: list[Note]) -> list[Note]:
        """The original piece followed by the generated notes, on one absolute timeline."""
        shifted = [Note(n.onset + self.window_start, n.duration, n.instrument, n.pitch) for n in generated]
        return [*self.notes, *shifted]


def prepare_continuation(
    path: str | os.PathLike[str],
    *,
    from_seconds: float | None = None,
    max_tokens: int = DEFAULT_WINDOW_TOKENS,
    max_span: int = DEFAULT_WINDOW_SPAN,
) -> Continuation:
    """Read `path`, cut it at `from_seconds` (default: its end) and pick the window the model sees."""
    if from_seconds is not None and from_seconds < 0:
        raise UserError(Opt("from_seconds"), f" must not be negative, not {from_seconds}")
    _refuse_smpte(path)
    notes = read_midi(path).notes
    if from_seconds is not None:
        cut = round(from_seconds * TIME_RESOLUTION)
        notes = [n for n in notes if n.onset < cut]
    if not notes:
        where = f" before {from_seconds} s" if from_seconds is not None else ""
        raise UserError(f"{path} has no notes{where} to continue")
    window = _last_window(notes, max_notes=max(1, max_tokens // TOKENS_PER_NOTE), max_span=max_span)
    start = window[0].onset
    prefix = encode_notes(shift_notes(window, start)).tokens
    return Continuation(source=Path(path), notes=notes, window_start=start, prefix=prefix)


def _refuse_smpte(path: str | os.PathLike[str]) -> None:
    """Refused here, before any model loads: mido reads SMPTE division as negative ticks per beat, so every time
    came out negative and the generated piece could not be written as MIDI (the run was lost at the last step)."""
    if load_midi_file(path).ticks_per_beat <= 0:
        raise UserError(
            f"{path} counts time in SMPTE frames, which a continuation cannot use yet; save it with "
            "ticks per beat (any MIDI editor's default) and continue that"
        )


def _last_window(notes: list[Note], *, max_notes: int, max_span: int) -> list[Note]:
    """The longest run of final notes within both limits (notes are sorted by onset)."""
    last_onset = notes[-1].onset
    first = len(notes)
    while first > 0 and len(notes) - first < max_notes and last_onset - notes[first - 1].onset <= max_span:
        first -= 1
    return notes[first:]
