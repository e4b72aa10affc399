"""The body of a create-generation request: its fields, their types and the server's limits, checked in one place.

A request arrives as JSON (typed values) or as a multipart form (every value a string, an empty one meaning
"not given", and an optional MIDI file). Both become one `GenerationRequest`, or a UserError naming the field.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..amt.anticipation import MODE_ACCOMPANY, MODE_INFILL, parse_tracks, prepare_accompaniment, prepare_infill
from ..amt.continuation import prepare_continuation
from ..controls import ControlFlags, parse_instrument_groups
from ..errors import UserError, check_range
from ..generate import check_settings
from ..limits import (
    MAX_INPUT_SECONDS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MIN_NEW_TOKENS,
    SERVE_MAX_OUTPUTS,
    SERVE_MAX_TOKENS,
)

DEFAULT_OUTPUTS = 1  # an API call asks for one piece unless it says otherwise; the page asks for more
MIDI_FIELD = "midi"  # the multipart file field of a piece to continue

# Field name -> type. Everything is optional but the prompt.
FIELDS: dict[str, type] = {
    "prompt": str,
    "n": int,
    "seed": int,
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "max_tokens": int,
    "seconds": float,
    "strict": bool,
    "from_seconds": float,
    "mode": str,
    "to_seconds": float,
    "keep_instruments": str,
    "keep_tracks": str,
    "tempo": str,
    "meter": str,
    "instruments": str,
    "key": str,
    "dynamics": bool,
}
_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no"}


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    n: int = DEFAULT_OUTPUTS
    seed: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int = 0
    max_tokens: int | None = None
    seconds: float | None = None
    strict: bool = True
    from_seconds: float | None = None
    mode: str | None = None  # what to do with the MIDI file: continue (the default), infill or accompany
    to_seconds: float | None = None
    keep_instruments: str | None = None
    keep_tracks: str | None = None
    tempo: str | None = None
    meter: str | None = None
    instruments: str | None = None
    key: str | None = None
    dynamics: bool = False
    continue_midi: bool = False  # a MIDI file came with the request (saved by the server as input.mid)

    def controls(self) -> ControlFlags:
        return ControlFlags.parse(tempo=self.tempo, meter=self.meter, instruments=self.instruments, key=self.key,
                                  dynamics=self.dynamics)  # fmt: skip

    def settings(self) -> dict[str, Any]:
        """Generator.generate's keywords (continuation and controls are applied by the caller)."""
        return {
            "n": self.n,
            "seed": self.seed,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_tokens": self.max_tokens,
            "seconds": self.seconds,
            "strict": self.strict,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_request(fields: dict[str, Any], *, form: bool, has_midi: bool = False) -> GenerationRequest:
    """Check a request's fields (JSON values, or form strings when `form`) and return the request they make."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise UserError(f"unknown field {unknown[0]!r}; the fields are: {', '.join(FIELDS)}")
    values = {}
    for name, raw in fields.items():
        value = _from_form(name, raw) if form else _from_json(name, raw)
        if value is not None:
            values[name] = value
    if "prompt" not in values:
        raise UserError('prompt is missing: describe the music, e.g. "a gentle piece for solo piano"')
    request = GenerationRequest(**values, continue_midi=has_midi)
    _check(request)
    return request


def _from_json(name: str, raw: Any) -> Any:
    kind = FIELDS[name]
    if raw is None:
        return None
    ok = isinstance(raw, kind) and not (kind is not bool and isinstance(raw, bool))
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if kind is int and isinstance(raw, float) and raw.is_integer() and math.isfinite(raw):
        return int(raw)  # JSON has one number type: 4.0 is 4
    if not ok:
        raise UserError(f"{name} must be {_kind(kind)}, not {type(raw).__name__} {_shown(raw)}")
    return raw


def _from_form(name: str, raw: Any) -> Any:
    if not isinstance(raw, str):
        raise UserError(f"{name} must be a text field, not a file")
    text = raw.strip() if name != "prompt" else raw
    if not text.strip():
        return None  # an empty form input means "not given"
    kind = FIELDS[name]
    try:
        if kind is bool:
            return _boolean(name, text)
        return int(text, 10) if kind is int else float(text) if kind is float else text
    except ValueError:
        raise UserError(f"{name} must be {_kind(kind)}, not {_shown(text)}") from None


def _boolean(name: str, text: str) -> bool:
    low = text.lower()
    if low in _TRUE or low in _FALSE:
        return low in _TRUE
    raise UserError(f"{name} must be true or false, not {_shown(text)}")


def _kind(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "text"}[kind]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _check(request: GenerationRequest) -> None:
    """The server's own limits, then every library check that needs no model."""
    if len(request.prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"prompt is {len(request.prompt)} characters; the server takes at most {MAX_PROMPT_CHARS}")
    check_range("n", request.n, 1, SERVE_MAX_OUTPUTS, integer=True)
    if request.max_tokens is not None:
        check_range("max_tokens", request.max_tokens, MIN_NEW_TOKENS, SERVE_MAX_TOKENS, integer=True)
    if request.seed is not None:
        check_range("seed", request.seed, 0, MAX_SEED, integer=True)
    if request.from_seconds is not None:
        if not request.continue_midi:
            raise UserError("from_seconds needs a MIDI file to continue (the multipart field 'midi')")
        check_range("from_seconds", request.from_seconds, 0, MAX_INPUT_SECONDS)
    _check_midi_mode(request)
    if request.temperature is not None and not math.isfinite(request.temperature):
        raise UserError(f"temperature must be a finite number, not {request.temperature!r}")
    check_settings(request.prompt, n=request.n, temperature=request.temperature, top_p=request.top_p,
                   top_k=request.top_k, max_tokens=request.max_tokens, seconds=request.seconds)  # fmt: skip
    request.controls()  # tempo, meter, instruments and key parse, or a UserError naming the one that does not


MIDI_MODES = ("continue", MODE_INFILL, MODE_ACCOMPANY)


def _check_midi_mode(request: GenerationRequest) -> None:
    """mode, to_seconds and the parts to keep: what `gen --infill/--accompany` checks, in the API's field names."""
    if request.mode is not None and request.mode not in MIDI_MODES:
        raise UserError(f"mode must be one of {', '.join(MIDI_MODES)}, not {_shown(request.mode)}")
    mode = request.mode or "continue"
    for name in ("to_seconds", "keep_instruments", "keep_tracks"):
        if getattr(request, name) is not None and mode == "continue":
            raise UserError(f"{name} goes with mode infill or accompany")
    if mode == "continue":
        return
    if not request.continue_midi:
        raise UserError(f"mode {mode} needs a MIDI file (the multipart field 'midi')")
    if request.seconds is not None:
        raise UserError(f"with mode {mode} the span's end ends the music: leave out seconds")
    if mode == MODE_INFILL and (request.from_seconds is None or request.to_seconds is None):
        raise UserError("mode infill needs from_seconds and to_seconds: the span to rewrite")
    if mode == MODE_INFILL and (request.keep_instruments or request.keep_tracks):
        raise UserError("keep_instruments and keep_tracks go with mode accompany")
    if request.to_seconds is not None:
        check_range("to_seconds", request.to_seconds, 0, MAX_INPUT_SECONDS)
    if request.keep_instruments is not None:
        parse_instrument_groups(request.keep_instruments)
    if request.keep_tracks is not None:
        parse_tracks(request.keep_tracks)


def prepare_midi_mode(request: GenerationRequest, path) -> dict[str, Any]:
    """Generator.generate's continuation or anticipation keyword for the request's MIDI file at `path`."""
    mode = request.mode or "continue"
    if mode == "continue":
        return {"continuation": prepare_continuation(path, from_seconds=request.from_seconds)}
    if mode == MODE_INFILL:
        assert request.from_seconds is not None and request.to_seconds is not None  # _check_midi_mode
        return {"anticipation": prepare_infill(path, from_seconds=request.from_seconds,
                                               to_seconds=request.to_seconds)}  # fmt: skip
    keep = None if request.keep_instruments is None else parse_instrument_groups(request.keep_instruments)
    tracks = None if request.keep_tracks is None else parse_tracks(request.keep_tracks)
    return {"anticipation": prepare_accompaniment(path, keep_instruments=keep, keep_tracks=tracks,
                                                  from_seconds=request.from_seconds,
                                                  to_seconds=request.to_seconds)}  # fmt: skip
