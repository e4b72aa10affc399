"""The files of a generation folder as the server offers them: whatever is there, named by the folder, never the client.

The listing is generic (a file another stage adds, such as audio, appears without a change here). Only regular
files directly in the folder or in its `rejected/` folder are offered; hidden names (temporary `.part` files,
locks) and symbolic links never are, so a download can only name a file this listing holds.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..outputs import REJECTED_DIR

AUDIO_SUFFIXES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".opus": "audio/ogg",
                  ".mp3": "audio/mpeg", ".m4a": "audio/mp4"}  # fmt: skip
MEDIA_TYPES = {
    ".mid": "audio/midi",
    ".png": "image/png",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    **AUDIO_SUFFIXES,
}
INPUT_NAME = "input.mid"  # an uploaded piece to continue, named by the server
OUTPUT_STEM = re.compile(r"gen_(\d+)")  # gen_3.mid, gen_3_tokens.txt, gen_3.png, gen_3.wav: output 3


@dataclass(frozen=True)
class FileEntry:
    name: str  # relative to the folder, with "/" (e.g. "rejected/gen_2.mid")
    size: int
    kind: str  # midi, input (the uploaded MIDI), tokens, image, audio, stats, text, other
    output: int | None  # the output it belongs to (1-based), from its name

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES.get(Path(self.name).suffix.lower(), "application/octet-stream")

    def to_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "kind": self.kind, "output": self.output}


def kind_of(name: str) -> str:
    if name == INPUT_NAME:
        return "input"
    lower = name.lower()
    suffix = Path(lower).suffix
    if suffix == ".mid":
        return "midi"
    if lower.endswith("_tokens.txt"):
        return "tokens"
    if suffix == ".png":
        return "image"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    if suffix == ".json":
        return "stats"
    return "text" if suffix == ".txt" else "other"


def list_files(folder: Path) -> list[FileEntry]:
    """The folder's offered files, sorted by name (rejected/ ones after)."""
    entries = _scan(folder, "")
    rejected = folder / REJECTED_DIR
    if rejected.is_dir() and not rejected.is_symlink():
        entries += _scan(rejected, REJECTED_DIR + "/")
    return entries


def _scan(folder: Path, prefix: str) -> list[FileEntry]:
    found = []
    try:
        items = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    for item in items:
        if item.name.startswith(".") or not item.is_file(follow_symlinks=False):
            continue
        match = OUTPUT_STEM.match(item.name)
        size = item.stat(follow_symlinks=False).st_size
        found.append(FileEntry(prefix + item.name, size, kind_of(item.name), int(match[1]) if match else None))
    return found


def find_file(folder: Path, name: str) -> tuple[Path, FileEntry] | None:
    """The offered file called `name`, or None: the name must be one the listing gives, character for character."""
    for entry in list_files(folder):
        if entry.name == name:
            return folder / entry.name, entry
    return None
