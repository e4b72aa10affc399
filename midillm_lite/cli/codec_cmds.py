"""CLI verbs `decode` (token ids -> MIDI) and `encode` (MIDI -> token ids) over the AMT codec."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..amt import vocab
from ..amt.tokens_file import STDIO
from ..amt.transcode import decode_file, encode_file
from ..controls import decode_grid
from ..errors import Opt, UserError
from . import app, is_terminal
from .params import INPUT_SECONDS, parser

ForceOption = Annotated[bool, typer.Option("--force", "-f", help="Overwrite OUT if it exists.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


@app.command("decode")
def decode_command(
    tokens: Annotated[
        Path,
        typer.Argument(
            metavar="TOKENS",
            help="Text file of token ids (one per line or whitespace-separated; `-` reads stdin). "
            f"AMT ids 0..{vocab.MIDI_VOCAB_SIZE - 1}, or full-vocabulary ids >= {vocab.TEXT_VOCAB_SIZE} as the model "
            "emits them.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="MIDI file to write (`-`: stdout).", show_default="TOKENS with .mid"),
    ] = None,
    tempo: Annotated[
        str | None,
        typer.Option(
            metavar="BPM|auto",
            help="BPM of the MIDI grid, or auto: estimated from the onsets. Without --tempo, --meter and "
            "--dynamics the file says 120 BPM 4/4; with any of them, the others are auto (as in gen).",
        ),
    ] = None,
    meter: Annotated[
        str | None,
        typer.Option(
            metavar="N/D|auto",
            help="Time signature N/D, or auto: estimated at the tempo (3/4, 4/4 or 6/8; 4/4 when unclear).",
        ),
    ] = None,
    dynamics: Annotated[
        bool,
        typer.Option(
            "--dynamics",
            help="Accent the grid in the velocities (downbeats loudest, off-beats softest); no note moves.",
        ),
    ] = False,
    force: ForceOption = False,
    as_json: JsonOption = False,
) -> None:
    """Write the MIDI file a token sequence describes; any integers decode, repairs are counted."""
    grid = decode_grid(tempo=tempo, meter=meter, dynamics=dynamics)  # bad values fail before anything is read
    target = out or _default_out(tokens, ".mid")
    to_stdout = str(target) == STDIO
    if to_stdout and is_terminal(sys.stdout):
        raise UserError("a MIDI file is binary: redirect standard output (`> out.mid`) or give ", Opt("out"), " FILE")
    summary = decode_file(tokens, target, force=force, grid=grid)
    if not summary.notes:
        typer.echo(f"warning: {tokens} holds no notes; wrote an empty MIDI file", err=True)
    if as_json and not to_stdout:
        typer.echo(json.dumps({"path": str(target), **summary.to_dict()}, indent=2))
    else:  # with `-o -` stdout holds the MIDI bytes: the summary goes to stderr
        typer.echo(f"wrote {target}: {summary.describe()}{_grid_words(summary.grid)}", err=to_stdout)


@app.command("encode")
def encode_command(
    midi: Annotated[Path, typer.Argument(metavar="MIDI", help="MIDI file (type 0 or 1) to encode.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Token file to write (`-`: stdout).", show_default="MIDI with _tokens.txt"),
    ] = None,
    full_ids: Annotated[
        bool,
        typer.Option(
            "--full-ids",
            help=f"Write MIDI-LLM vocabulary ids (AMT id + {vocab.TEXT_VOCAB_SIZE}) instead of AMT ids.",
        ),
    ] = False,
    start: Annotated[
        float,
        typer.Option(
            "--start",
            parser=parser(INPUT_SECONDS),
            help=f"Encode from this many seconds on ({INPUT_SECONDS.describe()}; AMT times reach "
            f"{vocab.MAX_TIME_SECONDS} s from there).",
        ),
    ] = 0.0,
    force: ForceOption = False,
    as_json: JsonOption = False,
) -> None:
    """Write the AMT token ids of a MIDI file: one note is (arrival time, duration, instrument-pitch)."""
    target = out or _default_out(midi, "_tokens.txt", replace_suffix=False)
    summary = encode_file(midi, target, force=force, full_ids=full_ids, start=start)
    to_stdout = str(target) == STDIO
    if not summary.notes:
        typer.echo(f"warning: {midi} holds no notes; wrote an empty token file", err=True)
    if as_json and not to_stdout:
        typer.echo(json.dumps({"path": str(target), **summary.to_dict()}, indent=2))
        return
    line = f"{summary.tokens} tokens: {summary.describe()}"
    notes = [
        (summary.dropped_late, "notes past 100 s left out (use --start to encode later music)"),
        (summary.dropped_early, "notes before --start left out"),
        (summary.clipped_durations, "durations clipped to 9.99 s"),
        (summary.unclosed, "notes never ended, given 0.25 s"),
        (summary.stray_offs, "note-offs without a sounding note ignored"),
    ]
    extra = "; ".join(f"{count} {what}" for count, what in notes if count)
    message = f"wrote {target}: {line}" + (f"; {extra}" if extra else "")
    typer.echo(message, err=to_stdout)


def _grid_words(grid: dict | None) -> str:
    """'; 96 BPM (estimate, fit 0.61), 3/4 (estimate, fit 0.4), beat accents' for a resolved grid, else ''."""
    if grid is None:
        return ""

    def source(name: str, fit: float | None) -> str:
        return f"{name}, fit {fit:g}" if fit is not None else name

    text = f"; {grid['bpm']:g} BPM ({source(grid['tempo_source'], grid['fit'])}), "
    text += f"{grid['meter']} ({source(grid['meter_source'], grid['meter_fit'])})"
    return text + (f", {grid['dynamics']}" if grid["dynamics"] else "")


def _default_out(source: Path, suffix: str, *, replace_suffix: bool = True) -> Path:
    if str(source) == STDIO:
        return Path("tokens.mid")
    return source.with_suffix(suffix) if replace_suffix else source.with_name(source.stem + suffix)
