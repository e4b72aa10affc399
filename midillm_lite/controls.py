"""Hard controls of a generation: which instruments may play, and the tempo, meter and key it is written and asked in.

Words in a prompt are soft (the model may ignore them); these are kept:
instruments mask the sampler's instrument-pitch slot, tempo and meter set the
MIDI file's grid (and dynamics accents its beats in the velocities). Tempo,
meter and key given as controls are also said to the model in the captions'
own words ("…, at 100 BPM, in 3/4 time.") when the prompt does not already
state them, so what it hears agrees with the grid.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from .amt import gm
from .amt.grid import DYNAMICS_NAME, GridRequest, meter_in_text, parse_meter, parse_tempo, tempo_in_text
from .amt.vocab import DRUM_INSTRUMENT
from .errors import Opt, UserError

DRUM_WORDS = ("drums", "drum", "drum kit", "drumkit", "kit")
_KEY_PATTERN = re.compile(r"([a-g])\s*(#|b|sharp|flat)?\s+(major|minor)", re.IGNORECASE)
_KEY_IN_TEXT = re.compile(r"\b[A-G](?:#|b)?\s+(?:major|minor)\b", re.IGNORECASE)
CLOSE_MATCHES = 3


def _normal(name: str) -> str:
    """Lower case, words only: 'Acoustic Guitar (nylon)' -> 'acoustic guitar nylon'."""
    return " ".join(re.findall(r"[a-z0-9+]+", name.lower()))


# Every name an instrument control accepts -> AMT instruments. GM program names name one program; family names
# (piano, strings, brass, ...) all eight of their family's programs.
_NAMES: dict[str, frozenset[int]] = {
    **{_normal(name): frozenset({program}) for program, name in enumerate(gm.PROGRAM_NAMES)},
    **{
        _normal(name): frozenset(range(f * gm.PROGRAMS_PER_FAMILY, (f + 1) * gm.PROGRAMS_PER_FAMILY))
        for f, name in enumerate(gm.FAMILY_NAMES)
    },
    **{word: frozenset({DRUM_INSTRUMENT}) for word in DRUM_WORDS},
}


def parse_instruments(text: str) -> frozenset[int]:
    """A comma-separated instrument list: GM names, GM family names, program numbers 0..127, or drums."""
    chosen: set[int] = set()
    for part in text.split(","):
        if part.strip():
            chosen |= instrument_word(part)
    if not chosen:
        raise UserError(Opt("instruments"), f" names no instrument: {text!r}")
    return frozenset(chosen)


def parse_instrument_groups(text: str, option: str = "keep_instruments") -> list[frozenset[int]]:
    """A comma-separated list as the instruments each entry names (a family names eight); errors name `option`."""
    try:
        groups = [instrument_word(word) for word in text.split(",") if word.strip()]
    except UserError as exc:
        raise UserError(*(Opt(option) if p == Opt("instruments") else p for p in exc.parts)) from None
    if not groups:
        raise UserError(Opt(option), f" names no instrument: {text!r}")
    return groups


def instrument_word(word: str) -> frozenset[int]:
    """One entry of an instrument list; plurals ('violins', 'strings') read as their singular too."""
    name = _normal(word)
    if re.fullmatch(r"\s*[-+]?\d+\s*", word):
        program = int(word)
        if 0 <= program < DRUM_INSTRUMENT:
            return frozenset({program})
        raise UserError(
            Opt("instruments"), f": program numbers run 0..{DRUM_INSTRUMENT - 1} (or say drums), not {word}"
        )
    for candidate in (name, name.removesuffix("s"), name.removesuffix("es")):
        if candidate in _NAMES:
            return _NAMES[candidate]
    close = difflib.get_close_matches(name, list(_NAMES), n=CLOSE_MATCHES)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UserError(
        Opt("instruments"), f": unknown instrument {word.strip()!r} (GM names, families, 0..127, drums){hint}"
    )


def parse_key(text: str | None) -> str | None:
    """A key control like 'C major', 'F# minor', 'Bb major' -> its caption spelling, or None."""
    if text is None:
        return None
    match = _KEY_PATTERN.fullmatch(text.strip())
    if not match:
        raise UserError(Opt("key"), f" takes a key like 'C major', 'F# minor' or 'Bb major', not {text!r}")
    accidental = {"sharp": "#", "flat": "b"}.get((match[2] or "").lower(), match[2] or "")
    return f"{match[1].upper()}{accidental} {match[3].lower()}"


@dataclass(frozen=True)
class ControlFlags:
    """Controls as given (before any prompt): checked once, applied to every prompt."""

    bpm: float | None = None
    meter: tuple[int, int] | None = None
    instruments: frozenset[int] | None = None
    key: str | None = None
    dynamics: bool = False  # accent the grid's downbeats and beats in the velocities (midi.ACCENT_VELOCITY)

    @classmethod
    def parse(
        cls,
        *,
        tempo: str | None = None,
        meter: str | None = None,
        instruments: str | None = None,
        key: str | None = None,
        dynamics: bool = False,
    ) -> ControlFlags:
        return cls(
            bpm=parse_tempo(tempo),
            meter=parse_meter(meter),
            instruments=parse_instruments(instruments) if instruments is not None else None,
            key=parse_key(key),
            dynamics=dynamics,
        )

    def for_prompt(self, prompt: str) -> Controls:
        return Controls(
            prompt=prompt,
            model_prompt=self.tell_model(prompt),
            grid=GridRequest.from_prompt(prompt, bpm=self.bpm, meter=self.meter, dynamics=self.dynamics),
            flags=self,
        )

    def tell_model(self, prompt: str) -> str:
        """The prompt with caption words for the controls it does not state already ('…, at 100 BPM.')."""
        words = []
        if self.key and not _KEY_IN_TEXT.search(prompt):
            words.append(f"in {self.key}")
        if self.bpm is not None and tempo_in_text(prompt) is None:
            words.append(f"at {self.bpm:g} BPM")
        if self.meter and meter_in_text(prompt) is None:
            words.append(f"in {self.meter[0]}/{self.meter[1]} time")
        if not words:
            return prompt
        return prompt.rstrip().rstrip(".") + ", " + ", ".join(words) + "."


@dataclass(frozen=True)
class Controls:
    """Controls applied to one prompt: what the model is told, the grid request, and the instrument mask."""

    prompt: str
    model_prompt: str
    grid: GridRequest
    flags: ControlFlags

    @property
    def instruments(self) -> frozenset[int] | None:
        return self.flags.instruments

    def to_dict(self) -> dict:
        """For generation_stats.json; per-output grids (estimated tempos) are in each output's entry."""
        instruments = self.flags.instruments
        return {
            "instruments": None if instruments is None else [gm.instrument_name(i) for i in sorted(instruments)],
            "tempo": self.grid.bpm,
            "tempo_source": self.grid.tempo_source if self.grid.bpm is not None else "estimate per output",
            "tempo_word": self.grid.word,
            "meter": None if self.grid.meter is None else f"{self.grid.meter[0]}/{self.grid.meter[1]}",
            "meter_source": self.grid.meter_source if self.grid.meter is not None else "estimate per output",
            "key": self.flags.key,
            "dynamics": DYNAMICS_NAME if self.flags.dynamics else None,
            "model_prompt": self.model_prompt,
        }


def decode_grid(*, tempo: str | None = None, meter: str | None = None, dynamics: bool = False) -> GridRequest | None:
    """The grid `decode` writes a token file on: None (120 BPM 4/4, as always) when no option is given, else gen's.

    With any option, what is not given is auto, as in gen with a prompt that states nothing: the tempo
    estimated from the onsets, the meter estimated at that tempo (4/4 when unclear).
    """
    if tempo is None and meter is None and not dynamics:
        return None
    return ControlFlags.parse(tempo=tempo, meter=meter, dynamics=dynamics).for_prompt("").grid
