"""Token files: integers as text, the interchange format of `encode`, `decode`, `gen` and the reference scripts.

The reference writes one id per line; people also paste space- or comma-separated
lists and JSON arrays, so any mix of whitespace, commas and one pair of
enclosing brackets is read. Anything else is an error naming its line.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from ..errors import EXIT_IO_ERROR, UserError
from ..fsutil import atomic_write_text

MAX_DIGITS = 30  # far beyond any vocabulary id; longer digit runs are typos, and int() refuses > 4300 anyway
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_SEPARATORS = re.compile(r"[\s,]+")
STDIO = "-"


def parse_tokens(text: str, *, name: str = "input") -> list[int]:
    """Integers in `text`; a UserError names the first thing that is not one."""
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    ids: list[int] = []
    for line_number, line in enumerate(body.splitlines(), start=1):
        for item in _SEPARATORS.split(line):
            if not item:
                continue
            if not _INTEGER.fullmatch(item) or len(item.lstrip("+-")) > MAX_DIGITS:
                shown = item if len(item) <= 20 else item[:20] + "..."
                raise UserError(f"{name}, line {line_number}: {shown!r} is not a token id (expected integers)")
            ids.append(int(item))
    return ids


def read_tokens(path: str | os.PathLike[str]) -> list[int]:
    """Token ids from a file, or from standard input for `-`."""
    if str(path) == STDIO:
        return parse_tokens(sys.stdin.read(), name="standard input")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not a text file of token ids (byte {exc.start} is not UTF-8)") from exc
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_tokens(text, name=str(path))


def format_tokens(ids: Iterable[int]) -> str:
    """One id per line, as the reference's gen_N_tokens.txt."""
    return "".join(f"{i}\n" for i in ids)


def write_tokens(path: str | os.PathLike[str], ids: Iterable[int], *, force: bool = False) -> None:
    """Write atomically (refusing to overwrite unless forced), or to standard output for `-`."""
    if str(path) == STDIO:
        _write_stdout(format_tokens(ids))
        return
    atomic_write_text(Path(path), format_tokens(ids), force=force)


def _write_stdout(text: str) -> None:
    if sys.stdout is None:
        raise UserError("standard output is closed; give a file name instead of -", exit_code=EXIT_IO_ERROR)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()  # a full device must fail here, as an error, not at exit
    except BrokenPipeError:
        raise  # the reader left (`| head`): the CLI ends quietly
    except (OSError, ValueError) as exc:  # ENOSPC, EIO; ValueError: a closed file object
        raise UserError(
            f"cannot write the tokens to standard output: {getattr(exc, 'strerror', None) or exc}",
            exit_code=EXIT_IO_ERROR,
        ) from exc
