"""gen's options for the piece it starts from: --continue, --infill, --accompany, --from/--to and what to keep."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import UserError
from .params import INPUT_SECONDS, parser

if TYPE_CHECKING:
    from ..amt.anticipation import Anticipation
    from ..amt.continuation import Continuation

InfillOption = Annotated[
    Path | None,
    typer.Option("--infill", help="Rewrite --from..--to of this MIDI file; every other note stays as it is."),
]
AccompanyOption = Annotated[
    Path | None,
    typer.Option("--accompany", help="Write new parts around the kept parts of this MIDI file (default: all)."),
]
ToOption = Annotated[
    float | None,
    typer.Option(
        "--to",
        parser=parser(INPUT_SECONDS),
        help="With --infill or --accompany: where the span ends (seconds); --accompany's default: the piece's end.",
    ),
]
KeepInstrumentsOption = Annotated[
    str | None,
    typer.Option("--keep-instruments", help="With --accompany: the parts kept (GM names, families, 0-127, drums)."),
]
KeepTracksOption = Annotated[
    str | None, typer.Option("--keep-tracks", help="With --accompany: the tracks kept, numbered from 0 as stored.")
]


def prepare_sources(
    *,
    continue_from: Path | None,
    infill: Path | None,
    accompany: Path | None,
    from_seconds: float | None,
    to_seconds: float | None,
    keep_instruments: str | None,
    keep_tracks: str | None,
    seconds: float | None,
) -> tuple[Continuation | None, Anticipation | None]:
    """Check how the options combine, then read the piece: (continuation, anticipation), at most one of them."""
    from ..amt.anticipation import prepare_accompaniment, prepare_infill
    from ..amt.continuation import prepare_continuation

    given = [name for name, value in (("--continue", continue_from), ("--infill", infill),
                                      ("--accompany", accompany)) if value is not None]  # fmt: skip
    if len(given) > 1:
        raise UserError(f"give one of {' and '.join(given)}, not both")
    if from_seconds is not None and not given:
        raise UserError("--from needs --continue, --infill or --accompany FILE.mid")
    if to_seconds is not None and infill is None and accompany is None:
        raise UserError("--to needs --infill or --accompany FILE.mid")
    for name, value in (("--keep-instruments", keep_instruments), ("--keep-tracks", keep_tracks)):
        if value is not None and accompany is None:
            raise UserError(f"{name} needs --accompany FILE.mid")
    if (infill or accompany) and seconds is not None:
        raise UserError("the span's end ends the music when filling in or accompanying: leave out --seconds")
    if continue_from is not None:
        return prepare_continuation(continue_from, from_seconds=from_seconds), None
    if infill is not None:
        if from_seconds is None or to_seconds is None:
            raise UserError("--infill needs --from and --to: the span to rewrite, in seconds")
        return None, prepare_infill(infill, from_seconds=from_seconds, to_seconds=to_seconds)
    if accompany is not None:
        return None, prepare_accompaniment(accompany, keep_instruments=_instruments(keep_instruments),
                                           keep_tracks=_tracks(keep_tracks), from_seconds=from_seconds,
                                           to_seconds=to_seconds)  # fmt: skip
    return None, None


def _instruments(text: str | None) -> list[frozenset[int]] | None:
    from ..controls import parse_instrument_groups

    return None if text is None else parse_instrument_groups(text)


def _tracks(text: str | None) -> list[int] | None:
    from ..amt.anticipation import parse_tracks

    return None if text is None else parse_tracks(text)
