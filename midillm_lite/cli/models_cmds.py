"""CLI verb `models`: which models are here, which can be made, and which one `gen` uses by default."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..models import ABSENT, BUNDLED, ModelListing, list_models
from . import app

DEFAULT_MARK = "*"
INDENT = 2  # room for the default mark
NAME_COLUMN = 20  # a longer name gets a line of its own


@app.command("models")
def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List the models here and those `convert` can make, marking the one `gen` uses without --model, and say
    which synthesizer and soundfont would render audio.

    Registry models (models/registry.json) come first, best first, then any other GGUF file in the model folders:
    the repository's models/ and $MIDILLM_HOME/models (default ~/.cache/midillm-lite/models). Never uses the network.
    """
    from ..audio import describe_setup

    listing = list_models()
    if as_json:
        typer.echo(json.dumps([item.to_dict() for item in listing], indent=2))
    else:
        typer.echo(format_listing(listing, audio=describe_setup()))


def format_listing(listing: list[ModelListing], *, audio: str | None = None) -> str:
    """A block per model (mark, name, status, description), the files outside the registry under their own heading,
    then the `audio` line (which synthesizer and soundfont render) and the legend."""
    width = min(max((len(item.name) for item in listing), default=0), NAME_COLUMN) + 2
    known = [item for item in listing if item.in_registry]
    others = [item for item in listing if not item.in_registry]
    lines = [line for item in known for line in _block(item, width)]
    if others:
        lines += ["", "other GGUF files here:", *(line for item in others for line in _block(item, width))]
    if not listing:
        lines.append("no models: the registry is empty and the model folders hold no GGUF files")
    lines += ["", audio] if audio else []
    lines.append("")
    if any(item.default for item in listing):
        lines.append(f"{DEFAULT_MARK} what `midillm-lite gen` uses without --model")
    else:
        lines.append("`midillm-lite gen` needs --model here, or one of the models above made first")
    return "\n".join(lines)


def _block(item: ModelListing, width: int) -> list[str]:
    mark = DEFAULT_MARK if item.default else " "
    pad = " " * (INDENT + width)
    rest = [*_status(item), item.description]
    head = [f"{mark} {item.name}"] if len(item.name) >= width else [f"{mark} {item.name:<{width}}{rest.pop(0)}"]
    return head + [pad + line for line in rest if line]


def _status(item: ModelListing) -> list[str]:
    if item.status == ABSENT and item.convert_command:
        return [
            f"not here: {item.convert_command}",
            f"(or `midillm-lite gen --model {item.name}` downloads and converts it on first use)",
        ]
    if item.status == ABSENT:
        return [f"not here: bundled with midillm-lite, expected at {item.path} (a fresh clone has it)"]
    where = "bundled" if item.status == BUNDLED else "present"
    layout = f"{item.layout} layout" if item.layout else "not a readable MIDI-LLM GGUF"
    return [f"{where} at {item.path} ({_size(item.size_bytes or 0)}, {layout})"]


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
