"""gen's terminal output: a live rich table per output while sampling, a final table, plain lines off a terminal."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from . import echo_or_note, is_terminal

if TYPE_CHECKING:  # types only: importing the engine (llama.cpp) here would slow every verb's start-up
    from ..engine import Timings
    from ..generate import GenerationResult, Output, OutputProgress

REFRESH_S = 0.25  # redraw at most 4 times a second: drawing must not cost sampling time
PLAIN_EVERY_S = 10.0  # off a terminal, one progress line after the first step, then this often
# Step 0 samples from the prompt's logits without a decode, so a rate needs at least one real step after it.
MIN_STEPS_FOR_RATE = 2


@dataclass(frozen=True)
class ProgressPlan:
    """What a generation will do at most: n outputs of max_tokens each, unless a stop ends some sooner."""

    n: int
    max_tokens: int
    may_stop_early: bool  # a --seconds limit or strict mode's time ceiling: the total is an upper bound

    @property
    def total(self) -> int:
        return self.n * self.max_tokens


def progress_text(plan: ProgressPlan, outputs: list[OutputProgress], timings: Timings) -> str:
    """`1032 tokens, 344 notes, 13% of 8184 tokens, 10.6 tokens/s, 11m14s left`.

    The outputs advance together, one decode per step, so what is left is the steps of the output
    furthest from its end, at the mean step time so far; a finished output's unused tokens leave the total.
    """
    done = timings.generated
    total = sum(o.tokens if o.done else plan.max_tokens for o in outputs) or plan.total
    notes = sum(o.notes for o in outputs)
    text = f"{done} tokens, {notes} notes, {100 * done / max(total, 1):.0f}% of {total} tokens"
    if timings.steps < MIN_STEPS_FOR_RATE or timings.steps_s <= 0:
        return text
    text += f", {done / timings.steps_s:.1f} tokens/s"
    steps_left = max((plan.max_tokens - o.tokens for o in outputs if not o.done), default=0)
    if steps_left:
        left = format_duration(steps_left * timings.steps_s / timings.steps)
        text += f", {'at most ' if plan.may_stop_early else ''}{left} left"
    return text


def format_duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m: short enough for a progress line."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class Progress:
    """Context manager; `update` is gen's on_step callback."""

    def __init__(self, plan: ProgressPlan, *, enabled: bool):
        self.plan = plan
        self.enabled = enabled
        self.tty = is_terminal(sys.stderr)
        self.console = Console(stderr=True)
        self.live: Live | None = None
        self.started = time.perf_counter()
        self.last_draw: float | None = None  # the first decoded step draws at once: sampling has visibly begun

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
        # The first line waits for a decode: step 0 samples the prompt's logits and has no rate to show.
        due = timings.decode_s > 0 if self.last_draw is None else now - self.last_draw >= every
        if not due and not all(o.done for o in outputs):
            return
        self.last_draw = now
        text = progress_text(self.plan, outputs, timings)
        if self.live is not None:
            self.live.update(_live_table(outputs, text), refresh=True)
        else:
            typer.echo(f"generating: {text}", err=True)

    @staticmethod
    def final_table(result: GenerationResult, paths: list[Path], folder: Path) -> None:
        """The folder once, then each output by its name inside it (never truncated, so outputs stay apart)."""
        t = result.timings
        rate = t.generated / t.steps_s if t.steps_s > 0 else 0.0
        header = (
            f"{plural(len(result.outputs), 'output')} in {folder}: {t.generated} tokens in {t.steps_s:.1f} s "
            f"({rate:.1f} tokens/s), prompt {t.prompt_tokens} tokens in {t.prompt_s:.2f} s, seed {result.seed}"
        )
        if not is_terminal(sys.stdout):
            echo_or_note(header)
            for output, path in zip(result.outputs, paths, strict=True):
                echo_or_note(f"{path}: {output.summary.describe()}{_flags(output)}")
            return
        console = Console()
        console.print(header, soft_wrap=True, highlight=False)  # the folder whole: the terminal wraps, never cuts
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        names = [_relative(path, folder) for path in paths]
        # Short names, never squeezed: a narrow terminal wraps the instruments rather than cut "gen_1.mid".
        table.add_column("file", min_width=max(map(len, names), default=4), overflow="fold")
        for column in ("notes", "instruments", "seconds", "repairs", "status"):
            table.add_column(column)
        for output, name in zip(result.outputs, names, strict=True):
            s = output.summary
            table.add_row(name, str(s.notes), ", ".join(s.instruments) or "-", f"{s.seconds:.1f}", str(s.repaired),
                          _status(output))  # fmt: skip
        console.print(table)
        for output, name in zip(result.outputs, names, strict=True):  # the reasons in full, below the table
            if _flags(output):
                console.print(f"{name}: {_flags(output).removeprefix('; ')}", soft_wrap=True, highlight=False)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def _flags(output: Output) -> str:
    flags = []
    if output.partial:
        flags.append("partial")
    if output.failed:
        flags.append(f"failed: {output.failed}")
    if output.rejected:
        flags.append(f"rejected: {output.rejected}")
    if output.degenerate:
        flags.append("degenerate")
    return "; " + "; ".join(flags) if flags else ""


def _status(output: Output) -> str:
    words = [word for word, on in (("partial", output.partial), ("failed", output.failed),
                                   ("rejected", output.rejected)) if on]  # fmt: skip
    return ", ".join(words) or "ok"


def _live_table(outputs: list[OutputProgress], text: str) -> Table:
    table = Table(title=f"generating: {text}", title_justify="left")
    for column in ("output", "tokens", "notes", "music s", ""):
        table.add_column(column)
    for i, o in enumerate(outputs, start=1):
        table.add_row(str(i), str(o.tokens), str(o.notes), f"{o.seconds:.1f}", "done" if o.done else "")
    return table


class LiveLine:
    """A transient rich Live display on stderr while the `with` block runs, when `enabled` and stderr is a terminal
    (`live` is None otherwise); redrawn only when asked (`live.update(..., refresh=True)`)."""

    def __init__(self, *, enabled: bool):
        self.live: Live | None = None
        self.enabled = enabled
        self.tty = is_terminal(sys.stderr)
        self.last_draw = 0.0

    def __enter__(self):
        if self.enabled and self.tty:
            self.live = Live(console=Console(stderr=True), auto_refresh=False, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)


class AudioProgress(LiveLine):
    """The render phase on a terminal: one transient line, `rendering audio 2 of 4: gen_2.mp3, 40%`; nothing
    off a terminal (the files and the final lines say what was made)."""

    def update(self, number: int, count: int, path: Path, fraction: float) -> None:
        now = time.perf_counter()
        if self.live is None or (now - self.last_draw < REFRESH_S and 0 < fraction < 1):
            return
        self.last_draw = now
        self.live.update(f"rendering audio {number} of {count}: {path.name}, {100 * fraction:.0f}%", refresh=True)

    def callback(self, number: int, count: int, path: Path):
        """A one-file on_progress(fraction) for `render`, which renders file by file."""
        return lambda fraction: self.update(number, count, path, fraction)
