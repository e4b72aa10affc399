"""The HTTP application: routes under /v1 (JSON, Server-Sent Events, file downloads), the page at /, and its guards.

Starlette, not FastAPI: the same ASGI core at a third of the import time (0.16-0.44 s against 0.47-0.92 s for
fastapi+uvicorn on the build machine, measured cold and warm) and 2 MB less to install, which a Raspberry Pi
feels; the request is checked by request.py, and the OpenAPI document is data (openapi.py) tested against the
routes. Guards: bearer token (header, or `access_token` in the query for what a browser loads by URL), a Host
allow-list when only loopback is served (against DNS rebinding; IPv6 literals too, which Starlette's
TrustedHostMiddleware splits wrongly), and no cross-origin writes (no CORS headers at all).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import UserError
from ..limits import MAX_BODY_BYTES
from .files import find_file, list_files
from .jobs import Job, JobStore, QueueFull, ShuttingDown
from .openapi import schema
from .request import FIELDS, MIDI_FIELD, parse_request

log = logging.getLogger(__name__)

API = "/v1"
OPEN_PATHS = ("/", f"{API}/health")  # the page and its assets hold no data and start nothing
STATIC_PREFIX = "/static/"
RECENT_DEFAULT, RECENT_MAX = 20, 200
STREAM_POLL_S = 0.2  # how often a progress stream looks for news
STREAM_HEARTBEAT_S = 15.0  # a comment line keeps proxies from closing a quiet stream
RETRY_AFTER_S = 10
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's URL may carry the access token
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "frame-ancestors 'none'; form-action 'self'",
}


@dataclass(frozen=True)
class AppConfig:
    token: str | None  # None: no auth
    allowed_hosts: list[str] | None  # None: any Host header (a token guards the server instead)
    about: dict[str, Any]  # what GET /v1/model answers: the model, defaults, limits


def create_app(store: JobStore, config: AppConfig) -> Starlette:
    api = _Api(store, config)
    routes = [
        Route("/", api.page, methods=["GET"]),
        Route(f"{API}/health", api.health, methods=["GET"]),
        Route(f"{API}/openapi.json", api.openapi, methods=["GET"]),
        Route(f"{API}/model", api.model, methods=["GET"]),
        Route(f"{API}/generations", api.create, methods=["POST"]),
        Route(f"{API}/generations", api.recent, methods=["GET"]),
        Route(f"{API}/generations/{{id}}", api.status, methods=["GET"]),
        Route(f"{API}/generations/{{id}}/events", api.events, methods=["GET"]),
        Route(f"{API}/generations/{{id}}/cancel", api.cancel, methods=["POST"]),
        Route(f"{API}/generations/{{id}}/files", api.files, methods=["GET"]),
        Route(f"{API}/generations/{{id}}/files/{{name:path}}", api.download, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(resources.files(__package__) / "static")), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(Guard, token=config.token, allowed_hosts=config.allowed_hosts)],
        exception_handlers={HTTPException: _http_error, UserError: _user_error},
    )


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, exc.detail, exc.headers)


async def _user_error(request: Request, exc: Exception) -> Response:
    return error(400, str(exc))


class Guard:
    """Every request: security headers; a known Host; the token (except on open paths); no cross-origin writes."""

    def __init__(self, app: ASGIApp, token: str | None, allowed_hosts: list[str] | None = None):
        self.app = app
        self.token = token
        self.allowed_hosts = None if allowed_hosts is None else {h.strip("[]").lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, _with_headers(send))
            return
        await self.app(scope, receive, _with_headers(send))

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> Response | None:
        path = scope["path"]
        if self.allowed_hosts is not None and _host_name(headers) not in self.allowed_hosts:
            return error(400, "unexpected Host header: this server answers to its loopback address only")
        guarded = self.token is not None and path not in OPEN_PATHS and not path.startswith(STATIC_PREFIX)
        if guarded and not self._authorized(scope, headers):
            return error(401, "a token is needed: send 'Authorization: Bearer TOKEN' (or ?access_token=TOKEN)",
                         {"WWW-Authenticate": "Bearer"})  # fmt: skip
        if scope["method"] not in ("GET", "HEAD") and not _same_origin(headers):
            return error(403, "requests from another site's page are refused (no cross-origin writes)")
        return None

    def _authorized(self, scope: Scope, headers: dict[str, str]) -> bool:
        assert self.token is not None
        given = ""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        else:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (query.get("access_token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())


def _host_name(headers: dict[str, str]) -> str:
    """The Host header's name without port or IPv6 brackets ("[::1]:8765" -> "::1"); "" when unreadable."""
    try:
        return (urlsplit("//" + headers.get("host", "")).hostname or "").lower()
    except ValueError:
        return ""


def _same_origin(headers: dict[str, str]) -> bool:
    """No Origin (curl, scripts) or one naming this very host: a browser sends Origin on every cross-site POST."""
    origin = headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


def _with_headers(send: Send) -> Send:
    async def wrapped(message) -> None:
        if message["type"] == "http.response.start":
            extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return wrapped


class _Api:
    def __init__(self, store: JobStore, config: AppConfig):
        self.store = store
        self.config = config

    def _job(self, request: Request) -> Job:
        job = self.store.get(request.path_params["id"])
        if job is None:
            raise HTTPException(404, f"no generation {request.path_params['id']!r}")
        return job

    async def page(self, request: Request) -> Response:
        return FileResponse(str(resources.files(__package__) / "static" / "index.html"), media_type="text/html")

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "stopping" if self.store.stopping else "ok"})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(schema())

    async def model(self, request: Request) -> Response:
        return JSONResponse({**self.config.about, **self.store.counts()})

    async def create(self, request: Request) -> Response:
        body = await _read_body(request)
        fields, midi = await _fields(request, body)
        spec = parse_request(fields, form=midi is not None or _is_form(request), has_midi=midi is not None)
        try:
            job = await run_in_threadpool(self.store.submit, spec, midi)
        except QueueFull:
            return error(429, f"{self.store.max_queue} requests are already waiting; try again in a moment",
                         {"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip
        except ShuttingDown:
            return error(503, "the server is shutting down")
        return JSONResponse(_summary(job), status_code=202, headers={"Location": f"{API}/generations/{job.id}"})

    async def recent(self, request: Request) -> Response:
        raw = request.query_params.get("limit", str(RECENT_DEFAULT))
        if not raw.isdigit() or not 1 <= int(raw) <= RECENT_MAX:
            return error(400, f"limit must be an integer in 1..{RECENT_MAX}, not {raw[:20]!r}")
        return JSONResponse({"generations": [_summary(j) for j in self.store.recent(int(raw))]})

    async def status(self, request: Request) -> Response:
        return JSONResponse(_summary(self._job(request)))

    async def cancel(self, request: Request) -> Response:
        job = self._job(request)
        if not job.done:
            self.store.cancel(job)
        return JSONResponse(_summary(job), status_code=202)

    async def files(self, request: Request) -> Response:
        job = self._job(request)
        return JSONResponse({"files": _file_list(job)})

    async def download(self, request: Request) -> Response:
        job = self._job(request)
        found = find_file(job.folder, request.path_params["name"])
        if found is None:
            raise HTTPException(404, f"generation {job.id} has no file {request.path_params['name'][:80]!r}")
        path, entry = found
        attach = request.query_params.get("download") in ("1", "true")
        return FileResponse(path, media_type=entry.media_type, filename=f"{job.id}_{entry.name.replace('/', '_')}",
                            content_disposition_type="attachment" if attach else "inline")  # fmt: skip

    async def events(self, request: Request) -> Response:
        job = self._job(request)
        return StreamingResponse(_stream(job), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip


def _summary(job: Job) -> dict[str, Any]:
    data = job.to_dict()
    data["links"] = {
        "self": f"{API}/generations/{job.id}",
        "events": f"{API}/generations/{job.id}/events",
        "cancel": f"{API}/generations/{job.id}/cancel",
        "files": f"{API}/generations/{job.id}/files",
    }
    if job.done:
        data["files"] = _file_list(job)
    return data


def _file_list(job: Job) -> list[dict[str, Any]]:
    return [{**e.to_dict(), "url": f"{API}/generations/{job.id}/files/{e.name}"} for e in list_files(job.folder)]


async def _stream(job: Job) -> AsyncIterator[str]:
    """`progress` events while the job changes, then one `end` event with its final state."""
    seen, quiet_since = -1, time.monotonic()
    while True:
        done = job.done  # read before the snapshot: the last progress sent is never older than the end
        if job.version != seen:
            seen = job.version
            quiet_since = time.monotonic()
            yield _event("progress", _summary(job) if done else job.to_dict())
        if done:
            yield _event("end", _summary(job))
            return
        if time.monotonic() - quiet_since > STREAM_HEARTBEAT_S:
            quiet_since = time.monotonic()
            yield ": waiting\n\n"
        await asyncio.sleep(STREAM_POLL_S)


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind in ("multipart/form-data", "application/x-www-form-urlencoded")


async def _read_body(request: Request) -> bytes:
    """The whole body, refused (413) as soon as it passes MAX_BODY_BYTES, whatever Content-Length claims."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"the request body is {declared} bytes; the server takes at most {MAX_BODY_BYTES}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, f"the request body is over {MAX_BODY_BYTES} bytes, the most the server takes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _fields(request: Request, body: bytes) -> tuple[dict[str, Any], bytes | None]:
    """(fields, MIDI upload or None) from a JSON object or a form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise HTTPException(400, f"the body is not valid JSON ({str(exc)[:80]})") from None
        if not isinstance(data, dict):
            raise HTTPException(400, 'the body must be a JSON object of fields, e.g. {"prompt": "..."}')
        return data, None
    if not _is_form(request):
        raise HTTPException(415, "send application/json, or multipart/form-data (with a MIDI file in 'midi')")

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=len(FIELDS) + 1,
                                                     max_part_size=MAX_BODY_BYTES)  # fmt: skip
    fields: dict[str, Any] = {}
    midi = None
    for name, value in form.multi_items():
        if name in fields or (name == MIDI_FIELD and midi is not None):
            raise HTTPException(400, f"the field {name!r} is given twice")
        if name == MIDI_FIELD and isinstance(value, UploadFile):
            midi = await value.read()
            if not midi:
                midi = None  # an empty file input sends an empty part: no continuation
        else:
            fields[name] = value
    await form.close()
    return fields, midi
