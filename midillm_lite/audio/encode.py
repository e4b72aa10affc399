"""Audio files: the formats (mp3, flac, ogg, wav) and writing one atomically through soundfile (libsndfile).

The soundfile wheels bundle libsndfile 1.2 built with LAME and mpg123, so MP3 is written and read without ffmpeg.
MP3 is variable bitrate at LAME's V2 (the reference's `ffmpeg -qscale:a 2`); FLAC and WAV are 16-bit PCM; OGG is
Vorbis.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import Opt, UserError
from ..fsutil import atomic_path

FORMATS = {  # name -> (libsndfile major format, subtype)
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "wav": ("WAV", "PCM_16"),
}
DEFAULT_FORMAT = "mp3"
WRITE_BLOCK = 1 << 15  # frames per write: libsndfile 1.2's Vorbis encoder crashes (SIGSEGV) on one large write
MP3_QUALITY = 0.2  # libsndfile's compression level 0..1 maps to LAME's VBR quality 0..9 (x10): 0.2 is V2
SUFFIXES = tuple(f".{name}" for name in FORMATS)


def check_format(fmt: str) -> str:
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UserError(Opt("format"), f" must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return fmt


def format_of(path: Path) -> str | None:
    """The format a file name asks for by its suffix, or None when the suffix is not an audio format."""
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else None


def write_audio(path: Path, samples: np.ndarray, rate: int, fmt: str, *, force: bool = True) -> Path:
    """Encode float samples (frames, channels) in [-1, 1] to `path`: complete under its name, or absent."""
    import soundfile

    major, subtype = FORMATS[check_format(fmt)]
    extra = {"compression_level": MP3_QUALITY, "bitrate_mode": "VARIABLE"} if fmt == "mp3" else {}
    with atomic_path(path, force=force) as tmp:
        try:
            with soundfile.SoundFile(tmp, "w", rate, samples.shape[1], subtype, format=major, **extra) as fh:
                for start in range(0, len(samples), WRITE_BLOCK):
                    fh.write(samples[start : start + WRITE_BLOCK])
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:  # TypeError: an old soundfile (<0.13)
            raise UserError(f"could not encode {path} as {fmt}: {exc}") from exc
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    return path
