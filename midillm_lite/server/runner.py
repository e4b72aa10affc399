"""Which scheduler runs the server's generations: chosen in `make_runner` only, so swapping it is a one-line change.

A runner has `generate(prompt, *, cancel=None, **kwargs) -> GenerationResult` (Generator.generate's keywords,
blocking, thread-safe) and `close()`. The continuous-batching `BatchScheduler` (midillm_lite.batching, where it
exists) lets concurrent callers share decode steps; until it is merged the server uses `SerialRunner`, which
runs one generation at a time.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..generate import GenerationResult, Generator


class Runner(Protocol):
    def generate(self, prompt: str, *, cancel: threading.Event | None = None, **kwargs: Any) -> GenerationResult: ...

    def close(self) -> None: ...


class SerialRunner:
    """One generation at a time on one Generator (llama.cpp contexts are not shared between threads)."""

    def __init__(self, generator: Generator, *, slots: int = 1):
        self.generator = generator
        self.slots = slots  # unused: one generation (of any n) holds the model at a time
        self._lock = threading.Lock()

    def generate(self, prompt: str, *, cancel: threading.Event | None = None, **kwargs: Any) -> GenerationResult:
        with self._lock:
            return self.generator.generate(prompt, cancel=cancel, **kwargs)

    def close(self) -> None:
        pass  # the Generator belongs to whoever made it


def make_runner(generator: Generator, *, slots: int) -> tuple[Runner, int]:
    """The scheduler the server uses, and how many requests to hand it at once (worker threads).

    With BatchScheduler this becomes `return BatchScheduler(generator, slots=slots), slots`: each worker blocks in
    its generate() while the scheduler decodes every worker's sequences together. SerialRunner gets one worker, so
    waiting requests stay in the server's queue, where a cancel removes them before they start.
    """
    return SerialRunner(generator, slots=slots), 1
