"""CLI verb `serve`: load a model once and answer HTTP requests (the /v1 API and the web page) until stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..audio.process import DEFAULT_LOUDNESS
from ..limits import MAX_SLOTS, SERVE_MAX_QUEUE
from ..outputs import DEFAULT_ROOT, check_output_root
from ..server.access import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, is_loopback, resolve_token
from . import app, echo_or_note
from .gen_cmds import AUTO_DEVICE, Device, ThreadsOption, model_line
from .params import Bounds, parser
from .render_cmds import (
    DEFAULT_AUDIO,
    AudioOption,
    LoudnessOption,
    NoAudioOption,
    SoundfontOption,
    audio_or_note,
    audio_settings,
)

PORT = Bounds(0, 65535, integer=True, note="0: any free port")
SLOTS = Bounds(1, MAX_SLOTS, integer=True)
QUEUE = Bounds(1, 10_000, integer=True)


@app.command("serve")
def serve_command(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="GGUF file, registry name, or hub repo id or checkpoint folder.",
            show_default="best model found locally",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; any but loopback needs a token (or --no-auth).")
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(parser=parser(PORT), help=f"TCP port ({PORT.describe()}).")] = DEFAULT_PORT,
    slots: Annotated[
        int,
        typer.Option(parser=parser(SLOTS), help=f"Sequences decoded together, across requests ({SLOTS.describe()})."),
    ] = 4,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder that holds one folder per generation (as gen's).")
    ] = DEFAULT_ROOT,
    token: Annotated[
        str | None,
        typer.Option(
            help=f"Bearer token every /v1 route but /v1/health requires. Safer: set {TOKEN_ENV}.",
            show_default=f"${TOKEN_ENV}, or none on loopback",
        ),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve a network address without a token: anyone reaching it may use it.")
    ] = False,
    queue: Annotated[
        int, typer.Option(parser=parser(QUEUE), help=f"Requests that may wait; more get 429 ({QUEUE.describe()}).")
    ] = SERVE_MAX_QUEUE,
    device: Annotated[Device, typer.Option(help="auto: GPU if llama.cpp was built with one.")] = AUTO_DEVICE,
    threads: ThreadsOption = None,
    audio: AudioOption = DEFAULT_AUDIO,
    no_audio: NoAudioOption = False,
    soundfont: SoundfontOption = None,
    loudness: LoudnessOption = DEFAULT_LOUDNESS,
) -> None:
    """Serve text-to-MIDI over HTTP: a web page at / and a JSON API under /v1 (OpenAPI: /v1/openapi.json).

    The model loads once; each generation gets a folder under --out, as gen writes one (a restart lists them).
    Ctrl-C or SIGTERM: no new requests; running generations keep what they made (exit 130 / 0).

    A curl session (add -H "Authorization: Bearer $MIDILLM_TOKEN" when the server has a token):

      curl -s localhost:8765/v1/generations -H 'Content-Type: application/json' \\
        -d '{"prompt": "A gentle piece for solo piano.", "n": 2, "seconds": 30}'

      curl -sN localhost:8765/v1/generations/ID/events          (progress as Server-Sent Events)

      curl -s localhost:8765/v1/generations/ID/files            (names and URLs)

      curl -sO localhost:8765/v1/generations/ID/files/gen_1.mid

      curl -s -X POST localhost:8765/v1/generations/ID/cancel

      curl -s localhost:8765/v1/generations -F prompt='Go on, for strings' -F midi=@piece.mid -F from_seconds=20
    """
    from ..generate import Generator
    from ..server.serve import ServeConfig, serve

    required = resolve_token(host, token, no_auth=no_auth)  # before the model loads: a refusal costs nothing
    check_output_root(out)
    sound = audio_or_note(audio_settings(audio, no_audio, soundfont, loudness))
    config = ServeConfig(host=host, port=port, slots=slots, out=out, token=required, max_queue=queue, audio=sound)
    with Generator(model, device=device.value, threads=threads) as gen:
        echo_or_note(model_line(gen.choice, f"{gen.info.quant}, {gen.model.n_threads} threads"), err=True)

        def ready(url: str) -> None:
            echo_or_note(f"serving on {url} (the page: {url}/, the API: {url}/v1); outputs in {out}/", err=True)
            echo_or_note(_auth_line(host, required, no_auth), err=True)
            echo_or_note("Ctrl-C or SIGTERM stops it; running generations keep what they made", err=True)

        status = serve(gen, config, on_ready=ready)
    echo_or_note(f"stopped; the generations are in {out}/", err=True)
    if status:
        raise typer.Exit(status)


def _auth_line(host: str, token: str | None, no_auth: bool) -> str:
    if token is not None:
        return (
            "auth: a bearer token is required on every /v1 route but /v1/health; in a browser open "
            "the page with ?access_token=TOKEN (CORS: none)"
        )
    if no_auth and not is_loopback(host):
        return f"auth: NONE (--no-auth): anyone who can reach {host} can generate and read every output"
    return "auth: none needed: only this machine can connect (loopback); no CORS"
