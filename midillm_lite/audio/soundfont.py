"""Which SoundFont renders audio: the lookup order, and the check that a file is a whole SoundFont.

Order: an explicit file (`soundfont=`), then $MIDILLM_SOUNDFONT, then the usual system General MIDI soundfonts
(Debian/Ubuntu, Fedora/Arch, Homebrew, /usr/local, ~/.local), then the one `make install` brings from PyPI:
TimGM6mb.sf2 inside the pretty_midi wheel (Tim Brechbill's GPL-2 GM set, 6 MB). midillm-lite never ships a
soundfont itself; it only finds one installed by a package manager.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import Opt, UserError
from ..fsutil import sha256_file

ENV_VAR = "MIDILLM_SOUNDFONT"
# Best first: the reference renders with FluidR3_GM; MuseScore_General is its descendant; TimGM6mb is small.
SYSTEM_NAMES = (
    "FluidR3_GM.sf2", "FluidR3_GM.sf3", "MuseScore_General.sf3", "MuseScore_General.sf2", "GeneralUser GS.sf2",
    "TimGM6mb.sf2", "default-GM.sf2", "default-GM.sf3",
)  # fmt: skip
SYSTEM_DIRS = (
    "/usr/share/sounds/sf2", "/usr/share/sounds/sf3", "/usr/share/soundfonts", "/usr/share/sf2",
    "/usr/local/share/soundfonts", "/usr/local/share/sounds/sf2",
    "/opt/homebrew/share/soundfonts", "/opt/homebrew/share/sounds/sf2", "/opt/homebrew/share/fluid-synth/sf2",
    "/opt/local/share/sounds/sf2", "~/.local/share/soundfonts", "~/.local/share/sounds/sf2",
)  # fmt: skip
PACKAGE, PACKAGE_FILE = "pretty_midi", "TimGM6mb.sf2"  # a PyPI wheel that carries a GM soundfont (MIT code, GPL-2 sf2)
SHA_PREFIX = 16  # hex digits of the sha256 recorded in the stats (as for models)
RIFF_HEADER = struct.Struct("<4sI4s")  # "RIFF", size of what follows, form type
SOUNDFONT_FORM = b"sfbk"  # SF2 and SF3 (Vorbis samples) share the RIFF form
HOW_TO_GET = (  # message parts: the CLI spells Opt("soundfont") as its flag
    "pass a General MIDI .sf2/.sf3 as ",
    Opt("soundfont"),
    " or $MIDILLM_SOUNDFONT, install one "
    "(`apt install fluid-soundfont-gm`), or run `make install`, which brings TimGM6mb from PyPI",
)


@dataclass(frozen=True)
class SoundFont:
    """A checked SoundFont file and where the lookup found it."""

    path: Path
    source: str  # "soundfont", "$MIDILLM_SOUNDFONT", "system", "pretty_midi package"

    @property
    def sha256_prefix(self) -> str:
        stat = self.path.stat()
        return _sha_prefix(str(self.path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _sha_prefix(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a replaced file is hashed again
    return sha256_file(Path(path))[:SHA_PREFIX]


def find_soundfont(soundfont: str | os.PathLike[str] | None = None) -> SoundFont | None:
    """The SoundFont to render with, or None when none is found; a named one (argument or env) that is bad is an
    error rather than skipped, so a typo never silently changes the sound."""
    if soundfont is not None:
        return SoundFont(check_soundfont(Path(soundfont), what=Opt("soundfont")), "soundfont")
    if os.environ.get(ENV_VAR):
        return SoundFont(check_soundfont(Path(os.environ[ENV_VAR]), what=f"${ENV_VAR}"), f"${ENV_VAR}")
    for path in candidate_paths():
        try:
            return SoundFont(check_soundfont(path), "system" if path.parent.name != PACKAGE else f"{PACKAGE} package")
        except UserError:
            continue  # a broken system file is passed over: the next one may do
    return None


def candidate_paths() -> list[Path]:
    """Existing files among the system names in the system folders, best name first, then the package's."""
    dirs = [Path(d).expanduser() for d in SYSTEM_DIRS]
    found = [d / name for name in SYSTEM_NAMES for d in dirs if (d / name).is_file()]
    package = package_soundfont()
    return found + ([package] if package is not None else [])


def package_soundfont() -> Path | None:
    """pretty_midi's TimGM6mb.sf2, located without importing pretty_midi (which would cost its import time)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / PACKAGE_FILE
        if path.is_file():
            return path
    return None


def check_soundfont(path: Path, *, what: str | Opt = "soundfont") -> Path:
    """`path` if it holds a whole SoundFont (RIFF form sfbk, as long as its header says), else one clear UserError."""
    named = ["", what, f" {path}"] if isinstance(what, Opt) else [f"{what} {path}"]
    if not path.exists():
        raise UserError(*named, ": no such file; ", *HOW_TO_GET)
    if not path.is_file():
        raise UserError(*named, " is not a file; give a .sf2 or .sf3 SoundFont")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(RIFF_HEADER.size)
    except OSError as exc:
        raise UserError(*named, f" cannot be read: {exc.strerror or exc}") from exc
    if len(head) < RIFF_HEADER.size or head[:4] != b"RIFF" or head[8:12] != SOUNDFONT_FORM:
        raise UserError(*named, " is not a SoundFont (no RIFF sfbk header); give a .sf2 or .sf3 file")
    _, declared, _ = RIFF_HEADER.unpack(head)
    if size < declared + 8:
        raise UserError(*named, f" is truncated ({size:,} of the {declared + 8:,} bytes its header declares)")
    return path
