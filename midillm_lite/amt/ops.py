"""What an AMT id is: its kind, the value it carries, and note tokens <-> (instrument, pitch).

The range tests the codec, the sampler, the converter's token names and the
generation loop all need live here, beside the vocabulary, as in AMT's own
`ops.py`; every other module asks these functions instead of comparing offsets.
"""

from __future__ import annotations

from .vocab import (
    ATIME_OFFSET,
    CONTROL_END,
    CONTROL_OFFSET,
    DUR_OFFSET,
    MAX_PITCH,
    NOTE_OFFSET,
    REST,
    TIME_OFFSET,
    TIME_RESOLUTION,
)

Range = tuple[int, int]  # [start, end) in AMT ids


def is_time(amt_id: int) -> bool:
    """An arrival-time event token."""
    return TIME_OFFSET <= amt_id < DUR_OFFSET


def is_duration(amt_id: int) -> bool:
    return DUR_OFFSET <= amt_id < NOTE_OFFSET


def is_note(amt_id: int) -> bool:
    """An instrument-pitch event token (REST is not a note)."""
    return NOTE_OFFSET <= amt_id < REST


def is_control(amt_id: int) -> bool:
    """A token of the anticipated-control block, which mirrors the event block."""
    return CONTROL_OFFSET <= amt_id < CONTROL_END


def as_event(amt_id: int) -> int:
    """A control token folded onto the event token it mirrors; event tokens pass through."""
    return amt_id - CONTROL_OFFSET if is_control(amt_id) else amt_id


def as_control(amt_id: int) -> int:
    """An event-block token (REST included) moved to the control block it mirrors, as AMT's CONTROL_OFFSET + token."""
    assert 0 <= amt_id < CONTROL_OFFSET, f"{amt_id} is not an event-block token"
    return amt_id + CONTROL_OFFSET


def is_control_time(amt_id: int) -> bool:
    """The arrival-time token of a control triplet."""
    return ATIME_OFFSET <= amt_id < ATIME_OFFSET + (DUR_OFFSET - TIME_OFFSET)


def control_time_ticks(amt_id: int) -> int:
    """The time of a control triplet's arrival-time token, in 10 ms ticks."""
    return amt_id - ATIME_OFFSET


def time_ticks(amt_id: int) -> int:
    """The arrival time of a time token, in 10 ms ticks."""
    return amt_id - TIME_OFFSET


def time_seconds(amt_id: int) -> float:
    return time_ticks(amt_id) / TIME_RESOLUTION


def duration_ticks(amt_id: int) -> int:
    return amt_id - DUR_OFFSET


def instrument_pitch(amt_id: int) -> tuple[int, int]:
    """(AMT instrument, MIDI pitch) of an instrument-pitch token."""
    return divmod(amt_id - NOTE_OFFSET, MAX_PITCH)


def instrument_of(amt_id: int) -> int:
    """The AMT instrument (GM program, or DRUM_INSTRUMENT) of an instrument-pitch token."""
    return (amt_id - NOTE_OFFSET) // MAX_PITCH


def note_token(instrument: int, pitch: int) -> int:
    """The instrument-pitch token of an AMT instrument and a MIDI pitch."""
    return NOTE_OFFSET + MAX_PITCH * instrument + pitch


def note_range(instrument: int) -> Range:
    """The instrument-pitch tokens of one instrument, as an id range."""
    start = note_token(instrument, 0)
    return (start, start + MAX_PITCH)
