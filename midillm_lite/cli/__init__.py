"""The `midillm-lite` command: the typer app, its error boundary, and the registration of each verb's module."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator

import typer

from .. import __version__
from ..errors import EXIT_INTERRUPTED, Opt, UserError

app = typer.Typer(
    name="midillm-lite",
    help="Offline, quantized MIDI-LLM: text to MIDI on llama.cpp (CPU, Metal, CUDA).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug, not the user's doing


# Library keywords whose flag is not simply `--` + the name with dashes.
_FLAGS = {"n": "--n-outputs", "from_seconds": "--from", "continuation": "--continue"}


def flag(option: Opt) -> str:
    """How the CLI spells a library keyword named in an error: `--max-tokens`, `--device cpu`, `--force`."""
    name = _FLAGS.get(option.name, "--" + option.name.replace("_", "-"))
    return name if option.value is None or option.value is True else f"{name} {option.value}"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"midillm-lite {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(message)s")


def _register() -> None:
    # Each verb lives in its own module and adds itself to `app` on import.
    from . import (
        codec_cmds,  # noqa: F401
        convert_cmds,  # noqa: F401
        gen_cmds,  # noqa: F401
        media_cmds,  # noqa: F401
        models_cmds,  # noqa: F401
    )


def _is_usage_error(exc: Exception) -> bool:
    # typer vendors its own click, whose exception classes it does not export; its usage
    # errors are recognised by the interface they share (ClickException.show/exit_code).
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM gets the Ctrl-C treatment in every command, so cleanups (temporary .part files) run.

    The default action would end the process on the spot and leave `convert`'s partial output behind.
    """

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every failure is one line on stderr and a non-zero exit."""
    try:
        # Inside the try: a Ctrl-C while the verbs import is an interruption, not a traceback.
        _register()
        command = typer.main.get_command(app)
        # Without standalone mode click returns typer.Exit's code instead of exiting.
        with _terminate_as_interrupt():
            result = command.main(args=argv, prog_name="midillm-lite", standalone_mode=False)
        if isinstance(result, int) and result:
            sys.exit(result)
    except UserError as exc:
        typer.echo(f"error: {exc.render(flag)}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # `midillm-lite ... | head`: the reader left; nothing to report.
        sys.stderr.close()
        sys.exit(0)
    except Exception as exc:
        if _is_usage_error(exc):
            exc.show()
            sys.exit(exc.exit_code)
        if os.environ.get("MIDILLM_DEBUG"):
            raise
        typer.echo(f"internal error: {type(exc).__name__}: {exc} (set MIDILLM_DEBUG=1 for the traceback)", err=True)
        sys.exit(EXIT_INTERNAL)
