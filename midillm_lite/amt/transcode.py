"""Token ids <-> MIDI files end to end: the library behind `decode`, `encode` and gen's outputs, and their summaries."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mido

from ..errors import check_range
from ..fsutil import check_writable_target
from ..limits import MAX_INPUT_SECONDS
from . import gm
from .codec import REPAIRS, Decoded, Note, decode_tokens, encode_notes, length_seconds, shift_notes
from .grid import DEFAULT_GRID, GridRequest
from .midi import midi_bytes, notes_to_midi, read_midi, save_midi
from .tokens_file import STDIO, read_tokens, write_tokens
from .vocab import TIME_RESOLUTION, to_full


@dataclass
class MusicSummary:
    """What a token sequence or MIDI file holds, and what it took to read it."""

    notes: int
    instruments: list[str]
    seconds: float
    repairs: dict[str, int] = field(default_factory=dict)
    rests: int = 0
    segments: int = 1
    grid: dict | None = None  # the tempo and meter the MIDI file was written with, where a request chose them

    @property
    def repaired(self) -> int:
        return sum(self.repairs.values())

    def describe(self) -> str:
        """One line: notes, instruments, length, and what was skipped and why."""
        names = ", ".join(self.instruments) if self.instruments else "no instruments"
        count = len(self.instruments)
        text = f"{_plural(self.notes, 'note')}, {_plural(count, 'instrument')} ({names}), {self.seconds:.2f} s"
        if self.repairs:
            text += "; skipped: " + ", ".join(f"{n} {REPAIRS.get(k, k)}" for k, n in sorted(self.repairs.items()))
        return text

    def to_dict(self) -> dict:
        return asdict(self)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def summarize(notes: Sequence[Note], repairs: Counter[str] | None = None, *, rests: int = 0, segments: int = 1):
    instruments = sorted({n.instrument for n in notes})
    return MusicSummary(
        notes=len(notes),
        instruments=[gm.instrument_name(i) for i in instruments],
        seconds=length_seconds(notes),
        repairs=dict(sorted((repairs or Counter()).items())),
        rests=rests,
        segments=segments,
    )


def tokens_to_midi(token_ids: Iterable[int], *, grid: GridRequest | None = None) -> tuple[mido.MidiFile, MusicSummary]:
    """Decode any integers to a valid MIDI file (on a grid resolved for its notes); never raises on token content."""
    return decoded_to_midi(decode_tokens(token_ids), grid=grid)


def decoded_to_midi(
    decoded: Decoded, *, notes: Sequence[Note] | None = None, grid: GridRequest | None = None
) -> tuple[mido.MidiFile, MusicSummary]:
    """The MIDI file of decoded tokens (or of `notes` built from them, e.g. a piece they continue) and its summary.

    The summary counts the decoder's repairs and the MIDI writer's together. With
    a grid request the tempo and meter are resolved for these notes (given,
    stated or estimated) and recorded in the summary; without, 120 BPM 4/4.
    """
    notes = decoded.notes if notes is None else notes
    resolved = DEFAULT_GRID if grid is None else grid.resolve([n.onset for n in notes], [n.duration for n in notes])
    written = notes_to_midi(notes, resolved)
    summary = summarize(notes, decoded.repairs + written.repairs, rests=decoded.rests, segments=decoded.segments)
    summary.grid = resolved.to_dict() if grid is not None else None
    return written.midi, summary


def decode_file(
    tokens: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    grid: GridRequest | None = None,
) -> MusicSummary:
    """Token file (or `-` for stdin) -> MIDI file written atomically, or its bytes on standard output for `-`.

    Without a grid request the file says 120 BPM 4/4; with one (controls.decode_grid) tempo and meter are resolved
    as gen resolves them, and recorded in the summary.
    """
    if str(out) != STDIO:
        check_writable_target(Path(out), force=force)  # before any work: fail fast on a taken name
    midi, summary = tokens_to_midi(read_tokens(tokens), grid=grid)
    if str(out) == STDIO:
        sys.stdout.buffer.write(midi_bytes(midi))
        sys.stdout.flush()
    else:
        save_midi(midi, out, force=force)
    return summary


@dataclass
class EncodeSummary(MusicSummary):
    tokens: int = 0
    dropped_late: int = 0
    dropped_early: int = 0
    clipped_durations: int = 0
    unclosed: int = 0
    stray_offs: int = 0


def encode_file(
    midi: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    full_ids: bool = False,
    start: float = 0.0,
) -> EncodeSummary:
    """MIDI file -> token file (AMT ids, or full-vocabulary ids), from `start` seconds on."""
    check_range("start", start, 0, MAX_INPUT_SECONDS)
    if str(out) != STDIO:
        check_writable_target(Path(out), force=force)
    read = read_midi(midi)
    start_tick = round(start * TIME_RESOLUTION)
    notes = shift_notes(read.notes, start_tick) if start_tick else read.notes
    encoded = encode_notes(notes)
    ids = [to_full(t) for t in encoded.tokens] if full_ids else encoded.tokens
    write_tokens(out, ids, force=force)
    base = summarize(encoded.notes)
    return EncodeSummary(
        **asdict(base),
        tokens=len(ids),
        dropped_late=encoded.dropped_late,
        dropped_early=len(read.notes) - len(notes),
        clipped_durations=encoded.clipped_durations,
        unclosed=read.unclosed,
        stray_offs=read.stray_offs,
    )
