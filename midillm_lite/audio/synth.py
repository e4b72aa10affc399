"""The synthesizers that turn MIDI into samples: which one is used, and the loop that drives it through a file.

FluidSynth (the reference's synthesizer) through pyfluidsynth where the libfluidsynth system library is installed;
otherwise TinySoundFont (MIT, a wheel from PyPI that `make install` brings, no root and no system library). Both
play SoundFonts with General MIDI drums on channel 10 (bank 128). The loop walks the file's messages in seconds
(mido applies its tempo map) and renders the time between them in blocks, so a stop request is seen within a block.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib.metadata
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import mido
import numpy as np

from ..amt.gm import DRUM_CHANNEL
from ..errors import Opt, UserError
from .soundfont import SoundFont

log = logging.getLogger(__name__)

SAMPLE_RATE = 44_100
STEREO = 2
BLOCK_FRAMES = 11_025  # a quarter second: how often the loop looks at its stop request and reports progress
TAIL_S = 3.0  # rendered after the last message, for the release and reverb of the last notes (trimmed later)
FLUIDSYNTH, TINYSOUNDFONT = "fluidsynth", "tinysoundfont"
SYNTHS = ("auto", FLUIDSYNTH, TINYSOUNDFONT)
FLUIDSYNTH_GAIN = 0.2  # FluidSynth's own default, as the reference renders; loudness is normalized afterwards
INT16_SCALE = 32768.0
PITCH_CENTER = 8192  # mido's pitchwheel is -8192..8191; TinySoundFont takes 0..16383
DRUM_BANK = 128
NO_SYNTH_HINT = "run `make install` (TinySoundFont from PyPI) or install FluidSynth (`apt install libfluidsynth3`)"


class RenderStopped(Exception):
    """The caller's stop request arrived mid-render: nothing was written."""


@dataclass(frozen=True)
class SynthChoice:
    name: str  # FLUIDSYNTH or TINYSOUNDFONT
    version: str

    def describe(self) -> str:
        return f"{self.name} {self.version}"


def select_synth(synth: str = "auto") -> SynthChoice | None:
    """The synthesizer to use (`auto`: FluidSynth if its library is installed, else TinySoundFont), or None when
    none is; naming one that is missing is an error."""
    if synth not in SYNTHS:
        raise UserError(Opt("synth"), f" must be one of {', '.join(SYNTHS)}, not {synth!r}")
    order = (FLUIDSYNTH, TINYSOUNDFONT) if synth == "auto" else (synth,)
    for name in order:
        choice = _available(name)
        if choice is not None:
            return choice
    if synth != "auto":
        raise UserError(Opt("synth", synth), f" is not installed here; {NO_SYNTH_HINT}, or use ", Opt("synth", "auto"))
    return None


def _available(name: str) -> SynthChoice | None:
    if name == FLUIDSYNTH:
        if not _find_libfluidsynth():  # checked first: importing pyfluidsynth without it raises after a search
            return None
        try:
            import fluidsynth

            major, minor, micro = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
            fluidsynth._fl.fluid_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(micro))
        except (ImportError, OSError, AttributeError) as exc:
            log.info("FluidSynth is not usable: %s", exc)
            return None
        return SynthChoice(FLUIDSYNTH, f"{major.value}.{minor.value}.{micro.value}")
    try:
        import tinysoundfont  # noqa: F401
    except ImportError:
        return None
    return SynthChoice(TINYSOUNDFONT, importlib.metadata.version("tinysoundfont"))


def _find_libfluidsynth() -> str | None:
    for name in ("fluidsynth", "libfluidsynth-3", "libfluidsynth"):
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


class _Fluid:
    """FluidSynth through pyfluidsynth (drums: FluidSynth treats channel 10 as percussion itself)."""

    def __init__(self, soundfont: SoundFont):
        import fluidsynth

        _route_fluidsynth_log(fluidsynth._fl)
        self.synth = fluidsynth.Synth(gain=FLUIDSYNTH_GAIN, samplerate=float(SAMPLE_RATE))
        del _FLUID_ERRORS[:]
        with _c_stderr_captured() as said:  # libinstpatch (FluidSynth's DLS reader) prints on the C stderr
            sfid = self.synth.sfload(str(soundfont.path), 1)
        for line in said:
            log.info("fluidsynth: %s", line)
        if sfid < 0:
            self.synth.delete()
            why = _FLUID_ERRORS[0] if _FLUID_ERRORS else "no reason given"
            raise UserError(f"FluidSynth could not load the soundfont {soundfont.path} ({why}); give another file")

    def note_on(self, channel: int, key: int, velocity: int) -> None:
        self.synth.noteon(channel, key, velocity)

    def note_off(self, channel: int, key: int) -> None:
        self.synth.noteoff(channel, key)

    def program(self, channel: int, program: int) -> None:
        self.synth.program_change(channel, program)

    def control(self, channel: int, control: int, value: int) -> None:
        self.synth.cc(channel, control, value)

    def pitch(self, channel: int, value: int) -> None:
        self.synth.pitch_bend(channel, value)

    def render(self, out: np.ndarray) -> None:
        out[:] = self.synth.get_samples(len(out)).reshape(-1, STEREO) / INT16_SCALE

    def close(self) -> None:
        self.synth.delete()


class _Tiny:
    """TinySoundFont: drums are asked for by channel (its MIDI-drums flag selects bank 128)."""

    def __init__(self, soundfont: SoundFont):
        import tinysoundfont

        self.synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
        try:
            self.sfid = self.synth.sfload(str(soundfont.path))
        except Exception as exc:  # tinysoundfont raises its own or a RuntimeError for a file it cannot parse
            raise UserError(f"TinySoundFont could not load the soundfont {soundfont.path} ({exc})") from exc
        for channel in range(16):
            self.program(channel, 0)

    def note_on(self, channel: int, key: int, velocity: int) -> None:
        self.synth.noteon(channel, key, velocity)

    def note_off(self, channel: int, key: int) -> None:
        self.synth.noteoff(channel, key)

    def program(self, channel: int, program: int) -> None:
        drums = channel == DRUM_CHANNEL
        try:
            self.synth.program_select(channel, self.sfid, DRUM_BANK if drums else 0, program, is_drums=drums)
        except RuntimeError:  # the soundfont lacks this preset: its first one plays, as FluidSynth would fall back
            log.info("soundfont has no preset %d%s; using 0", program, " (drums)" if drums else "")
            with contextlib.suppress(RuntimeError):  # no preset at all in this bank: the channel stays silent
                self.synth.program_select(channel, self.sfid, DRUM_BANK if drums else 0, 0, is_drums=drums)

    def control(self, channel: int, control: int, value: int) -> None:
        self.synth.control_change(channel, control, value)

    def pitch(self, channel: int, value: int) -> None:
        self.synth.pitchbend(channel, value + PITCH_CENTER)

    def render(self, out: np.ndarray) -> None:
        out[:] = np.frombuffer(self.synth.generate_simple(len(out)), dtype=np.float32).reshape(-1, STEREO)

    def close(self) -> None:
        pass


_FLUID_ERRORS: list[str] = []  # FluidSynth's error messages since the last soundfont load began
FLUID_LOG_LEVELS = 5  # FLUID_PANIC, FLUID_ERR, FLUID_WARN, FLUID_INFO, FLUID_DBG
_FluidLogFn = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


def _fluid_log(level: int, message: bytes, _data) -> None:
    text = message.decode(errors="replace") if message else ""
    if level <= 1:
        _FLUID_ERRORS.append(text)
    # Its warnings (a preset the soundfont lacks, substituted) are details: logged, not printed around our lines.
    log.log(logging.INFO if level >= 2 else logging.DEBUG, "fluidsynth: %s", text)


_FLUID_LOG = _FluidLogFn(_fluid_log)  # held here: FluidSynth keeps the pointer for the life of the process
_fluid_routed: list[bool] = []


def _route_fluidsynth_log(lib) -> None:
    """FluidSynth's log (printed on stderr by default) goes to Python's logging, once per process."""
    if not _fluid_routed:
        for level in range(FLUID_LOG_LEVELS):
            lib.fluid_set_log_function(level, _FLUID_LOG, None)
        _fluid_routed.append(True)


@contextlib.contextmanager
def _c_stderr_captured():
    """File descriptor 2 sent to a temporary file for the block; yields the list its lines are put in afterwards.

    A C library's messages would otherwise reach the terminal around our one-line error.
    """
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += [line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip()]


def open_synth(choice: SynthChoice, soundfont: SoundFont):
    return (_Fluid if choice.name == FLUIDSYNTH else _Tiny)(soundfont)


def timed_messages(midi: mido.MidiFile) -> list[tuple[float, mido.Message]]:
    """Every channel message with its time in seconds from the start (mido merges the tracks and reads tempo)."""
    now, timed = 0.0, []
    for message in midi:
        now += message.time
        if not message.is_meta and hasattr(message, "channel"):
            timed.append((now, message))
    return timed


def _apply(synth, message: mido.Message) -> None:
    kind = message.type
    if kind == "note_on" and message.velocity > 0:
        synth.note_on(message.channel, message.note, message.velocity)
    elif kind in ("note_on", "note_off"):
        synth.note_off(message.channel, message.note)
    elif kind == "program_change":
        synth.program(message.channel, message.program)
    elif kind == "control_change":
        synth.control(message.channel, message.control, message.value)
    elif kind == "pitchwheel":
        synth.pitch(message.channel, message.pitch)


def render_messages(
    synth,
    timed: list[tuple[float, mido.Message]],
    *,
    stop: Callable[[], bool] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Float32 stereo samples, (frames, 2), of `timed` played on `synth`, with TAIL_S after the last message.

    Raises RenderStopped as soon as `stop()` is true (checked every block); `on_progress` gets the fraction done.
    """
    end = (timed[-1][0] if timed else 0.0) + TAIL_S
    samples = np.zeros((round(end * SAMPLE_RATE), STEREO), dtype=np.float32)
    cursor = 0
    for index in range(len(timed) + 1):
        until = round(timed[index][0] * SAMPLE_RATE) if index < len(timed) else len(samples)
        while cursor < until:
            if stop is not None and stop():
                raise RenderStopped
            block = min(BLOCK_FRAMES, until - cursor)
            synth.render(samples[cursor : cursor + block])
            cursor += block
            if on_progress is not None:
                on_progress(cursor / len(samples))
        if index < len(timed):
            _apply(synth, timed[index][1])
    return samples
