"""Audio from MIDI: a SoundFont synthesizer renders it, the samples are trimmed, loudness-normalized and limited as
the reference does, and soundfile encodes them (mp3, flac, ogg, wav).

Modules: `soundfont` (which SoundFont, and the check that a file is one), `synth` (which synthesizer, and the loop
that plays a MIDI file on it), `process` (trim, loudness, limiter), `encode` (formats, atomic writes) and `render`
(the pipeline, and the stats entry it returns). The heavy libraries (scipy through pyloudnorm, soundfile, the
synthesizers) are imported only when audio is made, so they stay out of every verb's start-up.
"""

from __future__ import annotations

from .encode import DEFAULT_FORMAT, FORMATS
from .process import DEFAULT_LOUDNESS
from .render import AudioResult, AudioSettings, AudioUnavailable, Renderer, audio_path, prepare, render_file
from .synth import RenderStopped

__all__ = [
    "DEFAULT_FORMAT",
    "DEFAULT_LOUDNESS",
    "FORMATS",
    "AudioResult",
    "AudioSettings",
    "AudioUnavailable",
    "RenderStopped",
    "Renderer",
    "audio_path",
    "describe_setup",
    "prepare",
    "render_file",
]


def describe_setup(soundfont: str | None = None) -> str:
    """One line: the synthesizer and soundfont `gen` and `render` would use here, or why there is no audio."""
    from ..errors import UserError

    try:
        renderer = prepare(AudioSettings(soundfont=soundfont))
    except UserError as exc:  # AudioUnavailable, or a bad $MIDILLM_SOUNDFONT
        return f"audio: none ({exc})"
    sf = renderer.soundfont
    return f"audio: {renderer.synth.describe()} with {sf.path} (from {sf.source})"
