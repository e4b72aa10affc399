"""MIDI files <-> notes: the only module of the codec that touches mido.

Reading follows the AMT reference encoder (`anticipation.convert.midi_to_compound`):
real time from the tempo map, program changes per channel (default 0),
channel 9 is drums, onsets and durations rounded to 10 ms ticks, velocity-0
note-ons end notes, same-pitch notes pair first-in-first-out, notes never
closed get a quarter second. One deliberate difference: a note-off pairs by
(channel, pitch) rather than by (program, channel, pitch), so a program change
while a note sounds no longer leaves that note unclosed.

Writing follows the reference decoder (`compound_to_midi`): one track per
instrument with a program change at its start, drums on channel 9, other
instruments on channels in order of first appearance skipping 9, velocity 72
(or, with a grid's `dynamics`, ACCENT_VELOCITY by where the note falls in the bar).
Where the reference crashes (a 16th melodic instrument) notes move to the
channel of the closest instrument already placed. Each track is named after its
instrument (GM name, or "Drums"). The conductor track states a tempo and meter
(a `grid.Grid`, 120 BPM 4/4 by default) whose ticks hold every 10 ms step
exactly, so notes keep their times in seconds whatever the tempo says.

Same-pitch notes overlapping on one channel cannot be told apart in MIDI: a
note-off ends whichever note-on the reader pairs it with. The writer emits each
note-off at its own note's end and the reader pairs first-in-first-out, so
overlapping notes come back exactly when the later one also ends later; a note
nested inside a longer one of the same pitch comes back with the two ends
exchanged (onsets, pitches and the set of end times are kept).
"""

from __future__ import annotations

import io
import os
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mido

from ..errors import UserError
from ..fsutil import atomic_write_bytes
from ..limits import MAX_MIDI_BYTES
from . import gm
from .codec import Note
from .grid import BEAT, DEFAULT_GRID, DOWNBEAT, OFFBEAT, Grid
from .vocab import DRUM_INSTRUMENT, TIME_RESOLUTION

DEFAULT_VELOCITY = 72  # AMT does not model velocity; its decoder writes this one
# --dynamics: velocities by metric level (grid.Grid.metric_level), drums alike. Off-beats sit below the default
# and beats above it, so the music keeps about the default loudness while its downbeats stand out.
ACCENT_VELOCITY = {DOWNBEAT: 100, BEAT: 84, OFFBEAT: 64}
UNCLOSED_DURATION = TIME_RESOLUTION // 4  # ticks given to a note that never ends (250 ms, as AMT)
# SMPTE time division (a negative division in the header): frames per second by the header's code. 29 is
# NTSC's drop-frame rate, 30000/1001 frames per second in real time.
MIB = 1024 * 1024
SMPTE_FPS = {24: 24.0, 25: 25.0, 29: 30_000 / 1001, 30: 30.0}

# Order of simultaneous messages in a written track: notes that end here release
# their key before notes that start here strike it; a zero-length note ends
# after it starts.
_END, _START, _END_ZERO = range(3)


@dataclass
class MidiRead:
    """Notes read from a MIDI file (sorted by onset, in file order at ties) and what reading them noticed."""

    notes: list[Note]
    unclosed: int = 0  # notes with no note-off, given UNCLOSED_DURATION
    stray_offs: int = 0  # note-offs with no sounding note to end
    midi_type: int = 1
    tracks: int = 0


@dataclass
class MidiWritten:
    """A MIDI file made from notes, and the channel assignment it needed."""

    midi: mido.MidiFile
    channels: dict[int, int]  # instrument -> channel
    repairs: Counter[str] = field(default_factory=Counter)
    merged: dict[int, int] = field(default_factory=dict)  # instrument -> instrument whose channel it shares


# --- reading ------------------------------------------------------------------


def load_midi_file(path: str | os.PathLike[str]) -> mido.MidiFile:
    """Open a MIDI file; missing, unreadable, corrupt or truncated files are a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    try:
        _check_size(path.stat().st_size, str(path))  # before reading: the size decides the memory parsing takes
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_midi_bytes(data, name=str(path))


def _check_size(size: int, name: str) -> None:
    if size > MAX_MIDI_BYTES:
        raise UserError(
            f"{name} is {size / MIB:.1f} MiB; midillm-lite reads MIDI files up to {MAX_MIDI_BYTES / MIB:.0f} MiB "
            "(about 350,000 notes): split it or cut the part you need"
        )


def parse_midi_bytes(data: bytes, *, name: str = "input") -> mido.MidiFile:
    _check_size(len(data), name)
    try:
        # clip=True: out-of-range data bytes (a common corruption) are clipped rather than fatal.
        midi = mido.MidiFile(file=io.BytesIO(data), clip=True)
    except Exception as exc:  # mido raises OSError, EOFError, ValueError, KeyError, ... for bad files
        raise UserError(f"{name} is not a readable MIDI file ({_reason(exc)})") from exc
    if midi.type == 2:
        raise UserError(f"{name} is a type 2 MIDI file (independent sequences), which has no single timeline")
    if midi.ticks_per_beat == 0:
        raise UserError(f"{name} is not a readable MIDI file (its header gives a time division of 0 ticks)")
    if midi.ticks_per_beat < 0:
        fps, ticks_per_frame = _smpte(midi.ticks_per_beat)
        if fps not in SMPTE_FPS or ticks_per_frame == 0:
            raise UserError(
                f"{name} is not a readable MIDI file (SMPTE time division of {fps} frames per second and "
                f"{ticks_per_frame} ticks per frame; frames per second must be 24, 25, 29 or 30)"
            )
    return midi


def _smpte(division: int) -> tuple[int, int]:
    """(frames-per-second code, ticks per frame) of a negative header division, as mido reads it (signed 16-bit)."""
    return -(division >> 8), division & 0xFF


def timed_messages(midi: mido.MidiFile) -> Iterable[tuple[float, mido.Message]]:
    """(seconds since the start, message) for every message of the merged tracks, under either time division.

    Metrical files (ticks per beat) follow the tempo map, as mido plays them. mido reads an SMPTE division
    (ticks per frame at a frame rate, tempo-free) as a negative ticks-per-beat and would run time backwards,
    so those are timed here: a tick lasts 1 / (frames per second x ticks per frame).
    """
    if midi.ticks_per_beat > 0:
        now = 0.0
        for message in midi:  # mido applies the tempo map: message.time is the delta in seconds
            now += message.time
            yield now, message
        return
    fps, ticks_per_frame = _smpte(midi.ticks_per_beat)
    seconds_per_tick = 1.0 / (SMPTE_FPS[fps] * ticks_per_frame)
    ticks = 0
    for message in midi.merged_track:  # delta times in ticks
        ticks += message.time
        yield ticks * seconds_per_tick, message


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    if isinstance(exc, EOFError) or not text:
        return "truncated or empty" if isinstance(exc, EOFError) else type(exc).__name__
    return text.splitlines()[0][:120]


def read_midi(path: str | os.PathLike[str]) -> MidiRead:
    """Notes of a MIDI file in AMT units; see the module docstring for the rules."""
    midi = load_midi_file(path)
    try:
        return midi_to_notes(midi)
    except UserError:
        raise
    except Exception as exc:  # a file mido parsed but cannot play back (e.g. a broken tempo)
        raise UserError(f"{path} is not a readable MIDI file ({_reason(exc)})") from exc


def read_midi_tracks(path: str | os.PathLike[str], tracks: Iterable[int]) -> tuple[MidiRead, list[Note]]:
    """Notes of a MIDI file, and those of the given tracks (0-based, as stored) read with the whole file's tempo map.

    A track past the file's last, or one without notes, is a UserError naming the tracks that have notes.
    """
    midi = load_midi_file(path)
    wanted = sorted(set(tracks))
    counts = [sum(1 for m in track if m.type == "note_on" and m.velocity > 0) for track in midi.tracks]
    missing = [t for t in wanted if not 0 <= t < len(counts) or counts[t] == 0]
    if missing:
        have = ", ".join(f"{i} ({_track_name(midi.tracks[i])})" for i, c in enumerate(counts) if c) or "none"
        raise UserError(f"{path} has no notes in track {missing[0]}; its tracks with notes are: {have}")
    try:
        return midi_to_notes(midi), midi_to_notes(_notes_of(midi, set(wanted))).notes
    except Exception as exc:  # as read_midi: a file mido parsed but cannot play back
        raise UserError(f"{path} is not a readable MIDI file ({_reason(exc)})") from exc


def _track_name(track: mido.MidiTrack) -> str:
    return next((m.name for m in track if m.type == "track_name" and m.name.strip()), "unnamed")


def _notes_of(midi: mido.MidiFile, tracks: set[int]) -> mido.MidiFile:
    """A copy whose other tracks keep every message but their notes (tempo maps and programs still apply)."""
    out = mido.MidiFile(type=midi.type, ticks_per_beat=midi.ticks_per_beat)
    for index, track in enumerate(midi.tracks):
        if index in tracks:
            out.tracks.append(track)
            continue
        kept, carried = mido.MidiTrack(), 0
        for message in track:
            if message.type in ("note_on", "note_off"):
                carried += message.time  # delta times: the next kept message keeps its place in time
                continue
            kept.append(message.copy(time=message.time + carried))
            carried = 0
        out.tracks.append(kept)
    return out


def midi_to_notes(midi: mido.MidiFile) -> MidiRead:
    out = MidiRead(notes=[], midi_type=midi.type, tracks=len(midi.tracks))
    onsets: list[int] = []
    durations: list[int] = []
    instruments: list[int] = []
    pitches: list[int] = []
    programs = defaultdict(int)  # channel -> current program; General MIDI starts at 0
    sounding: dict[tuple[int, int], deque[tuple[int, float]]] = defaultdict(deque)  # (channel, pitch)
    for now, message in timed_messages(midi):
        if message.type == "program_change":
            programs[message.channel] = message.program
        elif message.type == "note_on" and message.velocity > 0:
            instrument = DRUM_INSTRUMENT if message.channel == gm.DRUM_CHANNEL else programs[message.channel]
            sounding[(message.channel, message.note)].append((len(onsets), now))
            onsets.append(round(TIME_RESOLUTION * now))
            durations.append(-1)
            instruments.append(instrument)
            pitches.append(message.note)
        elif message.type in ("note_on", "note_off"):
            queue = sounding.get((message.channel, message.note))
            if not queue:
                out.stray_offs += 1
                continue
            index, started = queue.popleft()
            durations[index] = round(TIME_RESOLUTION * (now - started))
    for index, duration in enumerate(durations):
        if duration < 0:
            durations[index] = UNCLOSED_DURATION
            out.unclosed += 1
    out.notes = [Note(*fields) for fields in zip(onsets, durations, instruments, pitches, strict=True)]
    return out


# --- writing ------------------------------------------------------------------


def assign_channels(instruments: Iterable[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Channels for instruments in order of first appearance: (instrument -> channel, merged -> host).

    Drums take channel 9; melodic instruments take the other 15 in order. Past
    15, an instrument shares the channel of the first placed instrument of its
    GM family, else of the placed instrument with the nearest program.
    """
    channels: dict[int, int] = {}
    merged: dict[int, int] = {}
    free = list(gm.MELODIC_CHANNELS)
    for instrument in instruments:
        if instrument in channels:
            continue
        if instrument == DRUM_INSTRUMENT:
            channels[instrument] = gm.DRUM_CHANNEL
        elif free:
            channels[instrument] = free.pop(0)
        else:
            host = _closest_placed(instrument, [i for i in channels if i != DRUM_INSTRUMENT and i not in merged])
            merged[instrument] = host
            channels[instrument] = channels[host]
    return channels, merged


def _closest_placed(instrument: int, placed: Sequence[int]) -> int:
    same_family = [p for p in placed if gm.family(p) == gm.family(instrument)]
    if same_family:
        return same_family[0]
    return min(placed, key=lambda p: (abs(p - instrument), p))


def notes_to_midi(notes: Sequence[Note], grid: Grid = DEFAULT_GRID) -> MidiWritten:
    """A type 1 MIDI file: a conductor track (tempo, meter) and one track per instrument (or shared channel)."""
    ordered = sorted(notes, key=lambda n: n.onset)  # stable: ties keep sequence order, as the reference
    channels, merged = assign_channels(n.instrument for n in ordered)
    midi = mido.MidiFile(type=1, ticks_per_beat=grid.ticks_per_beat)
    midi.tracks.append(_conductor_track(grid))
    scale = grid.ticks_per_step  # MIDI ticks per 10 ms step: whole by construction, so no note moves
    events: dict[int, list[tuple[int, int, int, mido.Message]]] = defaultdict(list)  # channel -> events
    for serial, note in enumerate(ordered):
        channel = channels[note.instrument]
        on = mido.Message("note_on", channel=channel, note=note.pitch, velocity=velocity(note, grid))
        off = mido.Message("note_off", channel=channel, note=note.pitch, velocity=0)
        events[channel].append((note.onset * scale, _START, serial, on))
        events[channel].append((note.end * scale, _END if note.duration else _END_ZERO, serial, off))
    for channel, channel_events in events.items():
        owner = next(i for i, c in channels.items() if c == channel and i not in merged)
        midi.tracks.append(_instrument_track(owner, channel, channel_events))
    repairs: Counter[str] = Counter()
    moved = sum(1 for n in ordered if n.instrument in merged)
    if moved:
        repairs["merged_instrument"] = moved
    return MidiWritten(midi=midi, channels=channels, repairs=repairs, merged=merged)


def velocity(note: Note, grid: Grid) -> int:
    """A note's velocity: the model's constant, or with dynamics its accent by metric level (time and pitch kept)."""
    return ACCENT_VELOCITY[grid.metric_level(note.onset)] if grid.dynamics else DEFAULT_VELOCITY


def _conductor_track(grid: Grid) -> mido.MidiTrack:
    numerator, denominator = grid.meter
    return mido.MidiTrack(
        [
            mido.MetaMessage("track_name", name="midillm-lite"),
            mido.MetaMessage("set_tempo", tempo=grid.microseconds_per_beat),
            mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator),
        ]
    )


def _instrument_track(
    instrument: int, channel: int, events: list[tuple[int, int, int, mido.Message]]
) -> mido.MidiTrack:
    program = 0 if instrument == DRUM_INSTRUMENT else instrument
    track = mido.MidiTrack(
        [
            mido.MetaMessage("track_name", name=gm.instrument_name(instrument)),
            mido.Message("program_change", channel=channel, program=program),
        ]
    )
    previous = 0
    for tick, _, _, message in sorted(events, key=lambda e: e[:3]):
        track.append(message.copy(time=tick - previous))
        previous = tick
    return track


def midi_bytes(midi: mido.MidiFile) -> bytes:
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def save_midi(midi: mido.MidiFile, path: str | os.PathLike[str], *, force: bool = False) -> None:
    """Write atomically; refuses to replace an existing file unless forced."""
    atomic_write_bytes(Path(path), midi_bytes(midi), force=force)
