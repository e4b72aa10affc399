"""Shared settings of the fuzz harnesses: the example budget comes from MIDILLM_FUZZ_EXAMPLES.

The normal suite runs each harness with a small budget; `make fuzz` sets a large one.
Each harness asserts one thing: the target returns its result or raises UserError,
and never anything else (an exception of another type is a crash that reaches the user).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from hypothesis import HealthCheck, settings

EXAMPLES_ENV = "MIDILLM_FUZZ_EXAMPLES"
DEFAULT_EXAMPLES = 200


def examples(scale: float = 1.0) -> int:
    """The example budget for one harness; `scale` shrinks it for targets that cost more per run."""
    budget = int(os.environ.get(EXAMPLES_ENV) or DEFAULT_EXAMPLES)
    return max(10, int(budget * scale))


def fuzz_settings(scale: float = 1.0) -> settings:
    return settings(
        max_examples=examples(scale),
        deadline=None,
        database=None,  # reproducible from the seed hypothesis prints; no .hypothesis/ writes in the suite
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )


class Hang(Exception):
    """Raised by `time_limit` when a target runs past its budget (a parser stuck in a loop)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail the example instead of hanging the suite (SIGALRM: main thread, POSIX)."""

    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
