"""The OpenAPI 3.1 document of `serve`'s /v1 API, as data (tests check it names every route, and only those)."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..limits import (
    MAX_BODY_BYTES,
    MAX_INPUT_SECONDS,
    MAX_MIDI_BYTES,
    MAX_PROMPT_CHARS,
    MAX_SECONDS,
    MAX_SEED,
    MAX_TOP_K,
    MIN_NEW_TOKENS,
    SERVE_MAX_OUTPUTS,
    SERVE_MAX_TOKENS,
)
from .request import DEFAULT_OUTPUTS

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_FIELDS: dict[str, Any] = {
    "prompt": {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS, "description": "What the music is."},
    "n": {"type": "integer", "minimum": 1, "maximum": SERVE_MAX_OUTPUTS, "default": DEFAULT_OUTPUTS},
    "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEED, "description": "Random when absent."},
    "temperature": {"type": ["number", "null"], "description": "The model's default when absent; <= 0 is greedy."},
    "top_p": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
    "top_k": {"type": "integer", "minimum": 0, "maximum": MAX_TOP_K, "default": 0},
    "max_tokens": {"type": ["integer", "null"], "minimum": MIN_NEW_TOKENS, "maximum": SERVE_MAX_TOKENS},
    "seconds": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_SECONDS},
    "strict": {"type": "boolean", "default": True, "description": "false: the reference's free sampler."},
    "from_seconds": {
        "type": ["number", "null"],
        "minimum": 0,
        "maximum": MAX_INPUT_SECONDS,
        "description": "With a MIDI upload: continue from this time instead of its end; with mode infill or "
        "accompany, where the span starts.",
    },
    "mode": {
        "type": ["string", "null"],
        "enum": ["continue", "infill", "accompany", None],
        "description": "What to do with the MIDI upload: continue it (the default), infill (rewrite from_seconds.."
        "to_seconds, keeping every other note) or accompany (new parts around the kept ones), as gen --continue, "
        "--infill, --accompany.",
    },
    "to_seconds": {
        "type": ["number", "null"],
        "minimum": 0,
        "maximum": MAX_INPUT_SECONDS,
        "description": "With mode infill or accompany: where the span ends (as gen --to).",
    },
    "keep_instruments": {"type": ["string", "null"], "description": "With mode accompany: as gen --keep-instruments."},
    "keep_tracks": {
        "type": ["string", "null"],
        "description": "With mode accompany: as gen --keep-tracks, e.g. '1,2'.",
    },
    "tempo": {"type": ["string", "null"], "description": "As gen --tempo, e.g. '100' (BPM)."},
    "meter": {"type": ["string", "null"], "description": "As gen --meter, e.g. '3/4'."},
    "instruments": {"type": ["string", "null"], "description": "As gen --instruments, e.g. 'piano,violin'."},
    "key": {"type": ["string", "null"], "description": "As gen --key, e.g. 'D minor'."},
    "dynamics": {"type": "boolean", "default": False, "description": "As gen --dynamics: accent the beats."},
}
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_JOB = {"$ref": "#/components/schemas/Generation"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json({"$ref": "#/components/schemas/Error"}, "Error") for code in codes}


def schema() -> dict[str, Any]:
    upload = {
        "type": "string",
        "contentMediaType": "audio/midi",
        "description": f"A piece to continue, fill in or accompany (at most {MAX_MIDI_BYTES} bytes; see mode).",
    }
    form = {"type": "object", "properties": {**_FIELDS, "midi": upload}, "required": ["prompt"]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "midillm-lite serve",
            "version": __version__,
            "description": "Text-to-MIDI on this machine. Bearer auth on every route but /v1/health when the "
            "server has a token.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _ERROR,
                "Generation": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "status": {"enum": ["queued", "running", "done", "cancelled", "interrupted", "failed"]},
                        "prompt": {"type": "string"},
                        "partial": {"type": "boolean"},
                        "progress": {"type": "object"},
                        "outputs": {"type": "array", "items": {"type": "object"}},
                        "warnings": {"type": "array", "items": {"type": "string"}},
                        "files": {"type": "array", "items": {"$ref": "#/components/schemas/File"}},
                        "error": {"type": ["string", "null"]},
                    },
                },
                "File": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "size": {"type": "integer"},
                        "url": {"type": "string"},
                        "kind": {"enum": ["midi", "input", "tokens", "image", "audio", "stats", "text", "other"]},
                        "output": {"type": ["integer", "null"]},
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/health": {
                "get": {
                    "summary": "Liveness (no auth)",
                    "security": [],
                    "responses": {
                        "200": _json({"type": "object", "properties": {"status": {"enum": ["ok", "stopping"]}}})
                    },
                }
            },
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({"type": "object"})}}},
            "/v1/model": {
                "get": {
                    "summary": "The model, its defaults and the server's limits",
                    "responses": {"200": _json({"type": "object"}), **_errors(401)},
                }
            },
            "/v1/generations": {
                "post": {
                    "summary": "Start a generation",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": _FIELDS,
                                    "required": ["prompt"],
                                    "additionalProperties": False,
                                }
                            },
                            "multipart/form-data": {"schema": form},
                        },
                    },
                    "responses": {
                        "202": _json(_JOB, "Accepted (queued)"),
                        **_errors(400, 401, 403, 413, 415, 429, 503),
                    },
                    "description": f"Bodies over {MAX_BODY_BYTES} bytes are refused (413); a full queue is 429.",
                },
                "get": {
                    "summary": "Recent generations, newest first",
                    "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}],
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"generations": {"type": "array", "items": _JOB}}}
                        ),
                        **_errors(400, 401),
                    },
                },
            },
            "/v1/generations/{id}": {
                "get": {
                    "summary": "Status and progress",
                    "parameters": _ID,
                    "responses": {"200": _json(_JOB), **_errors(401, 404)},
                }
            },
            "/v1/generations/{id}/events": {
                "get": {
                    "summary": "Progress as Server-Sent Events: 'progress' events, then one 'end'",
                    "parameters": _ID,
                    "responses": {
                        "200": {
                            "description": "text/event-stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(401, 404),
                    },
                }
            },
            "/v1/generations/{id}/cancel": {
                "post": {
                    "summary": "Stop it; what was made is kept (partial outputs)",
                    "parameters": _ID,
                    "responses": {"202": _json(_JOB), **_errors(401, 403, 404)},
                }
            },
            "/v1/generations/{id}/files": {
                "get": {
                    "summary": "Its files (MIDI, tokens, stats, PNG, audio)",
                    "parameters": _ID,
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "files": {"type": "array", "items": {"$ref": "#/components/schemas/File"}}
                                },
                            }
                        ),
                        **_errors(401, 404),
                    },
                }
            },
            "/v1/generations/{id}/files/{name}": {
                "get": {
                    "summary": "Download one file (?download=1 for an attachment)",
                    "parameters": [
                        *_ID,
                        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    ],
                    "responses": {"200": {"description": "The file"}, **_errors(401, 404)},
                }
            },
        },
    }
