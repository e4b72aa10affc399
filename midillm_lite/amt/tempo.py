"""Tempo estimation from note onsets: the beat period that puts the most onsets on one phase of a beat grid.

For each candidate tempo (a fine log-spaced grid), onsets are folded onto one
beat and counted in PHASE_BINS bins; the fit is the share of onsets in the best
window of WINDOW_BINS adjacent bins (an eighth of a beat), corrected for what
chance would put there, so a tempo and its double (which fit equally well when
every onset falls on the slower beat) tie, and a log-normal prior around
PRIOR_CENTRE_BPM breaks the tie. The candidate spacing shrinks with the length
of the music (a tempo off by one step drifts at most a bin over the span), so
the search runs twice: over the whole range on the first COARSE_SECONDS, then
within REFINE_SHARE of that on every onset. Estimates are only as good as
BENCHMARKS.md says; octave errors (2x, 1/2x) are the usual kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .vocab import TIME_RESOLUTION

SEARCH_BPM = (40.0, 240.0)  # the range searched when the prompt names no tempo word
MIN_ONSETS = 8  # fewer distinct onsets say nothing about a beat
PHASE_BINS = 16
WINDOW_BINS = 2  # onsets within an eighth of a beat of the grid count as on it
CHANCE = WINDOW_BINS / PHASE_BINS  # the share uniformly random onsets would put in the window
PRIOR_CENTRE_BPM = 110.0  # where tempo octave ties are broken towards (a common middle tempo)
PRIOR_OCTAVES = 0.6  # width of the log-normal prior, in octaves
MIN_FIT = 0.25  # below this the estimate is no better than 120 BPM and is not used
WHOLE_BPM_SHARE = 0.97  # a whole-number BPM within this share of the best fit is preferred (DAWs show it plainly)
COARSE_SECONDS = 30.0  # the whole-range search looks at this much music; the refinement at all of it
REFINE_SHARE = 0.01  # the refinement searches +-1% around the coarse tempo
CANDIDATE_CHUNK = 256  # candidates scored at once (bounds the phase matrix's memory)
SECONDS_PER_MINUTE = 60.0


@dataclass(frozen=True)
class TempoEstimate:
    bpm: float
    fit: float  # chance-corrected share of onsets on the beat grid, 0..1


def estimate_tempo(onsets: Sequence[int], *, band: tuple[float, float] | None = None) -> TempoEstimate | None:
    """The best-fitting tempo for onsets in 10 ms steps, within `band` (BPM) if given; None if nothing fits."""
    times = np.unique(np.asarray(onsets, dtype=np.int64)) / TIME_RESOLUTION
    if times.size < MIN_ONSETS:
        return None
    low, high = band or SEARCH_BPM
    start = times[times <= times[0] + COARSE_SECONDS]
    coarse = _best(start if start.size >= MIN_ONSETS else times, low, high, prior=band is None)
    near = (max(low, coarse * (1 - REFINE_SHARE)), min(high, coarse * (1 + REFINE_SHARE)))
    bpm = _best(times, *near, prior=False)
    fit = float(beat_fits(times, np.array([bpm]))[0])
    whole = float(round(bpm))
    if low <= whole <= high:
        whole_fit = float(beat_fits(times, np.array([whole]))[0])
        if whole_fit >= WHOLE_BPM_SHARE * fit:
            bpm, fit = whole, whole_fit
    return TempoEstimate(bpm, fit) if fit >= MIN_FIT else None


def _best(times: np.ndarray, low: float, high: float, *, prior: bool) -> float:
    candidates = _candidates(low, high, times[-1] - times[0])
    scores = beat_fits(times, candidates) * (_prior(candidates) if prior else 1.0)
    return float(candidates[int(np.argmax(scores))])


def _candidates(low: float, high: float, span_s: float) -> np.ndarray:
    beats = max(span_s * high / SECONDS_PER_MINUTE, 1.0)
    step = 1.0 / (PHASE_BINS * beats)  # relative spacing: over the span, one step drifts at most one bin
    return np.exp(np.arange(np.log(low), np.log(high) + step, step))


def _prior(bpms: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * (np.log2(bpms / PRIOR_CENTRE_BPM) / PRIOR_OCTAVES) ** 2)


def beat_fits(times: np.ndarray, bpms: np.ndarray) -> np.ndarray:
    """Chance-corrected share of onsets (seconds) within the best eighth-of-a-beat window, per candidate tempo."""
    fits = np.empty(bpms.size)
    for start in range(0, bpms.size, CANDIDATE_CHUNK):
        chunk = bpms[start : start + CANDIDATE_CHUNK]
        beats = times[None, :] * (chunk[:, None] / SECONDS_PER_MINUTE)
        bins = (np.floor((beats % 1.0) * PHASE_BINS).astype(np.int64)) % PHASE_BINS
        rows = np.arange(chunk.size)[:, None] * PHASE_BINS
        counts = np.bincount((rows + bins).ravel(), minlength=chunk.size * PHASE_BINS).reshape(chunk.size, -1)
        window = sum(np.roll(counts, -k, axis=1) for k in range(WINDOW_BINS))
        share = window.max(axis=1) / times.size
        fits[start : start + chunk.size] = np.clip((share - CHANCE) / (1 - CHANCE), 0.0, 1.0)
    return fits
