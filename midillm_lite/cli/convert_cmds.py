"""CLI verbs `convert` (checkpoint -> GGUF) and `info` (what a GGUF model says about itself)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..convert import DEFAULT_QUANT, QUANT_NAMES, ProgressCallback, convert
from ..layouts import LAYOUT_STANDARD, LAYOUTS
from ..modelinfo import ModelInfo, read_model_info
from . import app, is_terminal

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
        int, typer.Option("--threads", "-t", min=0, help="Threads for llama.cpp's K-quantizer (0: all cores).")
    ] = 0,
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
    with _progress_bar() as progress:
        result = convert(source, out, quant=quant.value, force=force, threads=threads or None, progress=progress,
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
def _progress_bar() -> Iterator[ProgressCallback | None]:
    """A rich bar (bytes read, rate, ETA) on stderr when it is a terminal; nothing otherwise."""
    if not is_terminal(sys.stderr):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,  # fmt: skip
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update


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
