"""The output folder of a generation: names, layout (compatible with the reference scripts) and atomic writes.

OUT/prompt.txt, OUT/gen_<i>.mid, OUT/gen_<i>_tokens.txt (AMT ids, one per line)
and OUT/generation_stats.json; an output the reference would reject goes under
OUT/rejected/ instead, never dropped.
"""

from __future__ import annotations

import json
import os
import re
import time
import unicodedata
from pathlib import Path
from typing import Any

from .amt.midi import save_midi
from .amt.tokens_file import write_tokens
from .errors import Opt, UserError
from .fsutil import atomic_write_text

DEFAULT_ROOT = Path("midillm-out")
SLUG_WORDS = 6
SLUG_CHARS = 48
STATS_NAME = "generation_stats.json"
PROMPT_NAME = "prompt.txt"
REJECTED_DIR = "rejected"
MAX_NAME_TRIES = 1000


def slug(text: str) -> str:
    """A short, filesystem-safe name from a prompt: ascii words joined by dashes."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())[:SLUG_WORDS]
    return "-".join(words)[:SLUG_CHARS].strip("-") or "music"


def new_output_dir(prompt: str, *, root: Path = DEFAULT_ROOT, now: float | None = None) -> Path:
    """Create and return a fresh folder under `root`, named from the time and the prompt.

    mkdir is atomic, so two processes starting in the same second get different folders.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = f"{stamp}-{slug(prompt)}"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {root}: {exc.strerror or exc}") from exc
    for attempt in range(MAX_NAME_TRIES):
        folder = root / (base if attempt == 0 else f"{base}-{attempt + 1}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"cannot create {folder}: {exc.strerror or exc}") from exc
        return folder
    raise UserError(f"could not find a free folder name for {base} under {root}")


def prepare_output_dir(out: Path, *, force: bool) -> Path:
    """Use `out` as given: created if missing; refused if it holds files, unless forced."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for the outputs")
    if out.is_symlink() and not out.exists():
        raise UserError(f"{out} is a symbolic link to nothing; give a folder for the outputs")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{out} is not empty; use ", Opt("force", True), " to write into it or choose another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror or exc}") from exc
    if not os.access(out, os.W_OK):
        raise UserError(f"{out} is not writable")
    return out


def output_paths(out: Path, index: int, *, rejected: bool = False) -> tuple[Path, Path]:
    """(MIDI path, tokens path) of output `index` (1-based, as the reference names them)."""
    folder = out / REJECTED_DIR if rejected else out
    return folder / f"gen_{index}.mid", folder / f"gen_{index}_tokens.txt"


def write_output(out: Path, index: int, tokens: list[int], midi, *, rejected: bool = False) -> tuple[Path, Path]:
    """Write one output's token file and MIDI file atomically (overwriting: the folder is ours)."""
    midi_path, tokens_path = output_paths(out, index, rejected=rejected)
    write_tokens(tokens_path, tokens, force=True)
    save_midi(midi, midi_path, force=True)
    return midi_path, tokens_path


def write_prompt(out: Path, prompt: str) -> Path:
    path = out / PROMPT_NAME
    atomic_write_text(path, prompt + "\n")
    return path


def write_stats(out: Path, stats: dict[str, Any]) -> Path:
    path = out / STATS_NAME
    atomic_write_text(path, json.dumps(stats, indent=2, default=str) + "\n")
    return path
