"""CLI verbs that make music visible or audible from MIDI files: `plot` (piano-roll PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from . import app


@app.command("plot")
def plot_command(
    midi: Annotated[Path, typer.Argument(metavar="IN.mid", help="MIDI file, or a folder: every .mid in it.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="PNG to write (one input only).", show_default="IN.png")
    ] = None,
    title: Annotated[str | None, typer.Option(help="Title drawn above the roll.", show_default="file name")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace an existing PNG.")] = False,
) -> None:
    """Draw a piano roll of a MIDI file: one colour per instrument, drums apart, bar lines, seconds axis."""
    from ..pianoroll import plot_file

    inputs = midi_inputs(midi)
    if out is not None and len(inputs) > 1:
        raise UserError("--out names one PNG; with a folder the PNGs go next to its MIDI files")
    for path in inputs:
        written = plot_file(path, out, title=title, force=force)
        typer.echo(f"wrote {written}")


def midi_inputs(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".mid", ".midi") and p.is_file())
        if not found:
            raise UserError(f"{path} holds no .mid files")
        return found
    return [path]
