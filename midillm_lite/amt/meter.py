"""Meter estimation from notes at a known tempo: whether accents repeat every 3 beats or every 4, and 6/8.

The model writes no velocities, so a metrical accent is what the notes say:
on strong beats more notes start together and longer notes start. Each beat of
the tempo's grid (at the phase where the most note weight falls) gets an
accent: the notes starting within half a tatum of it, each weighing 1 plus its
length in beats (capped at MAX_WEIGHT_BEATS). For a bar of m beats, the beats
are grouped by their place in the bar; m's contrast is how far the strongest
place's mean accent stands above the mean beat, in standard deviations. The
larger contrast of 3 and 4 wins (2/4 music groups as 4/4: its bar lines fall
on every other 4/4 one). A 3-beat winner is 6/8 rather than 3/4 when the
middle of the bar (the second dotted-quarter beat) carries more weight than
both beats 2 and 3.

The fit is the winner's margin, (winner - other) / winner, in 0..1; under
MIN_METER_FIT the evidence is weak and the caller keeps 4/4. Measured on
music21 corpus pieces of known meter in BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .vocab import TIME_RESOLUTION

TATUMS = 12  # grid positions per beat: halves, thirds and quarters of a beat all fall on one
MAX_WEIGHT_BEATS = 4.0  # a note longer than this many beats accents its onset no more than one this long
MIN_BARS = 4  # fewer whole bars (of the longer candidate) than this say nothing about a meter
BAR_BEATS = (3, 4)  # candidates, in beats of the tempo
MIN_METER_FIT = 0.2  # a weaker margin than this leaves the meter at 4/4
SECONDS_PER_MINUTE = 60.0


@dataclass(frozen=True)
class MeterEstimate:
    meter: tuple[int, int]
    fit: float  # the winner's margin over the other bar length, 0..1
    contrasts: dict[int, float]  # bar length in beats -> contrast (for benchmarks and debugging)


def estimate_meter(onsets: Sequence[int], durations: Sequence[int], bpm: float) -> MeterEstimate | None:
    """The meter of notes (onsets and durations in 10 ms steps) at `bpm`; None with too few beats to tell."""
    signal = tatum_signal(onsets, durations, bpm)
    if signal.size < MIN_BARS * max(BAR_BEATS) * TATUMS:
        return None
    phase = int(np.argmax(np.bincount(np.arange(signal.size) % TATUMS, weights=signal, minlength=TATUMS)))
    beats = signal[phase::TATUMS]
    contrasts = {m: bar_contrast(beats, m) for m in BAR_BEATS}
    winner = max(BAR_BEATS, key=lambda m: contrasts[m])
    best, other = contrasts[winner], min(contrasts.values())
    fit = (best - other) / best if best > 0 else 0.0
    meter = (4, 4) if winner == 4 else (6, 8) if _compound(signal, phase) else (3, 4)
    return MeterEstimate(meter, float(fit), contrasts)


def tatum_signal(onsets: Sequence[int], durations: Sequence[int], bpm: float) -> np.ndarray:
    """Note weight at each TATUMS-th of a beat from time zero: 1 + the note's length in beats, capped."""
    steps_per_beat = TIME_RESOLUTION * SECONDS_PER_MINUTE / bpm
    positions = np.asarray(onsets, dtype=np.float64) / steps_per_beat
    lengths = np.asarray(durations, dtype=np.float64) / steps_per_beat
    if positions.size == 0:
        return np.zeros(0)
    weights = 1.0 + np.minimum(lengths, MAX_WEIGHT_BEATS)
    return np.bincount(np.rint(positions * TATUMS).astype(np.int64), weights=weights)


def bar_contrast(beats: np.ndarray, bar: int) -> float:
    """How far the strongest place in a bar of `bar` beats stands above the mean beat, in standard deviations."""
    whole = beats[: beats.size // bar * bar]
    spread = whole.std()
    if spread == 0:
        return 0.0
    places = whole.reshape(-1, bar).mean(axis=0)
    return float((places.max() - whole.mean()) / spread)


def _compound(signal: np.ndarray, phase: int) -> bool:
    """In 3-beat bars, whether the bar's middle (beat 2.5) outweighs beats 2 and 3: two dotted-quarter beats."""
    bar = 3 * TATUMS
    start = phase % bar
    whole = signal[start : start + (signal.size - start) // bar * bar].reshape(-1, bar).sum(axis=0)
    downbeat = int(np.argmax(whole[::TATUMS])) * TATUMS  # where in the bar the strongest beat lies
    profile = np.roll(whole, -downbeat)
    return bool(profile[bar // 2] > max(profile[TATUMS], profile[2 * TATUMS]))
