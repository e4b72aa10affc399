"""The numeric options of every verb: one parser per kind of number, finite and in a range its message states.

typer would take `inf`, `nan` and `1e308` for a float and any integer at all,
and the library would then fail deep inside (an overflow turning seconds into
ticks, numpy refusing a negative seed). Each option here is checked where it
is read, with the same limits in every verb that has it (`gen`, `bench`,
`convert -t`, `encode --start`); the ranges come from the library's own
constants, and the library checks them again for Python callers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import typer

from ..bench import MIN_STEPS
from ..errors import describe_range
from ..limits import (
    ALL_LAYERS,
    MAX_GPU_LAYERS,
    MAX_INPUT_SECONDS,
    MAX_LOUDNESS,
    MAX_NEW_TOKENS,
    MAX_OUTPUTS,
    MAX_RENDER_SECONDS_LIMIT,
    MAX_SECONDS,
    MAX_SEED,
    MAX_SLOTS,
    MAX_THREADS,
    MAX_TOP_K,
    MAX_WORKERS,
    MIN_LOUDNESS,
    MIN_NEW_TOKENS,
)


@dataclass(frozen=True)
class Bounds:
    """A closed range (open below when `lo_open`) of integers or finite floats."""

    lo: float
    hi: float
    integer: bool = False
    lo_open: bool = False
    note: str = ""  # what a special value means, e.g. "0: off"

    def describe(self) -> str:
        unbounded = math.isinf(self.lo) and math.isinf(self.hi)
        text = (
            "any finite number"
            if unbounded
            else describe_range(self.lo, self.hi, lo_open=self.lo_open, integer=self.integer)
        )
        return f"{text}; {self.note}" if self.note else text

    def check(self, value: int | float) -> int | float:
        low_ok = self.lo < value if self.lo_open else self.lo <= value
        if not (low_ok and value <= self.hi):
            raise typer.BadParameter(f"{value} is out of range: give {self._kind()} in {self.describe()}")
        return value

    def parse(self, raw: object) -> int | float:
        """The option's text (or its default) as a number in range; anything else is a one-line usage error."""
        if raw is None or (isinstance(raw, int | float) and not isinstance(raw, bool)):
            return raw if raw is None else self.check(raw)  # defaults arrive already typed
        text = str(raw).strip()
        try:
            value = int(text, 10) if self.integer else float(text)
        except ValueError:
            shown = text if len(text) <= 20 else text[:20] + "..."
            raise typer.BadParameter(f"{shown!r} is not {self._kind()} (allowed: {self.describe()})") from None
        if not self.integer and not math.isfinite(value):
            raise typer.BadParameter(f"{text!r} is not a finite number (allowed: {self.describe()})")
        return self.check(value)

    def _kind(self) -> str:
        return "an integer" if self.integer else "a number"


def parser(bounds: Bounds) -> Callable[[object], int | float]:
    """A typer `parser=` for these bounds (typer shows the function's name as the metavar's type)."""

    def parse(raw: object) -> int | float:
        return bounds.parse(raw)

    parse.__name__ = "integer" if bounds.integer else "number"
    return parse


OUTPUTS = Bounds(1, MAX_OUTPUTS, integer=True)
SECONDS = Bounds(0, MAX_SECONDS, lo_open=True, note="AMT arrival times end at 100 s")
INPUT_SECONDS = Bounds(0, MAX_INPUT_SECONDS)  # --from and encode --start: a time in an existing piece
TEMPERATURE = Bounds(-math.inf, math.inf, note="0 or less: greedy")
TOP_P = Bounds(0, 1, lo_open=True, note="1: off")
TOP_K = Bounds(0, MAX_TOP_K, integer=True, note="0: off")
SEED = Bounds(0, MAX_SEED, integer=True)
MAX_TOKENS = Bounds(MIN_NEW_TOKENS, MAX_NEW_TOKENS, integer=True, note="the model's context may allow fewer")
THREADS = Bounds(1, MAX_THREADS, integer=True)
WORKERS = Bounds(1, MAX_WORKERS, integer=True)
SLOTS = Bounds(1, MAX_SLOTS, integer=True)
GPU_LAYERS = Bounds(ALL_LAYERS, MAX_GPU_LAYERS, integer=True, note="-1: all")
STEPS = Bounds(MIN_STEPS, MAX_NEW_TOKENS, integer=True)
LOUDNESS = Bounds(MIN_LOUDNESS, MAX_LOUDNESS, note="LUFS, integrated")
RENDER_SECONDS = Bounds(0, MAX_RENDER_SECONDS_LIMIT, lo_open=True)


def parse_counts(text: str) -> list[int]:
    """bench's `--n 1,2,4,8`: comma-separated output counts, each in gen's range for `-n`."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise typer.BadParameter(
            f"give comma-separated counts in {OUTPUTS.describe()}, like 1,2,4,8", param_hint="'--n'"
        )
    try:
        return [int(OUTPUTS.parse(part)) for part in parts]
    except typer.BadParameter as exc:
        exc.param_hint = "'--n'"  # parsed in the command body, where click does not know the option
        raise
