"""`gen --prompts-file`: every prompt through one BatchScheduler, each folder written as its prompt finishes.

Prompts are submitted from a small pool of threads (twice the slots, so the next
prompt is queued when slots free up); each thread writes its prompt's folder with
outputs.save_generation the moment its generation ends. gen prints the results
(tables or JSON lines) in prompt order once all have ended. The first Ctrl-C or
SIGTERM cancels every generation: the running ones end at the next step and their
partial outputs are written; a later signal is only recorded.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from ..batching import DEFAULT_SLOTS, BatchScheduler
from ..errors import Opt, UserError
from ..outputs import new_output_dir, save_generation
from . import InterruptGate
from .progress import PLAIN_EVERY_S, REFRESH_S, LiveLine, format_duration

if TYPE_CHECKING:
    from ..audio import AudioSettings
    from ..controls import ControlFlags
    from ..engine import Timings
    from ..generate import GenerationResult, Generator, OutputProgress
    from ..outputs import SavedGeneration

PROMPT_CHARS = 40  # of each prompt in the live table
THREADS_PER_SLOT = 2  # callers per slot: the running ones, and as many queued to take the slots they free


def default_slots(n: int) -> int:
    """Sequences decoded at once when --slots is not given: DEFAULT_SLOTS, or n if more (one prompt must fit)."""
    return max(DEFAULT_SLOTS, n)


def check_slots(slots: int | None, n: int) -> int:
    """The slots to use; an error before any model loads when one prompt's n outputs cannot fit."""
    if slots is None:
        return default_slots(n)
    if slots < n:
        raise UserError(Opt("slots"), f" is {slots} but each prompt has {n} outputs, decoded together; give ",
                        Opt("slots"), f" {n} or more")  # fmt: skip
    return slots


@dataclass
class Done:
    """One prompt's end: its result and folder, or the error that stopped it; None result: it never started."""

    index: int
    text: str
    result: GenerationResult | None = None
    folder: Path | None = None
    saved: SavedGeneration | None = None
    error: BaseException | None = None


def run_prompts(gen: Generator, prompts: list[str], settings: list[dict], *, root: Path, flags: ControlFlags,
                slots: int, png: bool, audio: AudioSettings | None, show: bool) -> tuple[list[Done], bool]:  # fmt: skip
    """Generate every prompt (with its own `settings`: generate's keywords) through the scheduler; each Done in
    prompt order, and whether a signal cut it short.

    `show`: a live progress display on stderr. Folders are written by the worker threads as each prompt ends; on a
    signal, audio not yet rendered is skipped (the MIDI files come first).
    """
    cancel = threading.Event()
    board = BatchProgress(prompts, enabled=show)
    workers = min(len(prompts), THREADS_PER_SLOT * slots)

    def one(index: int, text: str) -> Done:
        if cancel.is_set():
            return Done(index, text)
        controls = flags.for_prompt(text)
        try:
            result = scheduler.generate(controls.model_prompt, cancel=cancel, on_step=board.updater(index),
                                        instruments=controls.instruments, grid=controls.grid,
                                        **settings[index])  # fmt: skip
            if not any(o.generated for o in result.outputs) and result.interrupted:
                board.finish(index, "not started")
                return Done(index, text)  # cancelled while queued: nothing was made, nothing to keep
            folder = new_output_dir(text, root=root)
            saved = save_generation(folder, result, text, controls=controls.to_dict(), png=png, audio=audio,
                                    stop=cancel.is_set)  # fmt: skip
        except Exception as exc:  # this prompt's error; the others go on
            board.finish(index, "error")
            return Done(index, text, error=exc)
        board.finish(index, "partial" if result.interrupted else "done")
        return Done(index, text, result, folder, saved)

    done: list[Done] = []
    with InterruptGate() as gate, board, BatchScheduler(gen, slots=slots, max_queue=workers) as scheduler:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="midillm-prompt")
        futures = [pool.submit(one, i, text) for i, text in enumerate(prompts)]
        try:
            for future in concurrent.futures.as_completed(futures):
                done.append(future.result())
        except KeyboardInterrupt:
            cancel.set()  # running generations stop at the next step; their workers write the partial outputs
            gate.close()  # from here a signal is only recorded: the writes are not cut short
            done = [future.result() for future in futures]
        finally:
            pool.shutdown(wait=True)
        interrupted = cancel.is_set() or bool(gate.caught)
    return sorted(done, key=lambda d: d.index), interrupted


class BatchProgress(LiveLine):
    """Progress of many prompts at once: a live table on a terminal, a plain line now and then elsewhere.

    Updated from the prompts' threads (each generation's on_step runs in the thread that waits for it).
    """

    def __init__(self, prompts: list[str], *, enabled: bool):
        super().__init__(enabled=enabled)
        self.prompts = prompts
        self.lock = threading.Lock()
        self.rows: dict[int, tuple[int, int, str]] = {}  # prompt index -> (tokens, notes, status)
        self.started = time.perf_counter()

    def updater(self, index: int):
        def update(outputs: list[OutputProgress], timings: Timings) -> None:
            tokens, notes = sum(o.tokens for o in outputs), sum(o.notes for o in outputs)
            self._set(index, (tokens, notes, "generating"))

        return update

    def finish(self, index: int, status: str) -> None:
        tokens, notes, _ = self.rows.get(index, (0, 0, ""))
        self._set(index, (tokens, notes, status), force=True)

    def _set(self, index: int, row: tuple[int, int, str], *, force: bool = False) -> None:
        if not self.enabled:
            return
        with self.lock:
            before = self.rows.get(index)
            self.rows[index] = row
            now = time.perf_counter()
            # Off a terminal: a line when a prompt starts or ends, else every PLAIN_EVERY_S.
            changed = before is None or before[2] != row[2]
            every = REFRESH_S if self.live is not None else PLAIN_EVERY_S
            if not (force or changed) and now - self.last_draw < every:
                return
            self.last_draw = now
            text = self.summary()
            if self.live is not None:
                self.live.update(self._table(text), refresh=True)
            else:
                typer.echo(f"generating: {text}", err=True)

    def summary(self) -> str:
        """`2 of 5 prompts done, 2 generating, 812 tokens, 31.2 tokens/s, 1m04s`."""
        statuses = [status for _, _, status in self.rows.values()]
        ended = sum(status != "generating" for status in statuses)
        tokens = sum(tokens for tokens, _, _ in self.rows.values())
        elapsed = time.perf_counter() - self.started
        return (f"{ended} of {len(self.prompts)} prompts done, {statuses.count('generating')} generating, "
                f"{tokens} tokens, {tokens / max(elapsed, 1e-9):.1f} tokens/s, {format_duration(elapsed)}")  # fmt: skip

    def _table(self, text: str) -> Table:
        table = Table(title=f"generating: {text}", title_justify="left")
        for column in ("prompt", "tokens", "notes", ""):
            table.add_column(column)
        for index, (tokens, notes, status) in sorted(self.rows.items()):
            prompt = self.prompts[index]
            short = prompt if len(prompt) <= PROMPT_CHARS else prompt[: PROMPT_CHARS - 1] + "…"
            table.add_row(short, str(tokens), str(notes), status)
        return table
