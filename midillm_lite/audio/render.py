"""MIDI to an audio file, end to end: synthesizer and soundfont chosen once, then per file render, trim, loudness,
limit and encode; what was made is described for the stats."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mido

from ..amt.midi import load_midi_file
from ..errors import Opt, UserError, check_range
from ..fsutil import check_writable_target
from ..limits import MAX_LOUDNESS, MAX_RENDER_SECONDS, MAX_RENDER_SECONDS_LIMIT, MIN_LOUDNESS
from . import encode, process
from .soundfont import HOW_TO_GET, SoundFont, find_soundfont
from .synth import NO_SYNTH_HINT, SAMPLE_RATE, SynthChoice, open_synth, render_messages, select_synth, timed_messages

log = logging.getLogger(__name__)


class AudioUnavailable(UserError):
    """No synthesizer or no soundfont here: `gen` says so once and goes on without audio."""


@dataclass(frozen=True)
class AudioSettings:
    """How `gen` and `render` make audio; the keyword names are the CLI's flags."""

    format: str = encode.DEFAULT_FORMAT
    soundfont: str | os.PathLike[str] | None = None
    loudness: float = process.DEFAULT_LOUDNESS
    synth: str = "auto"
    max_seconds: float = MAX_RENDER_SECONDS

    def check(self) -> AudioSettings:
        """Check every setting that needs no synthesizer (the CLI calls this before loading a model)."""
        encode.check_format(self.format)
        check_range("loudness", self.loudness, MIN_LOUDNESS, MAX_LOUDNESS)
        check_range("max_seconds", self.max_seconds, 0, MAX_RENDER_SECONDS_LIMIT, lo_open=True)
        find_soundfont(self.soundfont)  # a named one (argument or $MIDILLM_SOUNDFONT) that is bad fails here
        return self


@dataclass
class AudioResult:
    """One audio file made: what made it and what it measures (a stats entry)."""

    path: Path
    format: str
    synthesizer: str
    soundfont: Path
    soundfont_sha256: str
    sample_rate: int
    seconds: float
    loudness_lufs: float
    target_lufs: float
    peak_dbfs: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path), "format": self.format, "synthesizer": self.synthesizer,
            "soundfont": str(self.soundfont), "soundfont_sha256_prefix": self.soundfont_sha256,
            "sample_rate": self.sample_rate, "seconds": round(self.seconds, 3),
            "loudness_lufs": round(self.loudness_lufs, 2), "target_lufs": self.target_lufs,
            "peak_dbfs": round(self.peak_dbfs, 2),
        }  # fmt: skip


# One render at a time in a process (serve's workers finish together): a render holds a whole soundfont (FluidR3:
# 148 MB) and keeps a core busy, so parallel renders on a small box add memory, not speed. MIDI files are not held up.
_RENDERING = threading.Lock()


@dataclass
class Renderer:
    """A chosen synthesizer and soundfont, ready to render any number of MIDI files."""

    settings: AudioSettings
    synth: SynthChoice
    soundfont: SoundFont

    def render(
        self,
        midi: mido.MidiFile,
        out: Path,
        *,
        name: str = "MIDI",
        force: bool = True,
        stop: Callable[[], bool] | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> AudioResult:
        """Render `midi` to `out` (format from the settings). Raises audio.synth.RenderStopped when `stop()` turns true,
        UserError for music that cannot make audio (no notes, too long, silent)."""
        timed = timed_messages(midi)
        _check_music(timed, name, self.settings.max_seconds)
        with _RENDERING:
            player = open_synth(self.synth, self.soundfont)
            try:
                raw = render_messages(player, timed, stop=stop, on_progress=on_progress)
            finally:
                player.close()
        trimmed = process.trim_silence(raw)
        if len(trimmed) == 0:
            raise UserError(f"{name} renders to silence with {self.soundfont.path.name}; try another soundfont")
        samples, level = process.normalize(trimmed, SAMPLE_RATE, target=self.settings.loudness)
        encode.write_audio(out, samples, SAMPLE_RATE, self.settings.format, force=force)
        peak = float(abs(samples).max())
        result = AudioResult(
            out, self.settings.format, self.synth.describe(), self.soundfont.path, self.soundfont.sha256_prefix,
            SAMPLE_RATE, len(samples) / SAMPLE_RATE, level, self.settings.loudness,
            20 * math.log10(peak) if peak > 0 else -math.inf,
        )  # fmt: skip
        return result


def _check_music(timed: list, name: str, max_seconds: float) -> None:
    if not any(m.type == "note_on" and m.velocity > 0 for _, m in timed):
        raise UserError(f"{name} has no notes: there is nothing to render")
    length = timed[-1][0]
    if length > max_seconds:
        raise UserError(
            f"{name} lasts {length:.0f} s, longer than the {max_seconds:g} s audio limit (audio is held in memory); "
            "raise ", Opt("max_seconds"), " or cut the piece",
        )  # fmt: skip


def prepare(settings: AudioSettings | None = None) -> Renderer:
    """Choose the synthesizer and soundfont for `settings`. AudioUnavailable when there is none of either; a
    named soundfont or synthesizer that is bad or missing is a plain UserError."""
    settings = (settings or AudioSettings()).check()
    found = find_soundfont(settings.soundfont)
    chosen = select_synth(settings.synth)
    if chosen is None:
        raise AudioUnavailable(f"no SoundFont synthesizer is installed; {NO_SYNTH_HINT}")
    if found is None:
        raise AudioUnavailable("no General MIDI soundfont was found; ", *HOW_TO_GET)
    return Renderer(settings, chosen, found)


def audio_path(midi_path: Path, fmt: str) -> Path:
    return midi_path.with_suffix(f".{fmt}")


def render_file(
    midi_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    format: str | None = None,
    soundfont: str | os.PathLike[str] | None = None,
    loudness: float = process.DEFAULT_LOUDNESS,
    synth: str = "auto",
    max_seconds: float = MAX_RENDER_SECONDS,
    force: bool = False,
    renderer: Renderer | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> AudioResult:
    """Render a MIDI file to audio: next to it as NAME.<format> unless `out` says where (its suffix picks the
    format when `format` is not given)."""
    midi_path = Path(midi_path)
    fmt = _format_for(out, format)
    target = Path(out) if out is not None else audio_path(midi_path, fmt)
    check_writable_target(target, force=force)  # before any work: a taken name fails fast
    if renderer is None:
        renderer = prepare(AudioSettings(fmt, soundfont, loudness, synth, max_seconds))
    elif renderer.settings.format != fmt:  # the same synthesizer and soundfont, another encoding
        renderer = dataclasses.replace(renderer, settings=dataclasses.replace(renderer.settings, format=fmt))
    midi = load_midi_file(midi_path)
    return renderer.render(midi, target, name=str(midi_path), force=force, on_progress=on_progress)


def _format_for(out: str | os.PathLike[str] | None, fmt: str | None) -> str:
    by_name = encode.format_of(Path(out)) if out is not None else None
    if fmt is None:
        return by_name or encode.DEFAULT_FORMAT
    fmt = encode.check_format(fmt)
    if by_name is not None and by_name != fmt:
        raise UserError(f"{out} is named .{by_name} but ", Opt("format", fmt), " was asked for; make them agree")
    return fmt
