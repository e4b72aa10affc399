"""Renderings and captions: which General MIDI ensemble and tempo a piece is played at, and the words that say so.

A rendering maps the score's parts (top voice first) onto an ensemble's
programs and rescales time to a target tempo; its caption names the genre,
composer, key, meter, tempo word with BPM and the instruments, so the model
learns to follow instrument and tempo words. Pure functions of a seeded RNG.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# Tempo words and the BPM ranges a rendering draws from; the boundaries are what the captions mean by them.
TEMPO_BANDS = {"slow": (48, 72), "moderate": (84, 112), "fast": (132, 176)}


def tempo_word(bpm: float) -> str:
    if bpm < 78:
        return "slow"
    return "moderate" if bpm <= 120 else "fast"


@dataclass(frozen=True)
class Ensemble:
    """Programs for up to len(programs) voices, top voice first; extra voices reuse the last program."""

    name: str  # what a caption calls it
    programs: tuple[int, ...]
    max_voices: int = 16

    def program(self, voice: int) -> int:
        return self.programs[min(voice, len(self.programs) - 1)]

    def instruments(self, voices: int) -> list[str]:
        """Distinct instrument words in voice order, as a caption lists them."""
        words: list[str] = []
        for voice in range(voices):
            word = INSTRUMENT_WORDS[self.program(voice)]
            if word not in words:
                words.append(word)
        return words


# Short caption words for the programs the ensembles use (GM names are long: "String Ensemble 1").
INSTRUMENT_WORDS = {
    0: "piano", 6: "harpsichord", 19: "church organ", 21: "accordion", 22: "harmonica", 24: "acoustic guitar",
    40: "violin", 41: "viola", 42: "cello", 43: "contrabass", 46: "harp", 48: "strings", 52: "choir",
    56: "trumpet", 57: "trombone", 58: "tuba", 60: "french horn", 68: "oboe", 70: "bassoon", 71: "clarinet",
    73: "flute", 74: "recorder",
}  # fmt: skip

ENSEMBLES = (
    Ensemble("solo piano", (0,)),
    Ensemble("string quartet", (40, 40, 41, 42)),
    Ensemble("string orchestra", (48,)),
    Ensemble("woodwind quartet", (73, 68, 71, 70)),
    Ensemble("brass ensemble", (56, 56, 60, 57, 58)),
    Ensemble("choir", (52,)),
    Ensemble("church organ", (19,)),
    Ensemble("harpsichord", (6,)),
    Ensemble("acoustic guitar", (24,), max_voices=3),
    Ensemble("harp", (46,), max_voices=4),
    Ensemble("flute and strings", (73, 40, 41, 42)),
)
SOLO = tuple(Ensemble(INSTRUMENT_WORDS[p], (p,)) for p in (40, 73, 0, 24, 21, 22, 71, 74, 68))


@dataclass(frozen=True)
class PieceInfo:
    collection: str
    genre: str
    composer: str | None
    title: str
    key: str | None  # "G major"
    meter: str | None  # "3/4"
    bpm: float  # the score's tempo (quarter notes a minute)
    voices: int


@dataclass(frozen=True)
class Rendering:
    ensemble: Ensemble
    bpm: float  # tempo it is played at
    time_scale: float  # factor on onsets and durations (score tempo / new tempo)
    caption: str


def choose_rendering(piece: PieceInfo, rng: random.Random, *, original: bool) -> Rendering:
    """One ensemble and tempo for `piece`; `original` keeps the score's tempo."""
    pool = SOLO if piece.voices == 1 else tuple(e for e in ENSEMBLES if piece.voices <= e.max_voices)
    ensemble = rng.choice(pool)
    if original:
        bpm = piece.bpm
    else:
        low, high = TEMPO_BANDS[rng.choice(tuple(TEMPO_BANDS))]
        bpm = float(rng.randint(low, high))
    return Rendering(ensemble, bpm, piece.bpm / bpm, caption(piece, ensemble, bpm, rng))


def _performers(ensemble: Ensemble, voices: int) -> str:
    words = ensemble.instruments(voices)
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    if ensemble.name in INSTRUMENT_WORDS.values():  # a one-instrument ensemble: name the instrument
        return listed if voices == 1 else f"{listed} ({voices} voices)"
    article = "an" if ensemble.name[0] in "aeiou" else "a"
    if len(words) == 1:  # "a string orchestra", not "a string orchestra (strings)"
        return f"{article} {ensemble.name}"
    return f"{article} {ensemble.name} ({listed})"


def caption(piece: PieceInfo, ensemble: Ensemble, bpm: float, rng: random.Random) -> str:
    """A MidiCaps-style description; optional facts are dropped at random so short prompts work too."""
    word = tempo_word(bpm)
    performers = _performers(ensemble, piece.voices)
    by = f" by {piece.composer}" if piece.composer and rng.random() < 0.7 else ""
    key = f" in {piece.key}" if piece.key and rng.random() < 0.7 else ""
    meter = f" in {piece.meter} time" if piece.meter and rng.random() < 0.5 else ""
    bpm_text = f" of {round(bpm)} BPM" if rng.random() < 0.6 else ""
    templates = (
        f"A {word} {piece.genre}{by}{key}, played by {performers}. It moves at a {word} tempo{bpm_text}{meter}.",
        f"{piece.genre[0].upper()}{piece.genre[1:]}{by} for {performers}{key}, {word} tempo{bpm_text}.",
        f"A {word} piece for {performers}{key}{meter}.",
        f"{performers[0].upper()}{performers[1:]} plays a {word} {piece.genre}{key}, at {round(bpm)} BPM.",
    )
    return rng.choice(templates)
