"""The one exception type that reaches a user: a message that names the value and the fix, and the options it names.

Library code names the keyword argument that fixes a problem (`Opt("max_tokens")`),
never a command-line flag: `str(error)` reads as Python (`max_tokens`), and the
CLI renders the same message with its flags (`--max-tokens`), so one message
serves both without the library knowing the CLI's spelling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

EXIT_NO_MUSIC = 1  # gen: every output of a generation failed (its tokens decode to no notes)
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT; also what an interrupted run that kept its work exits with
EXIT_IO_ERROR = 74  # sysexits.h EX_IOERR: standard output closed or full (any files were still written)


@dataclass(frozen=True)
class Opt:
    """A keyword argument named in a message, optionally with the value to pass (True: a switch)."""

    name: str
    value: object = None
    python: str | None = None  # how a Python caller does it, where there is no keyword (e.g. logging)

    def as_python(self) -> str:
        if self.python is not None:
            return self.python
        return self.name if self.value is None else f"{self.name}={self.value!r}"


class UserError(Exception):
    """Bad input or environment; the CLI prints `error: <message>` on one line and exits non-zero.

    Library code raises it at boundaries (files, flags, model files); anything
    else escaping is a bug. The message is given in parts: strings and `Opt`s.
    """

    exit_code = 2

    def __init__(self, *parts: str | Opt, exit_code: int | None = None):
        self.parts = parts
        super().__init__(self.render(Opt.as_python))
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self, option: Callable[[Opt], str]) -> str:
        """The message with every Opt spelled by `option` (the CLI passes its flag spelling)."""
        return "".join(part if isinstance(part, str) else option(part) for part in self.parts)

    @property
    def options(self) -> tuple[Opt, ...]:
        return tuple(part for part in self.parts if isinstance(part, Opt))


def describe_range(lo: float, hi: float, *, lo_open: bool = False, integer: bool = False) -> str:
    """How a message states an allowed range: `1..512` for integers, `(0, 100]` or `[0, 86400]` for numbers."""
    if integer:
        return f"{int(lo)}..{int(hi)}"
    return f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"


def check_range(
    option: str, value: object, lo: float, hi: float, *, lo_open: bool = False, integer: bool = False
) -> None:
    """A UserError naming `option` unless `value` is a number in the range (NaN and infinities never are)."""
    number = (int,) if integer else (int, float)
    valid = isinstance(value, number) and not isinstance(value, bool)
    valid = valid and (isinstance(value, int) or math.isfinite(value))  # math.isfinite overflows on huge ints
    if not (valid and (lo < value if lo_open else lo <= value) and value <= hi):  # type: ignore[operator]
        kind = "an integer" if integer else "a finite number"
        allowed = describe_range(lo, hi, lo_open=lo_open, integer=integer)
        raise UserError(Opt(option), f" must be {kind} in {allowed}, not {value!r}")
