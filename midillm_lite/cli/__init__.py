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
from ..errors import EXIT_INTERRUPTED, EXIT_IO_ERROR, Opt, UserError

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
_FLAGS = {"n": "--n-outputs", "from_seconds": "--from", "to_seconds": "--to", "continuation": "--continue"}


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
        render_cmds,  # noqa: F401
        serve_cmds,  # noqa: F401
    )


def _report_print_failure() -> None:
    with contextlib.suppress(Exception):
        typer.echo(f"error: could not print the results to stdout ({_print_failures[0]}); the files were written",
                   err=True)  # fmt: skip
    sys.exit(EXIT_IO_ERROR)


def _is_usage_error(exc: Exception) -> bool:
    # typer vendors its own click, whose exception classes it does not export; its usage
    # errors are recognised by the interface they share (ClickException.show/exit_code).
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


def _show_usage_error(exc: Exception) -> None:
    """A usage error as one line, like every other error: what was wrong, then where help is."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command: its help is the answer, not an error
        exc.show()
        return
    message = " ".join(str(exc.format_message()).split())  # click's messages may wrap; ours are one line
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "midillm-lite"
    hint = f" (see `{command} --help`)"
    typer.echo(f"error: {message}{hint}", err=True)


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


class InterruptGate:
    """SIGINT/SIGTERM around one generation: the first stops sampling (KeyboardInterrupt, what exists is kept);
    any later one, or any after close(), is only recorded, so the writes that keep the work are never cut short.

    A second Ctrl-C (or a SIGTERM 30 ms after the first) used to abort the partial-output write: no files.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.open = True
        self.caught: list[int] = []
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.open:
            self.open = False
            raise KeyboardInterrupt
        self.caught.append(signum)

    def close(self) -> None:
        self.open = False

    def __enter__(self) -> InterruptGate:
        with contextlib.suppress(ValueError):  # not the main thread: signals stay as they are
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


_print_failures: list[str] = []


def is_terminal(stream) -> bool:
    """isatty() that survives a closed stream (`gen ... >&-` makes sys.stdout None)."""
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # a closed file object
        return False


def echo_or_note(text: str, *, err: bool = False) -> None:
    """Print a result line; if stdout is closed or full, remember it and go on (files matter more than the print).

    main() reports the first such failure in one line and exits EXIT_IO_ERROR (74) once the command is done.
    """
    stream = sys.stderr if err else sys.stdout
    if stream is None:
        _print_failures.append("it is closed")
        return
    try:
        typer.echo(text, err=err)
    except BrokenPipeError:
        raise  # the reader left (`| head`): handled in main, silently
    except (OSError, ValueError) as exc:  # ENOSPC, EIO; ValueError: a closed file object
        _print_failures.append(getattr(exc, "strerror", None) or str(exc))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every failure is one line on stderr and a non-zero exit."""
    try:
        # Inside the try: a Ctrl-C while the verbs import is an interruption, not a traceback.
        _register()
        command = typer.main.get_command(app)
        # The command is invoked directly, not through command.main(): typer's main turns a KeyboardInterrupt
        # into a silent exit 130 (no "interrupted" line) and a broken stdout into exit 1; here every failure
        # reaches the handlers below.
        args = list(sys.argv[1:] if argv is None else argv)
        with _terminate_as_interrupt(), command.make_context("midillm-lite", args) as ctx:
            result = command.invoke(ctx)
        if _print_failures:
            _report_print_failure()
        if isinstance(result, int) and result:
            sys.exit(result)
    except UserError as exc:
        typer.echo(f"error: {exc.render(flag)}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        if _print_failures:
            _report_print_failure()
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # `midillm-lite ... | head`: the reader left; nothing to report.
        sys.stderr.close()
        sys.exit(0)
    except Exception as exc:
        if _is_usage_error(exc):
            _show_usage_error(exc)
            sys.exit(exc.exit_code)
        if os.environ.get("MIDILLM_DEBUG"):
            raise
        typer.echo(f"internal error: {type(exc).__name__}: {exc} (set MIDILLM_DEBUG=1 for the traceback)", err=True)
        sys.exit(EXIT_INTERNAL)
