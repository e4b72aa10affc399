"""Which scheduler runs the server's generations: chosen in `make_runner` only, so swapping it is a one-line change.

A runner has `generate(prompt, *, cancel=None, **kwargs) -> GenerationResult` (Generator.generate's keywords,
blocking, thread-safe) and `close()`. The server uses the continuous-batching `BatchScheduler`
(midillm_lite.batching): concurrent callers share decode steps. `SerialRunner` runs one generation at a time.
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

    Each of `slots` workers blocks in the BatchScheduler's generate() while it decodes every worker's sequences
    together; a request waits in the server's queue (where a cancel removes it before it starts) until a worker
    is free, and in the scheduler's until its n sequences have slots.
    """
    from ..batching import BatchScheduler

    return BatchScheduler(generator, slots=slots, max_queue=slots), slots
