"""CLI verbs `convert` (checkpoint -> GGUF) and `info` (what a GGUF model says about itself)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..convert import DEFAULT_QUANT, PHASE_UNITS, QUANT_NAMES, ProgressCallback, convert
from ..layouts import LAYOUT_STANDARD, LAYOUTS
from ..modelinfo import ModelInfo, read_model_info
from . import app, is_terminal
from .params import THREADS, parser
from .progress import PLAIN_EVERY_S, format_duration

QuantChoice = Enum("QuantChoice", {name: name for name in QUANT_NAMES}, type=str)  # typer shows the choices
DEFAULT_CHOICE = QuantChoice(DEFAULT_QUANT)
LayoutChoice = Enum("LayoutChoice", {name: name for name in LAYOUTS}, type=str)
DEFAULT_LAYOUT = LayoutChoice(LAYOUT_STANDARD)
MIB = 1024 * 1024
INFO_WIDTH = 17  # the longest row name, "autoregress token"


@app.command("convert")
def convert_command(
    source: Annotated[
        str,
        typer.Argument(
            help="Checkpoint folder in Hugging Face layout, or a hub repo id (e.g. slseanwu/MIDI-LLM_Llama-3.2-1B)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The GGUF file to write.")],
    quant: Annotated[QuantChoice, typer.Option("--quant", "-q", help="Weight type of the GGUF.")] = DEFAULT_CHOICE,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite OUT if it exists.")] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            "-t",
            parser=parser(THREADS),
            help=f"Threads for llama.cpp's K-quantizer ({THREADS.describe()}).",
            show_default="all cores",
        ),
    ] = None,
    layout: Annotated[
        LayoutChoice,
        typer.Option(
            help="standard: the full vocabulary, runs in any llama.cpp tool. midi-head: MIDI rows only in the model "
            "(faster generation) plus a NAME.text.gguf companion; SOURCE may then also be a standard GGUF, "
            "which keeps its type."
        ),
    ] = DEFAULT_LAYOUT,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Convert a MIDI-LLM checkpoint to a GGUF file llama.cpp runs."""
    with progress_display() as progress:
        result = convert(source, out, quant=quant.value, force=force, threads=threads, progress=progress,
                         layout=layout.value)  # fmt: skip
    if as_json:
        typer.echo(json.dumps({**result.__dict__, "path": str(result.path), "companion": result.companion and
                               str(result.companion)}, indent=2))  # fmt: skip
        return
    extra = f" (+ {result.companion.name}, {result.companion.stat().st_size / MIB:.1f} MiB)" if result.companion else ""
    typer.echo(
        f"wrote {result.path}: {result.quant}, {result.layout} layout, {result.file_size / MIB:.1f} MiB{extra}, "
        f"{result.n_tensors} tensors, {result.seconds:.1f} s"
    )


@contextlib.contextmanager
def progress_display(*, enabled: bool = True) -> Iterator[ProgressCallback | None]:
    """A rich bar per phase (amount, rate, time left) on a terminal; off one, a plain line every PLAIN_EVERY_S."""
    if not enabled:
        yield None
        return
    if not is_terminal(sys.stderr):
        yield PlainProgress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    class AmountColumn(DownloadColumn):  # bytes as MiB, tensors as "12/147"
        def render(self, task):
            if task.fields.get("unit") == "bytes":
                return super().render(task)
            return MofNCompleteColumn().render(task)

    columns = (TextColumn("{task.description}"), BarColumn(), AmountColumn(), TextColumn("{task.fields[unit]}"),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                unit = "" if PHASE_UNITS.get(phase) == "bytes" else PHASE_UNITS.get(phase, "")
                tasks[phase] = bar.add_task(phase, total=total, unit=unit)
            bar.update(tasks[phase], completed=done, total=total)

        yield update


class PlainProgress:
    """Progress lines for a log or a pipe: each phase's first step, then one line every PLAIN_EVERY_S, and its end."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.phase_started: dict[str, float] = {}
        self.last_line = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = self.clock()
        first = phase not in self.phase_started
        if first:
            self.phase_started[phase] = now
        if not (first or done >= total or now - self.last_line >= PLAIN_EVERY_S):
            return
        self.last_line = now
        typer.echo(f"{phase}: {convert_progress_text(phase, done, total, now - self.phase_started[phase])}", err=True)


def convert_progress_text(phase: str, done: int, total: int, elapsed: float) -> str:
    """`512.0 of 2400.0 MiB (21%), 1m10s left` or `12 of 147 tensors (8%), 2m03s left`, at the rate so far."""
    if PHASE_UNITS.get(phase) == "bytes":
        amount = f"{done / MIB:.1f} of {total / MIB:.1f} MiB"
    else:
        amount = f"{done} of {total} {PHASE_UNITS.get(phase, 'steps')}"
    text = f"{amount} ({100 * done / max(total, 1):.0f}%)"
    if done >= total:
        return text + f", done in {format_duration(elapsed)}"
    if done > 0 and elapsed > 0:
        text += f", {format_duration(elapsed * (total - done) / done)} left"
    return text


@app.command("info")
def info_command(
    model: Annotated[str, typer.Argument(help="A GGUF model file or a registry name (as `gen --model` takes).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the description as JSON.")] = False,
) -> None:
    """Describe a MIDI-LLM GGUF: its midillm.* keys, quantization, layout, tensors and size (fails on other GGUFs)."""
    from ..llamacpp import backend_description  # loads llama.cpp: only here, not for every verb
    from ..models import find_model

    info = read_model_info(find_model(model, allow_download=False).path)
    backend = backend_description()
    if as_json:
        typer.echo(json.dumps({**info.to_dict(), "backend": backend}, indent=2))
    else:
        typer.echo(format_info(info) + f"\n{'backend':<{INFO_WIDTH}}  {backend}")


def _vocabulary(info: ModelInfo) -> str:
    if info.companion:
        return f"{info.n_vocab} MIDI tokens (the {info.text_vocab_size} text tokens live in the companion)"
    return f"{info.n_vocab} tokens ({info.text_vocab_size} text + {info.amt_vocab_size} MIDI)"


def format_info(info: ModelInfo) -> str:
    rows = [
        ("file", str(info.path)),
        ("size", f"{info.file_size / MIB:.1f} MiB ({info.file_size} bytes)"),
        ("quantization", info.quant),
        ("tensors", str(info.n_tensors)),
        ("architecture", f"{info.architecture}, {info.n_layers} layers, width {info.embedding_length}"),
        ("vocabulary", _vocabulary(info)),
        ("layout", info.layout + (f" (text companion: {info.companion})" if info.companion else "")),
        ("autoregress token", str(info.autoregress_token_id)),
        ("system prompt", repr(info.system_prompt)),
        ("sampling", f"temperature {info.temperature}, top_p {info.top_p}, max {info.max_new_tokens} new tokens"),
        ("train context", str(info.train_context_length)),
        ("source", f"{info.source_repo} @ {info.source_revision}"),
        ("converter", info.converter_version),
    ]
    return "\n".join(f"{name:<{INFO_WIDTH}}  {value}" for name, value in rows)
