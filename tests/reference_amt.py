"""An independent oracle of the AMT reference codec (jthickstun/anticipation, anticipation/convert.py).

The reference package is not installable here, so this re-states its semantics
on aligned triplets, literally and without any repair: `events_to_midi` (what
the reference decoder writes) and `midi_to_notes` (what its encoder reads,
keying note-offs by (program, pitch, channel) as it does). It raises where the
reference raises. Numbers are spelled out on purpose: the oracle must not share
constants with the code under test.
"""

from __future__ import annotations

from collections import defaultdict

import mido

REF_TIME_RESOLUTION = 100
REF_DUR_OFFSET = 10_000
REF_NOTE_OFFSET = 11_000
REF_REST = 27_512
REF_CONTROL_OFFSET = 27_513
REF_SEPARATOR = 55_025


def events_to_notes(tokens: list[int]) -> list[tuple[int, int, int, int]]:
    """(onset, duration, instrument, pitch) per note, as the reference's events_to_compound."""
    assert len(tokens) % 3 == 0, "the reference reads aligned triplets"
    triplets = [tuple(tokens[i : i + 3]) for i in range(0, len(tokens), 3)]
    triplets = [t for t in triplets if t[2] != REF_REST]
    notes = []
    offset = segment_max = 0
    for triplet in triplets:
        if triplet[2] == REF_SEPARATOR:
            offset += segment_max
            segment_max = 0
            continue
        time, dur, note = (t - REF_CONTROL_OFFSET if t >= REF_CONTROL_OFFSET else t for t in triplet)
        time, dur, note = time, dur - REF_DUR_OFFSET, note - REF_NOTE_OFFSET
        assert 0 <= time < REF_DUR_OFFSET and 0 <= dur < 1000 and 0 <= note < 128 * 129
        segment_max = max(segment_max, time + dur)
        notes.append((time + offset, dur, note // 128, note % 128))
    return notes


def events_to_midi(tokens: list[int]) -> mido.MidiFile:
    """The reference decoder's MIDI file (compound_to_midi): onsets sort before offsets at a tick."""
    midi = mido.MidiFile()
    midi.ticks_per_beat = REF_TIME_RESOLUTION // 2
    by_time: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for onset, dur, instrument, pitch in events_to_notes(tokens):
        by_time[(onset, 0)].append((pitch, instrument))
        by_time[(onset + dur, 1)].append((pitch, instrument))
    tracks: dict[int, list] = {}  # instrument -> [track, last tick, channel]
    next_channel = 0
    for tick, is_off in sorted(by_time):
        for pitch, instrument in by_time[(tick, is_off)]:
            if instrument not in tracks:
                if is_off:
                    continue
                channel = 9 if instrument == 128 else next_channel
                track = mido.MidiTrack()
                midi.tracks.append(track)
                track.append(mido.Message("program_change", channel=channel, program=0 if channel == 9 else instrument))
                tracks[instrument] = [track, 0, channel]
                next_channel += 1
                if next_channel == 9:
                    next_channel = 10
            track, last, channel = tracks[instrument]
            kind = "note_off" if is_off else "note_on"
            velocity = 0 if is_off else 72
            track.append(mido.Message(kind, note=pitch, channel=channel, velocity=velocity, time=tick - last))
            tracks[instrument][1] = tick
    return midi


def midi_to_notes(midi: mido.MidiFile) -> list[tuple[int, int, int, int]]:
    """(onset, duration, instrument, pitch) per note-on, as the reference's midi_to_compound + compound_to_events."""
    notes: list[list[int]] = []
    sounding: dict[tuple[int, int, int], list[tuple[int, float]]] = defaultdict(list)
    programs: dict[int, int] = defaultdict(int)
    now = 0.0
    for message in midi:
        now += message.time
        if message.type == "program_change":
            programs[message.channel] = message.program
        elif message.type in ("note_on", "note_off"):
            instrument = 128 if message.channel == 9 else programs[message.channel]
            key = (instrument, message.note, message.channel)
            if message.type == "note_on" and message.velocity > 0:
                sounding[key].append((len(notes), now))
                notes.append([round(REF_TIME_RESOLUTION * now), -1, instrument, message.note])
            elif sounding[key]:
                index, started = sounding[key].pop(0)
                notes[index][1] = round(REF_TIME_RESOLUTION * (now - started))
    return [(on, REF_TIME_RESOLUTION // 4 if d == -1 else min(d, 999), i, p) for on, d, i, p in notes]


# --- anticipation (anticipation/ops.py, tokenize.py, sample.py) ---------------------------------------------------
# The reference's infilling semantics on token lists, restated for the tests of amt/anticipation.py: ops.pad,
# ops.anticipate, ops.clip (inclusive at both ends, in ticks), tokenize.extract_instruments, and the token sequence
# sample.generate builds when its "model" is a script of triplets.
REF_ATIME_OFFSET = REF_CONTROL_OFFSET
REF_DELTA = 5 * REF_TIME_RESOLUTION


def ref_pad(tokens: list[int], end_time: int, density: int = REF_TIME_RESOLUTION) -> list[int]:
    out, previous = [], 0
    for time, dur, note in zip(tokens[0::3], tokens[1::3], tokens[2::3], strict=True):
        assert note < REF_CONTROL_OFFSET
        while time > previous + density:
            out.extend([previous + density, REF_DUR_OFFSET, REF_REST])
            previous += density
        out.extend([time, dur, note])
        previous = time
    while end_time > previous + density:
        out.extend([previous + density, REF_DUR_OFFSET, REF_REST])
        previous += density
    return out


def ref_anticipate(events: list[int], controls: list[int], delta: int = REF_DELTA) -> tuple[list[int], list[int]]:
    if not controls:
        return list(events), []
    tokens, event_time = [], 0
    control_time = controls[0] - REF_ATIME_OFFSET
    for time, dur, note in zip(events[0::3], events[1::3], events[2::3], strict=True):
        while event_time >= control_time - delta:
            tokens.extend(controls[0:3])
            controls = controls[3:]
            control_time = controls[0] - REF_ATIME_OFFSET if controls else float("inf")
        assert note < REF_CONTROL_OFFSET
        event_time = time
        tokens.extend([time, dur, note])
    return tokens, controls


def ref_clip(tokens: list[int], start: int, end: int) -> list[int]:
    """Triplets whose time is in [start, end] (ticks), durations untouched (clip_duration=False)."""
    out = []
    for time, dur, note in zip(tokens[0::3], tokens[1::3], tokens[2::3], strict=True):
        this = time - REF_ATIME_OFFSET if note >= REF_CONTROL_OFFSET else time
        if start <= this <= end:
            out.extend([time, dur, note])
    return out


def ref_extract_instruments(events: list[int], instruments: set[int]) -> tuple[list[int], list[int]]:
    kept_events, controls = [], []
    for time, dur, note in zip(events[0::3], events[1::3], events[2::3], strict=True):
        if (note - REF_NOTE_OFFSET) // 128 in instruments:
            controls.extend([REF_CONTROL_OFFSET + time, REF_CONTROL_OFFSET + dur, REF_CONTROL_OFFSET + note])
        else:
            kept_events.extend([time, dur, note])
    return kept_events, controls


def ref_sort(tokens: list[int]) -> list[int]:
    triplets = [tokens[i : i + 3] for i in range(0, len(tokens), 3)]
    return [t for triplet in sorted(triplets, key=lambda t: t[0]) for t in triplet]


def ref_generate(history: list[int], controls: list[int], start: int, end: int, script: list[list[int]],
                 delta: int = REF_DELTA) -> list[int]:  # fmt: skip
    """The tokens after ANTICIPATE that sample.generate builds (history: events before `start`, controls sorted),
    with `script` standing in for add_token: its triplets come out in order until one reaches `end`."""
    prompt = ref_pad(history, start)
    tokens, controls = ref_anticipate(prompt, controls, delta)
    current = max(prompt[0::3], default=0)
    script = list(script)
    while True:
        while controls and current >= controls[0] - REF_ATIME_OFFSET - delta:
            tokens.extend(controls[0:3])
            controls = controls[3:]
        new = script.pop(0)
        if new[0] >= end:
            return tokens
        assert new[0] >= max(start, current), "the script must respect future_logits"
        tokens.extend(new)
        current = new[0]
