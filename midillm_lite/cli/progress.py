"""gen's terminal output: a live rich table per output while sampling, a final table, plain lines off a terminal."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from . import echo_or_note, is_terminal

if TYPE_CHECKING:  # types only: importing the engine (llama.cpp) here would slow every verb's start-up
    from ..engine import Timings
    from ..generate import GenerationResult, OutputProgress

REFRESH_S = 0.25  # redraw at most 4 times a second: drawing must not cost sampling time
PLAIN_EVERY_S = 10.0  # off a terminal, one progress line this often


class Progress:
    """Context manager; `update` is gen's on_step callback."""

    def __init__(self, n: int, *, enabled: bool):
        self.n = n
        self.enabled = enabled
        self.tty = is_terminal(sys.stderr)
        self.console = Console(stderr=True)
        self.live: Live | None = None
        self.started = self.last_draw = time.perf_counter()

    def __enter__(self) -> Progress:
        if self.enabled and self.tty:
            self.live = Live(console=self.console, auto_refresh=False, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, outputs: list[OutputProgress], timings: Timings) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        every = REFRESH_S if self.live is not None else PLAIN_EVERY_S
        if now - self.last_draw < every and not all(o.done for o in outputs):
            return
        self.last_draw = now
        rate = timings.generated / timings.steps_s if timings.steps_s > 0 else 0.0
        if self.live is not None:
            self.live.update(_live_table(outputs, rate), refresh=True)
        else:
            notes = sum(o.notes for o in outputs)
            typer.echo(f"{timings.generated} tokens, {notes} notes, {rate:.1f} tokens/s", err=True)

    @staticmethod
    def final_table(result: GenerationResult, paths: list[Path], folder: Path) -> None:
        t = result.timings
        rate = t.generated / t.steps_s if t.steps_s > 0 else 0.0
        header = (
            f"{len(result.outputs)} outputs in {folder}: {t.generated} tokens in {t.steps_s:.1f} s "
            f"({rate:.1f} tokens/s), prompt {t.prompt_tokens} tokens in {t.prompt_s:.2f} s, seed {result.seed}"
        )
        if not is_terminal(sys.stdout):
            echo_or_note(header)
            for output, path in zip(result.outputs, paths, strict=True):
                echo_or_note(f"{path}: {output.summary.describe()}{_flags(output)}")
            return
        table = Table(title=header, title_justify="left")
        for column in ("file", "notes", "instruments", "seconds", "repairs", ""):
            table.add_column(column)
        for output, path in zip(result.outputs, paths, strict=True):
            s = output.summary
            table.add_row(
                str(path), str(s.notes), ", ".join(s.instruments) or "-", f"{s.seconds:.1f}", str(s.repaired),
                _flags(output).strip(" ;"),
            )  # fmt: skip
        Console().print(table)


def _flags(output) -> str:
    flags = []
    if output.partial:
        flags.append("partial")
    if output.rejected:
        flags.append(f"rejected: {output.rejected}")
    if output.degenerate:
        flags.append("degenerate")
    return "; " + "; ".join(flags) if flags else ""


def _live_table(outputs: list[OutputProgress], rate: float) -> Table:
    table = Table(title=f"generating: {rate:.1f} tokens/s", title_justify="left")
    for column in ("output", "tokens", "notes", "music s", ""):
        table.add_column(column)
    for i, o in enumerate(outputs, start=1):
        table.add_row(str(i), str(o.tokens), str(o.notes), f"{o.seconds:.1f}", "done" if o.done else "")
    return table
