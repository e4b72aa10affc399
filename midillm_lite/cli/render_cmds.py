"""CLI verb `render`: MIDI files to audio (mp3, flac, ogg, wav) through a SoundFont synthesizer."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..audio.encode import DEFAULT_FORMAT, FORMATS
from ..audio.process import DEFAULT_LOUDNESS
from ..audio.synth import SYNTHS
from ..errors import UserError
from ..limits import MAX_RENDER_SECONDS
from . import app, flag
from .media_cmds import midi_inputs
from .params import LOUDNESS, RENDER_SECONDS, parser
from .progress import AudioProgress

AudioFormat = Enum("AudioFormat", {name: name for name in FORMATS}, type=str)  # typer shows the choices
Synth = Enum("Synth", {name: name for name in SYNTHS}, type=str)
NO_AUDIO = "none"
GenAudio = Enum("GenAudio", {name: name for name in (*FORMATS, NO_AUDIO)}, type=str)  # gen's --audio: none as well
DEFAULT_AUDIO = GenAudio(DEFAULT_FORMAT)
AUDIO_ENV = "MIDILLM_AUDIO"  # gen's default --audio (a format, or none)
AUTO_SYNTH = Synth("auto")
SOUNDFONT_HELP = "SoundFont (.sf2/.sf3) to play with."
SOUNDFONT_DEFAULT = "$MIDILLM_SOUNDFONT, else a system GM soundfont, else TimGM6mb from `make install`"
LOUDNESS_HELP = f"Integrated loudness to normalize to ({LOUDNESS.describe()})."

# gen's and serve's audio options (the same names and meaning in both verbs).
AudioOption = Annotated[
    GenAudio,
    typer.Option(
        "--audio",
        envvar=AUDIO_ENV,
        help="Format of the audio gen_i.<format> rendered next to each MIDI file; none: no audio.",
    ),
]
NoAudioOption = Annotated[bool, typer.Option("--no-audio", help="Render no audio.")]
SoundfontOption = Annotated[Path | None, typer.Option(help=SOUNDFONT_HELP, show_default=SOUNDFONT_DEFAULT)]
LoudnessOption = Annotated[float, typer.Option(parser=parser(LOUDNESS), help=LOUDNESS_HELP)]


def audio_settings(audio: GenAudio, no_audio: bool, soundfont: Path | None, loudness: float):
    """The AudioSettings gen's and serve's options ask for, checked; None for no audio."""
    from ..audio import AudioSettings

    if no_audio or audio.value == NO_AUDIO:
        return None
    return AudioSettings(audio.value, soundfont, loudness).check()


@app.command("render")
def render_command(
    midi: Annotated[Path, typer.Argument(metavar="IN.mid", help="MIDI file, or a folder: every .mid in it.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Audio file to write (one input only); its suffix picks the format.",
            show_default="IN.<format>",
        ),
    ] = None,
    format: Annotated[
        AudioFormat | None, typer.Option("--format", help="Audio format.", show_default="-o's suffix, else mp3")
    ] = None,
    soundfont: SoundfontOption = None,
    loudness: LoudnessOption = DEFAULT_LOUDNESS,
    synth: Annotated[
        Synth, typer.Option(help="auto: FluidSynth where libfluidsynth is installed, else TinySoundFont.")
    ] = AUTO_SYNTH,
    max_seconds: Annotated[
        float,
        typer.Option(
            "--max-seconds",
            parser=parser(RENDER_SECONDS),
            help=f"Refuse longer pieces (audio is held in memory; {RENDER_SECONDS.describe()}).",
        ),
    ] = MAX_RENDER_SECONDS,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace an existing audio file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print each file's stats entry as one JSON line.")] = False,
) -> None:
    """Render MIDI to audio as `gen` does: silence trimmed, loudness normalized, peaks limited below clipping."""
    from ..audio import AudioSettings, prepare, render_file

    inputs = midi_inputs(midi)
    if out is not None and len(inputs) > 1:
        raise UserError("--out names one audio file; with a folder the audio goes next to its MIDI files")
    fmt = format.value if format is not None else None
    settings = AudioSettings(fmt or DEFAULT_FORMAT, soundfont, loudness, synth.value, max_seconds).check()
    renderer = None
    for number, path in enumerate(inputs, start=1):
        with AudioProgress(enabled=not as_json) as progress:
            report = progress.callback(number, len(inputs), path)
            if renderer is None:
                renderer = prepare(settings)
            result = render_file(path, out, format=fmt, loudness=loudness, max_seconds=max_seconds, force=force,
                                 renderer=renderer, on_progress=report)  # fmt: skip
        typer.echo(json.dumps(result.to_dict()) if as_json else f"wrote {result.path} ({describe(result)})")


def describe(result) -> str:
    """`12.3 s, -18.0 LUFS, tinysoundfont 0.3.7, TimGM6mb.sf2`"""
    return (f"{result.seconds:.1f} s, {result.loudness_lufs:.1f} LUFS, {result.synthesizer}, "
            f"{result.soundfont.name}")  # fmt: skip


def audio_or_note(audio, *, quiet: bool = False):
    """`audio` when this machine can render it (a synthesizer and a soundfont); else None, said once on stderr,
    with how to get audio. For verbs that render many folders later (serve, gen --cluster): told at the start."""
    if audio is None:
        return None
    from ..audio import AudioUnavailable, prepare

    try:
        prepare(audio)
    except AudioUnavailable as exc:
        if not quiet:
            typer.echo(f"note: {UserError('no audio: ', *exc.parts).render(flag)}", err=True)
        return None
    return audio
