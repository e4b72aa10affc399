"""What happens to rendered samples before encoding, as in the reference: silence trimmed at 30 dB, integrated
loudness set to a target (-18 LUFS, measured with pyloudnorm's ITU-R BS.1770-4 meter), peaks limited below clipping.

The trim and the limiter are a few numpy lines written here: the libraries that have them (librosa, pedalboard) pull
in far more than they would do (numba, or a GPL-3 binary) for two small functions.
"""

from __future__ import annotations

import numpy as np

TRIM_TOP_DB = 30.0  # frames this far below the loudest frame are silence (librosa.effects.trim's rule and default)
TRIM_FRAME = 2048
TRIM_HOP = 512
DEFAULT_LOUDNESS = -18.0  # LUFS, integrated: the reference's target
PEAK_CEILING = 10 ** (-1.0 / 20)  # -1 dBFS: headroom for the overshoot of lossy decoders
LIMITER_WINDOW_S = 0.005  # attack and release of the limiter's gain
LOUDNESS_PASSES = 4  # limiting lowers loudness a little; a few gain-then-limit passes converge on the target
LOUDNESS_TOLERANCE_LU = 0.1
MIN_METER_S = 0.4  # pyloudnorm's gating block: shorter audio is padded with silence, which the gate ignores
SILENT_LUFS = -70.0  # BS.1770's absolute gate: below it the meter sees nothing


def trim_silence(samples: np.ndarray, *, top_db: float = TRIM_TOP_DB) -> np.ndarray:
    """`samples` (frames, channels) without the leading and trailing frames quieter than the loudest by top_db.

    RMS over TRIM_FRAME-sample windows every TRIM_HOP samples, as librosa.effects.trim measures; an all-silent
    input comes back empty.
    """
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if len(mono) == 0:
        return samples
    padded = np.pad(mono.astype(np.float64), TRIM_FRAME // 2)  # centred frames, as librosa's
    frames = np.lib.stride_tricks.sliding_window_view(padded, TRIM_FRAME)[::TRIM_HOP]
    rms = np.sqrt(np.mean(frames**2, axis=1))
    peak = rms.max()
    if peak <= 0:
        return samples[:0]
    loud = np.flatnonzero(20 * np.log10(np.maximum(rms, 1e-12) / peak) > -top_db)
    start = loud[0] * TRIM_HOP
    end = min(len(mono), (loud[-1] + 1) * TRIM_HOP)
    return samples[start:end]


def integrated_loudness(samples: np.ndarray, rate: int) -> float:
    """Integrated loudness in LUFS (pyloudnorm); -inf for silence."""
    import pyloudnorm

    min_frames = int(MIN_METER_S * rate) + 1
    if len(samples) < min_frames:
        samples = np.pad(samples, ((0, min_frames - len(samples)), (0, 0)))
    return float(pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64)))


def limit_peaks(samples: np.ndarray, rate: int, *, ceiling: float = PEAK_CEILING) -> np.ndarray:
    """A look-ahead peak limiter: every sample ends at or below `ceiling`, the gain moving smoothly around peaks.

    The gain each sample needs is min-filtered over two windows and then averaged over one: every average is of
    values no larger than the gain at its centre, so no sample overshoots, and the gain ramps over a window.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    peak = np.abs(samples).max(axis=1) if samples.ndim == 2 else np.abs(samples)
    if len(peak) == 0 or peak.max() <= ceiling:
        return samples
    window = max(1, int(LIMITER_WINDOW_S * rate))
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    gain = uniform_filter1d(minimum_filter1d(need, 2 * window + 1, mode="nearest"), window, mode="nearest")
    gain = np.minimum(gain, need)  # float rounding in the averages must not let a peak through
    return (samples * (gain[:, None] if samples.ndim == 2 else gain)).astype(samples.dtype)


def normalize(samples: np.ndarray, rate: int, *, target: float = DEFAULT_LOUDNESS) -> tuple[np.ndarray, float]:
    """`samples` at `target` LUFS with peaks limited to PEAK_CEILING, and the loudness measured at the end."""
    level = integrated_loudness(samples, rate)
    for _ in range(LOUDNESS_PASSES):
        if not np.isfinite(level) or abs(level - target) <= LOUDNESS_TOLERANCE_LU:
            break
        samples = limit_peaks(samples * np.float32(10 ** ((target - level) / 20)), rate)
        level = integrated_loudness(samples, rate)
    limited = limit_peaks(samples, rate)  # an input already at the target may still peak past the ceiling
    if limited is not samples:
        samples, level = limited, integrated_loudness(limited, rate)
    return samples, level
