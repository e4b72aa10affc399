"""A prompts file: its numbered prompt lines, and what a line number fixes (each prompt's seed and folder name).

One prompt per line; blank lines and `#` comments are skipped but still counted, so
a prompt's number is its line in the file as an editor shows it. A run seed and a
line number give that prompt's seed, so `gen --prompts-file` gives the same music
for a line however the prompts are spread over processes or machines, and a
resumed run gives what an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .limits import MAX_SEED
from .outputs import slug

BOM = b"\xef\xbb\xbf"
LINE_DIGITS = 5  # folder names sort by line up to 99,999 lines (longer files still work, they sort less neatly)


@dataclass(frozen=True)
class PromptLine:
    number: int  # 1-based line in the file
    text: str  # stripped; bytes that were not UTF-8 are U+FFFD


@dataclass(frozen=True)
class PromptFile:
    path: Path
    lines: list[PromptLine]
    replaced: list[int]  # numbers of the lines whose undecodable bytes became U+FFFD
    sha256: str  # of the file's bytes: a resumed run checks it is the same file


def read_prompt_file(path: Path) -> PromptFile:
    """The prompts in `path`; a file that is missing, unreadable, binary or holds no prompt is a UserError."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise UserError(f"{path}: no such file") from exc
    except OSError as exc:
        raise UserError(f"cannot read prompts from {path}: {exc.strerror or exc}") from exc
    if b"\0" in data:  # text never holds NUL; a model, an archive or a MIDI file given by mistake does
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise UserError(f"{path} is not a text file (a NUL byte on line {line}); give one prompt per line")
    decoded, replaced = decode_lines(data.removeprefix(BOM))  # a BOM is not part of the first prompt
    lines = [PromptLine(n, t.strip()) for n, t in enumerate(decoded, start=1) if t.strip() and t.strip()[0] != "#"]
    if not lines:
        raise UserError(f"{path} holds no prompts (one per line; # starts a comment)")
    return PromptFile(Path(path), lines, replaced, hashlib.sha256(data).hexdigest())


def decode_lines(data: bytes) -> tuple[list[str], list[int]]:
    """Lines of `data` decoded as UTF-8 (bad bytes -> U+FFFD), and the 1-based numbers of the lines that had any."""
    lines, bad = [], []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("utf-8", "replace"))
            bad.append(number)
    return lines, bad


def new_run_seed() -> int:
    """A run seed for a run given none (recorded, so the run can be repeated or resumed)."""
    return secrets.randbelow(MAX_SEED + 1)


def prompt_seed(run_seed: int, line: int) -> int:
    """The seed of the prompt on `line`: numpy's SeedSequence mixes the two, so neighbouring lines and run seeds
    give unrelated streams (run seed + line would give line 2 of seed 1 the music of line 1 of seed 2)."""
    return int(np.random.SeedSequence([run_seed, line]).generate_state(1, np.uint64)[0])


def line_folder_name(line: PromptLine) -> str:
    """The folder of a line's outputs, the same in every run: its number, then words of the prompt."""
    return f"{line.number:0{LINE_DIGITS}d}-{slug(line.text)}"
