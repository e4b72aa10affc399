"""The tempo grid a MIDI file is written on: tempo, meter, where each came from, tick arithmetic, metric levels.

A DAW lines its bars up with the file's `set_tempo` and `time_signature`, but
the notes must keep their times in seconds (the model's 10 ms arrival times).
So the grid only chooses how seconds are *labelled*: `set_tempo` holds whole
microseconds a beat and `ticks_per_beat` is at most 15 bits, and both are
chosen so that one 10 ms step is a whole number of MIDI ticks. Every onset and
duration then lands on an integer tick and decodes back to the same 10 ms step.

Tempos are quarter notes a minute (the MIDI beat), whatever the meter's
denominator, as MidiCaps-style captions count them. Metric levels (downbeat,
beat, off-beat) count bars from time zero, as a DAW does; `--dynamics` turns
them into velocities (amt/midi.py). A meter not given is estimated by amt/meter.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import Opt, UserError
from .vocab import TIME_RESOLUTION

MICROSECONDS_PER_SECOND = 1_000_000
MICROSECONDS_PER_MINUTE = 60 * MICROSECONDS_PER_SECOND
MICROSECONDS_PER_STEP = MICROSECONDS_PER_SECOND // TIME_RESOLUTION  # one AMT arrival-time step: 10 ms
MAX_TICKS_PER_BEAT = 0x7FFF  # the header's division field: 15 bits (the top bit means SMPTE time)
# Any tempo within this many microseconds a beat of the one asked for may be written; a multiple of 100 always
# gives ticks_per_beat <= 32767 for tempos down to 18 BPM, so the search never fails in the allowed range.
TEMPO_SEARCH_US = 100
MIN_BPM = 20.0
MAX_BPM = 400.0
DEFAULT_BPM = 120.0
DEFAULT_METER = (4, 4)
METER_DENOMINATORS = (1, 2, 4, 8, 16, 32)
MAX_METER_NUMERATOR = 32
QUARTER = 4  # the denominator whose note is the MIDI beat
COMPOUND_BEAT = 3  # in 6/8, 9/8, 12/8 a counted beat is three of the denominator's notes (a dotted quarter)
AUTO = "auto"
DYNAMICS_NAME = "beat accents"  # what the stats call --dynamics' post-processing

# Metric levels of an onset on a grid, strongest first (what --dynamics accents).
DOWNBEAT, BEAT, OFFBEAT = range(3)
ON_BEAT_SHARE = 1 / 16  # an onset this close to a beat (in beats) is on it: the tempo estimator's window, halved
HALF_STEP_SECONDS = 0.5 / TIME_RESOLUTION  # and always one rounded to the nearest 10 ms step

# Where a tempo or meter came from, as the stats record it.
SOURCE_FLAG = "flag"
SOURCE_PROMPT = "prompt"
SOURCE_WORD_ESTIMATE = "prompt word + estimate"
SOURCE_PROMPT_WORD = "prompt word"
SOURCE_ESTIMATE = "estimate"
SOURCE_DEFAULT = "default"

# Tempo words and the BPM ranges they mean: Italian markings (common metronome ranges) and the plain words the demo
# model's captions use (demo/captions.py TEMPO_BANDS). Longer words first, so "prestissimo" is not read as "presto".
TEMPO_WORDS: dict[str, tuple[float, float]] = {
    "prestissimo": (200, 240),
    "allegretto": (100, 128),
    "moderato": (108, 120),
    "andante": (73, 108),
    "allegro": (120, 156),
    "adagio": (55, 76),
    "vivace": (156, 176),
    "presto": (168, 200),
    "largo": (40, 60),
    "lento": (45, 60),
    "grave": (25, 45),
    "moderate": (84, 112),
    "slow": (48, 72),
    "fast": (132, 176),
}

_NUMBER = r"(\d{1,3}(?:\.\d+)?)"
_BPM_PATTERNS = (
    re.compile(_NUMBER + r"\s*(?:bpm\b|beats?\s+(?:per|a|an)\s+minute)", re.IGNORECASE),
    re.compile(r"\b(?:tempo|metronome)\s*(?:of|at|=|:|is)?\s*(?:about\s+|around\s+)?" + _NUMBER + r"\b", re.IGNORECASE),
)
_METER_PATTERN = re.compile(r"(?<![\d/])(\d{1,2})\s*/\s*(\d{1,2})(?![\d/])")
_WORD_PATTERN = re.compile(r"\b(" + "|".join(TEMPO_WORDS) + r")\b", re.IGNORECASE)


@dataclass(frozen=True)
class Grid:
    """A resolved grid: the tempo and meter a file is written with, and where they came from."""

    bpm: float = DEFAULT_BPM
    meter: tuple[int, int] = DEFAULT_METER
    tempo_source: str = SOURCE_DEFAULT
    meter_source: str = SOURCE_DEFAULT
    fit: float | None = None  # the estimate's fit score (0: onsets ignore the beat .. 1: every onset on it)
    word: str | None = None  # the prompt's tempo word, when one narrowed the estimate
    meter_fit: float | None = None  # the meter estimate's margin (0: 3 and 4 beats fit alike .. 1: only one fits)
    dynamics: bool = False  # velocities accent the downbeats and beats (midi.ACCENT_VELOCITY by metric_level)

    @property
    def microseconds_per_beat(self) -> int:
        return exact_tempo(self.bpm)[0]

    @property
    def ticks_per_beat(self) -> int:
        return exact_tempo(self.bpm)[1]

    @property
    def ticks_per_step(self) -> int:
        """MIDI ticks in one 10 ms step (a whole number by construction)."""
        mpb, tpb = exact_tempo(self.bpm)
        return MICROSECONDS_PER_STEP * tpb // mpb

    @property
    def written_bpm(self) -> float:
        """The tempo the file states (the asked-for one moved by at most TEMPO_SEARCH_US microseconds a beat)."""
        return MICROSECONDS_PER_MINUTE / self.microseconds_per_beat

    def bar_seconds(self) -> float:
        numerator, denominator = self.meter
        return numerator * (QUARTER / denominator) * self.microseconds_per_beat / MICROSECONDS_PER_SECOND

    def beats_per_bar(self) -> int:
        """Counted beats in a bar: the numerator, or a third of it in compound meters (6/8 has two beats)."""
        numerator, _ = self.meter
        return numerator // COMPOUND_BEAT if self._compound() else numerator

    def beat_seconds(self) -> float:
        """How long a counted beat lasts: the denominator's note, or three of them in compound meters."""
        return self.bar_seconds() / self.beats_per_bar()

    def _compound(self) -> bool:
        numerator, denominator = self.meter
        return denominator >= 8 and numerator > COMPOUND_BEAT and numerator % COMPOUND_BEAT == 0

    def metric_level(self, onset: int) -> int:
        """DOWNBEAT, BEAT or OFFBEAT: where an onset (10 ms steps) falls on this grid, bars counted from time 0."""
        beat = self.beat_seconds()
        position = onset / TIME_RESOLUTION / beat  # in beats
        nearest = round(position)
        if abs(position - nearest) > max(ON_BEAT_SHARE, HALF_STEP_SECONDS / beat):
            return OFFBEAT
        return DOWNBEAT if nearest % self.beats_per_bar() == 0 else BEAT

    def to_dict(self) -> dict:
        return {
            "bpm": round(self.written_bpm, 4),
            "meter": f"{self.meter[0]}/{self.meter[1]}",
            "tempo_source": self.tempo_source,
            "meter_source": self.meter_source,
            "fit": None if self.fit is None else round(self.fit, 3),
            "word": self.word,
            "meter_fit": None if self.meter_fit is None else round(self.meter_fit, 3),
            "dynamics": DYNAMICS_NAME if self.dynamics else None,
            "ticks_per_beat": self.ticks_per_beat,
        }


DEFAULT_GRID = Grid()


def exact_tempo(bpm: float) -> tuple[int, int]:
    """(microseconds a beat, ticks a beat) nearest `bpm` at which 10 ms is a whole number of ticks.

    ticks_per_beat = mpb / gcd(mpb, 10_000) is the smallest division with that
    property; the search takes the nearest mpb whose division fits 15 bits.
    """
    target = MICROSECONDS_PER_MINUTE / bpm
    centre = round(target)
    for delta in sorted(range(-TEMPO_SEARCH_US, TEMPO_SEARCH_US + 1), key=lambda d: (abs(centre + d - target), d)):
        mpb = centre + delta
        tpb = mpb // math.gcd(mpb, MICROSECONDS_PER_STEP)
        if 0 < tpb <= MAX_TICKS_PER_BEAT:
            return mpb, tpb
    raise UserError(f"no MIDI tempo near {bpm} BPM keeps 10 ms on whole ticks; use ", Opt("tempo"), " 20..400")


# --- what the user says ---------------------------------------------------------------------------


def parse_tempo(text: str | float | None) -> float | None:
    """A tempo flag: a BPM number in [MIN_BPM, MAX_BPM], or None for 'auto' (prompt, then estimate)."""
    if text is None or (isinstance(text, str) and text.strip().lower() == AUTO):
        return None
    try:
        bpm = float(text)
    except ValueError:
        raise UserError(Opt("tempo"), f" takes beats a minute (like 96) or {AUTO}, not {text!r}") from None
    if not MIN_BPM <= bpm <= MAX_BPM:  # also rejects NaN
        raise UserError(Opt("tempo"), f" must be between {MIN_BPM:g} and {MAX_BPM:g} BPM, not {text}")
    return bpm


def parse_meter(text: str | None) -> tuple[int, int] | None:
    """A meter flag: 'N/D' (D a power of two up to 32, N 1..32), or None for 'auto'."""
    if text is None or text.strip().lower() == AUTO:
        return None
    match = re.fullmatch(r"\s*(\d{1,3})\s*/\s*(\d{1,3})\s*", text)
    meter = (int(match[1]), int(match[2])) if match else None
    if meter is None or not valid_meter(meter):
        raise UserError(
            Opt("meter"), f" takes N/D like 4/4, 3/4 or 6/8 (D one of {METER_DENOMINATORS}) or {AUTO}, not {text!r}"
        )
    return meter


def valid_meter(meter: tuple[int, int]) -> bool:
    numerator, denominator = meter
    return 1 <= numerator <= MAX_METER_NUMERATOR and denominator in METER_DENOMINATORS


def tempo_in_text(text: str) -> float | None:
    """The first BPM figure a description states ('at 120 BPM', 'tempo of 96'), if it is a plausible tempo."""
    for pattern in _BPM_PATTERNS:
        for match in pattern.finditer(text):
            bpm = float(match[1])
            if MIN_BPM <= bpm <= MAX_BPM:
                return bpm
    return None


def meter_in_text(text: str) -> tuple[int, int] | None:
    """The first time signature a description states ('in 3/4', 'a 6/8 time signature')."""
    for match in _METER_PATTERN.finditer(text):
        meter = (int(match[1]), int(match[2]))
        if valid_meter(meter) and meter[1] >= 2:  # "1/1" and the like are not meters anyone writes
            return meter
    return None


def tempo_word_in_text(text: str) -> str | None:
    """The first tempo word of a description ('a fast-paced ...', 'Andante'), lower-cased."""
    match = _WORD_PATTERN.search(text)
    return match[1].lower() if match else None


# --- resolving -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridRequest:
    """What is known before the music exists: a tempo and meter given or stated, or a tempo word to narrow to."""

    bpm: float | None = None
    tempo_source: str = SOURCE_DEFAULT
    word: str | None = None
    meter: tuple[int, int] | None = None
    meter_source: str = SOURCE_DEFAULT
    dynamics: bool = False

    @classmethod
    def from_prompt(
        cls, prompt: str, *, bpm: float | None = None, meter: tuple[int, int] | None = None, dynamics: bool = False
    ) -> GridRequest:
        """Flags first, then what the prompt states; what neither gives is estimated (4/4 when a meter is not clear)."""
        stated_bpm = tempo_in_text(prompt)
        stated_meter = meter_in_text(prompt)
        return cls(
            bpm=bpm if bpm is not None else stated_bpm,
            tempo_source=SOURCE_FLAG if bpm is not None else SOURCE_PROMPT if stated_bpm else SOURCE_DEFAULT,
            word=tempo_word_in_text(prompt),
            meter=meter or stated_meter,
            meter_source=SOURCE_FLAG if meter else SOURCE_PROMPT if stated_meter else SOURCE_DEFAULT,
            dynamics=dynamics,
        )

    def resolve(self, onsets: Sequence[int], durations: Sequence[int] | None = None) -> Grid:
        """The grid for notes with these onsets and durations (10 ms steps; durations weigh the meter estimate)."""
        bpm, tempo_source, fit = self._tempo(onsets)
        meter, meter_source, meter_fit = self.meter, self.meter_source, None
        if meter is None and tempo_source not in (SOURCE_DEFAULT, SOURCE_PROMPT_WORD):  # a tempo that fits the notes
            meter, meter_source, meter_fit = _meter(onsets, durations, bpm)
        word = None if self.bpm is not None else self.word  # the word narrowed an estimate or stood in for one
        return Grid(bpm, meter or DEFAULT_METER, tempo_source, meter_source, fit=fit, word=word, meter_fit=meter_fit,
                    dynamics=self.dynamics)  # fmt: skip

    def _tempo(self, onsets: Sequence[int]) -> tuple[float, str, float | None]:
        """(BPM, source, fit): the given tempo, else estimated (within a tempo word's range), else 120 BPM."""
        from .tempo import estimate_tempo

        if self.bpm is not None:
            return self.bpm, self.tempo_source, None
        band = TEMPO_WORDS.get(self.word) if self.word else None
        estimate = estimate_tempo(onsets, band=band)
        if estimate is not None:
            return estimate.bpm, SOURCE_WORD_ESTIMATE if band else SOURCE_ESTIMATE, estimate.fit
        if band:  # too few onsets to estimate: the middle of what the word means
            return round(sum(band) / 2), SOURCE_PROMPT_WORD, None
        return DEFAULT_BPM, SOURCE_DEFAULT, None


def _meter(
    onsets: Sequence[int], durations: Sequence[int] | None, bpm: float
) -> tuple[tuple[int, int], str, float | None]:
    """(meter, source, fit) estimated at `bpm`; 4/4 (source default, with the weak fit) when the evidence is weak."""
    from .meter import MIN_METER_FIT, estimate_meter

    estimate = estimate_meter(onsets, durations if durations is not None else [0] * len(onsets), bpm)
    if estimate is None:
        return DEFAULT_METER, SOURCE_DEFAULT, None
    if estimate.fit < MIN_METER_FIT:
        return DEFAULT_METER, SOURCE_DEFAULT, estimate.fit
    return estimate.meter, SOURCE_ESTIMATE, estimate.fit
