"""Running the server: who may connect (address and token), binding, uvicorn, and a shutdown that keeps the work.

SIGINT or SIGTERM: the listening socket closes, new requests get 503, running generations stop at their next
step and write their partial outputs (the worker threads are joined before the process ends), and `serve`
returns the exit status: 0 after SIGTERM, 130 after SIGINT (as gen). Later signals change nothing; a client that
stops reading its stream is cut off after GRACE_S.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from .. import __version__
from ..errors import EXIT_INTERRUPTED, Opt, UserError
from ..limits import (
    MAX_BODY_BYTES,
    MAX_MIDI_BYTES,
    MAX_PROMPT_CHARS,
    SERVE_MAX_OUTPUTS,
    SERVE_MAX_QUEUE,
    SERVE_MAX_TOKENS,
)
from ..outputs import DEFAULT_ROOT
from .access import DEFAULT_HOST, DEFAULT_PORT, LOOPBACK_NAMES, is_loopback
from .app import AppConfig, create_app
from .jobs import JobStore
from .runner import make_runner

if TYPE_CHECKING:
    from ..audio import AudioSettings

log = logging.getLogger(__name__)

GRACE_S = 30  # how long a shutdown waits for open connections once the generations have stopped
MAX_CONNECTIONS = 64  # past this uvicorn answers 503: a Pi's memory, not its patience, is the bound
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class ServeConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    slots: int = 4
    out: Path = DEFAULT_ROOT
    token: str | None = None
    max_queue: int = SERVE_MAX_QUEUE
    audio: AudioSettings | None = None  # each generation's audio, rendered as gen renders it; None: none


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is announced (a busy port is one clear error)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on {host}: {exc.strerror}") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another ", Opt("port")) from exc
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{f'[{shown}]' if ':' in shown and not shown.startswith('[') else shown}:{port}"


class _Server(uvicorn.Server):
    """uvicorn, with the first signal also stopping the generations, and the signals kept (not re-raised)."""

    def __init__(self, config: uvicorn.Config, store: JobStore):
        super().__init__(config)
        self.store = store
        self.first_signal: int | None = None

    def handle_exit(self, sig: int, frame) -> None:
        if self.first_signal is None:
            self.first_signal = sig
            # On a thread: this handler may run while the main thread holds the store's lock (a status read).
            threading.Thread(target=self.store.begin_shutdown, name="midillm-serve-stop").start()
            self.should_exit = True
        # Later signals change nothing, as with gen's InterruptGate: forcing uvicorn out would cancel the open
        # streams mid-write (a traceback per stream), and the streams end by themselves once the jobs have stopped.

    def capture_signals(self):
        return _Signals(self.handle_exit)


class _Signals:
    def __init__(self, handler: Callable[[int, object], None]):
        self.handler = handler
        self.previous: dict[int, object] = {}

    def __enter__(self) -> None:
        try:
            self.previous = {sig: signal.signal(sig, self.handler) for sig in SIGNALS}
        except ValueError:  # not the main thread (tests that embed the server): signals stay as they are
            self.previous = {}

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def about(generator, config: ServeConfig) -> dict:
    info = generator.info
    return {
        "midillm_lite_version": __version__,
        "model": {"name": generator.choice.name, "quant": info.quant, "demo": generator.choice.bundled},
        "defaults": {"temperature": info.temperature, "top_p": info.top_p, "max_tokens": info.max_new_tokens},
        "limits": {"n": SERVE_MAX_OUTPUTS, "max_tokens": SERVE_MAX_TOKENS, "prompt_chars": MAX_PROMPT_CHARS,
                   "midi_bytes": MAX_MIDI_BYTES, "body_bytes": MAX_BODY_BYTES, "queue": config.max_queue},
        "slots": config.slots,
    }  # fmt: skip


def serve(generator, config: ServeConfig, *, on_ready: Callable[[str], None] | None = None) -> int:
    """Serve `generator` until a signal; the exit status (0 after SIGTERM, 130 after SIGINT)."""
    sock = bind(config.host, config.port)
    runner, workers = make_runner(generator, slots=config.slots)
    store = JobStore(config.out, runner, workers=workers, max_queue=config.max_queue, audio=config.audio)
    allowed = LOOPBACK_NAMES if is_loopback(config.host) else None
    app = create_app(store, AppConfig(token=config.token, allowed_hosts=allowed, about=about(generator, config)))
    settings = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False,
                              limit_concurrency=MAX_CONNECTIONS, timeout_graceful_shutdown=GRACE_S)  # fmt: skip
    server = _Server(settings, store)
    try:
        if on_ready is not None:
            on_ready(url_of(sock, config.host))
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        # Every running generation writes its outputs before the process goes; a further signal meanwhile is
        # ignored (the handlers uvicorn restored would raise KeyboardInterrupt into the join and lose them).
        with _Signals(lambda sig, frame: None):
            store.close()
        sock.close()
    return EXIT_INTERRUPTED if server.first_signal == signal.SIGINT else 0
