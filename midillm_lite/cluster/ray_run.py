"""Running a prompts file on Ray: one actor per worker process loads the model once, the driver writes every folder.

Why actors rather than Ray Data's `map_batches` with a callable class: the driver must
know each prompt's fate on its own (write its folder the moment it is done, give it
to another worker when its worker dies, record a failure without stopping the
rest), and a worker must take several prompts at once for the batching scheduler;
actors give exactly that with Ray core alone, where Ray Data adds its streaming
executor and pyarrow/pandas to the install.

Why results come back to the driver instead of workers writing to a shared
filesystem: a few kilobytes per prompt (tokens, MIDI objects, stats) cost nothing to
ship, no shared filesystem is needed, OUT must be writable in one place only (checked
before anything starts), and only the driver decides that a prompt is complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from .plan import Job, RunPlan, RunSummary, WorkerTally, write_job

if TYPE_CHECKING:
    from ..audio import AudioSettings
    from ..batching import BatchScheduler
    from ..controls import ControlFlags
    from ..generate import GenerationResult, Generator

log = logging.getLogger(__name__)

INSTALL_HINT = "Ray is not installed: pip install 'midillm-lite[cluster]' (on every node of the cluster)"
CONNECT_TIMEOUT_S = 5.0  # a TCP connect to the head node: a typo in the address must fail in seconds
MAX_ATTEMPTS = 3  # a prompt whose worker died this many times is recorded as failed, not retried forever
MAX_RESTARTS = 2  # Ray restarts a dead worker (reloading the model) this many times, then it is dropped
DEFAULT_THREADS_PER_WORKER = 4  # llama.cpp's decode scales well to ~4 threads; past that, more workers pay more
START_TIMEOUT_S = 600  # workers load the model before this; longer means the cluster has no room for them
WAIT_S = 1.0  # how often the driver wakes to notice Ctrl-C while prompts are being generated
PROBE_PAUSE_S = 0.5  # between asks whether a dead worker is back


@dataclass(frozen=True)
class ClusterSpec:
    """`--cluster ray` (a local cluster on this machine) or `ray:ADDRESS` (connect to a running one)."""

    address: str | None

    @classmethod
    def parse(cls, text: str) -> ClusterSpec:
        kind, _, address = text.partition(":")
        if kind != "ray" or (_ and not address.strip()):
            raise UserError(f"unknown cluster {text!r}: give ray (a local cluster) or ray:ADDRESS (host:port)")
        return cls(address.strip() or None)

    def describe(self) -> str:
        return "a local Ray cluster" if self.address is None else f"the Ray cluster at {self.address}"


# --- the scheduler each worker generates with ------------------------------------------------------------------------


def make_scheduler(generator: Generator, slots: int) -> BatchScheduler:
    """The one place the scheduler is chosen: batching.BatchScheduler, with `slots` sequences decoded together."""
    from ..batching import BatchScheduler

    return BatchScheduler(generator, slots=slots)


def prompts_per_worker(slots: int, n: int) -> int:
    """Prompts a worker decodes together: as many as its slots hold at n outputs each (at least one)."""
    return max(1, slots // n)


# --- the worker ------------------------------------------------------------------------------------------------------


class PromptWorker:
    """A Ray actor: loads the model once, then generates prompts. Errors come back as data, never as exceptions,
    so the driver can say which worker and node they came from."""

    def __init__(self, index: int, model: str | None, load: dict[str, Any], slots: int):
        from ..generate import Generator

        self.index = index
        self.node = node_name()
        self.error: tuple | None = None
        self.scheduler = None
        started = time.perf_counter()
        try:
            self.scheduler = make_scheduler(Generator(model, **load), slots)
        except UserError as exc:
            self.error = exc.parts
        self.load_s = time.perf_counter() - started

    def hello(self) -> dict[str, Any]:
        return {"node": self.node, "pid": os.getpid(), "error": self.error, "load_s": self.load_s}

    def generate(self, prompt: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = {"node": self.node, "pid": os.getpid()}
        if self.scheduler is None:
            return {**reply, "error": self.error}
        try:
            reply["result"] = self.scheduler.generate(prompt, **kwargs)
        except UserError as exc:  # this prompt only (say, longer than the model's context): the rest go on
            reply["error"] = exc.parts
        return reply


def node_name() -> str:
    """The node as a person knows it: host name and IP address."""
    import ray

    return f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"


# --- connecting ------------------------------------------------------------------------------------------------------


def require_ray():
    try:
        import ray
    except ImportError as exc:
        raise UserError(INSTALL_HINT) from exc
    return ray


def check_reachable(address: str) -> None:
    """Refuse an address whose head node does not answer within CONNECT_TIMEOUT_S (ray.init would wait far longer)."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"cluster address {address!r} is not HOST:PORT (e.g. 10.0.0.1:6379, as `ray start` prints)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise UserError(f"cannot reach the Ray cluster at {address} ({why} within {CONNECT_TIMEOUT_S:g} s); "
                        "is Ray's head node running there, and is the address right?") from exc  # fmt: skip


@contextlib.contextmanager
def connected(spec: ClusterSpec, *, cpus: int | None) -> Iterator[Any]:
    """Ray, initialised for this run: a local cluster of `cpus` CPUs, or a connection to `spec.address`.

    A Ray already initialised in this process (a caller's own) is used as it is and left running.
    """
    ray = require_ray()
    if spec.address is not None:
        check_reachable(spec.address)
    if ray.is_initialized():
        yield ray
        return
    # Workers import midillm_lite from where the driver does: on one machine that is the same code.
    package_root = str(Path(__file__).resolve().parents[2])
    runtime_env = {"env_vars": {"PYTHONPATH": package_root}}
    try:
        ray.init(address=spec.address, num_cpus=cpus if spec.address is None else None, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR, runtime_env=runtime_env)  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"cannot connect to {spec.describe()}: {_first_line(exc)}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- the driver ------------------------------------------------------------------------------------------------------


@dataclass
class RunEvent:
    """What the driver tells its caller as the run goes (the CLI prints these)."""

    kind: str  # "ready" (a worker loaded the model), "done", "failed", "retry"
    worker: int
    node: str = ""
    pid: int = 0
    job: Job | None = None
    stats: dict[str, Any] | None = None
    message: str = ""


def worker_layout(cpus: int, spec: ClusterSpec, *, workers: int | None, threads: int | None) -> tuple[int, int]:
    """(workers, threads per worker): defaults fill `cpus`; on a running cluster a larger request is refused (its
    actors would wait for CPUs forever), on this machine it is the user's call (the local cluster is sized to it)."""
    threads = threads or min(DEFAULT_THREADS_PER_WORKER, max(cpus, 1))
    workers = workers or max(cpus // threads, 1)
    if spec.address is not None and workers * threads > cpus:
        raise UserError(f"{spec.describe()} has {cpus} CPUs; {workers} workers x {threads} threads need "
                        f"{workers * threads}: ask for fewer workers or threads per worker")  # fmt: skip
    return workers, threads


def run_on_ray(
    plan: RunPlan,
    summary: RunSummary,
    *,
    spec: ClusterSpec,
    model: str | None,
    load: dict[str, Any],
    settings: dict[str, Any],
    controls: ControlFlags,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    png: bool = True,
    audio: AudioSettings | None = None,
    slots: int | None = None,
    on_event: Callable[[RunEvent], None] = lambda event: None,
) -> RunSummary:
    """Generate every job of `plan` on Ray and write each folder as it comes back; fills and returns `summary`.

    `load` holds Generator's keywords (device, gpu_layers); `settings` Generator.generate's (seed excepted: each
    job has its own). A KeyboardInterrupt stops the run: the folders written stay, the rest is done next time.
    `slots`: sequences each worker's BatchScheduler decodes together; None: n, one prompt at a time, so every
    decode holds the same tokens however the run is split or resumed (llama.cpp rounds by batch size).
    """
    started = time.perf_counter()
    local = None
    if spec.address is None:
        local = worker_layout(os.cpu_count() or 1, spec, workers=workers, threads=threads_per_worker)
    with connected(spec, cpus=None if local is None else max(local[0] * local[1], os.cpu_count() or 1)) as ray:
        count, threads = local or worker_layout(int(ray.cluster_resources().get("CPU", 0)), spec, workers=workers,
                                                threads=threads_per_worker)  # fmt: skip
        summary.cluster = f"{spec.describe()}, {count} workers x {threads} threads"
        driver = _Driver(
            ray,
            plan,
            summary,
            controls=controls,
            settings=settings,
            png=png,
            audio=audio,
            on_event=on_event,
            slots=slots or settings.get("n", 1),
        )
        try:
            driver.start(count, model=model, load={**load, "threads": threads}, threads=threads)
            summary.startup_s = time.perf_counter() - started
            driver.run()
        except KeyboardInterrupt:
            summary.interrupted = True
            raise
        finally:
            driver.stop()
            summary.wall_s = time.perf_counter() - started
    return summary


class _Driver:
    """The dispatch loop: keeps each live worker fed with a few prompts, writes results, retries after deaths.

    A worker that dies (its process killed, its node lost) fails the prompts it held: they go back to the front of
    the queue, and a `hello` probe waits for Ray to restart it (reloading the model) before it gets more.
    """

    def __init__(self, ray, plan: RunPlan, summary: RunSummary, *, controls, settings, png, audio, on_event, slots):
        self.ray, self.plan, self.summary = ray, plan, summary
        self.controls, self.settings, self.on_event = controls, settings, on_event
        self.png, self.audio = png, audio  # the driver draws and renders each folder it writes
        self.pending: deque[Job] = deque(plan.todo)
        self.inflight: dict[Any, tuple[Job, int]] = {}  # object ref -> (job, worker)
        self.probes: dict[Any, int] = {}  # object ref of a hello -> the worker being restarted
        self.load: dict[int, int] = {}  # live worker -> prompts in flight
        self.attempts: dict[int, int] = {}  # line -> worker deaths it went through
        self.actors: dict[int, Any] = {}
        self.slots = slots  # each worker's scheduler slots, and the prompts it takes at once
        self.per_worker = prompts_per_worker(slots, settings.get("n", 1))

    def start(self, count: int, *, model: str | None, load: dict[str, Any], threads: int) -> None:
        from ray.exceptions import GetTimeoutError

        remote = self.ray.remote(PromptWorker).options(
            num_cpus=threads, max_restarts=MAX_RESTARTS, max_task_retries=0, max_concurrency=self.per_worker + 1
        )
        self.actors = {i: remote.remote(i, model, load, self.slots) for i in range(1, count + 1)}
        try:
            hellos = self.ray.get([actor.hello.remote() for actor in self.actors.values()], timeout=START_TIMEOUT_S)
        except GetTimeoutError as exc:
            raise UserError(f"the workers did not start within {START_TIMEOUT_S} s: does the cluster have {count} "
                            f"free slots of {threads} CPUs?") from exc  # fmt: skip
        for index, hello in zip(self.actors, hellos, strict=True):
            self._welcome(index, hello)

    def _welcome(self, index: int, hello: dict[str, Any]) -> None:
        if hello["error"]:
            raise UserError(f"worker {index} on {hello['node']}: ", *hello["error"])
        tally = self.summary.workers.setdefault(index, WorkerTally(index, hello["node"]))
        tally.pids.append(hello["pid"])
        tally.load_s += hello["load_s"]
        self.load[index] = 0
        self.on_event(RunEvent("ready", index, hello["node"], hello["pid"], message=f"{hello['load_s']:.1f}"))

    def run(self) -> None:
        self._feed()
        while self.inflight or (self.probes and self.pending):  # a restart nothing waits for is not awaited
            ready, _ = self.ray.wait([*self.inflight, *self.probes], num_returns=1, timeout=WAIT_S)
            for ref in ready:
                if ref in self.probes:
                    self._probed(ref, self.probes.pop(ref))
                else:
                    job, worker = self.inflight.pop(ref)
                    self._settle(ref, job, worker)
            self._feed()
        if self.pending:
            raise UserError(f"every worker died; {len(self.pending)} prompts were not generated (run again to retry)")

    def _feed(self) -> None:
        # One prompt beyond what a worker decodes at once waits at its door, so it never idles for a round trip.
        for worker in list(self.load):
            while self.pending and self.load[worker] < self.per_worker + 1:
                job = self.pending.popleft()
                prompt = self.controls.for_prompt(job.line.text)
                kwargs = {**self.settings, "seed": job.seed, "instruments": prompt.instruments, "grid": prompt.grid}
                self.inflight[self.actors[worker].generate.remote(prompt.model_prompt, kwargs)] = (job, worker)
                self.load[worker] += 1

    def _settle(self, ref, job: Job, worker: int) -> None:
        from ray.exceptions import RayActorError

        if worker in self.load:
            self.load[worker] -= 1
        try:
            reply = self.ray.get(ref)
        except RayActorError as exc:
            self._worker_died(job, worker, exc)
            return
        if reply.get("error"):
            message = UserError(*reply["error"]).render(lambda opt: opt.as_python())
            self.summary.failed[job.line.number] = message
            self.on_event(RunEvent("failed", worker, reply["node"], reply["pid"], job, message=message))
            return
        result: GenerationResult = reply["result"]
        controls = self.controls.for_prompt(job.line.text).to_dict()
        where = f"{worker} on {reply['node']}"
        stats = write_job(job, result, controls=controls, png=self.png, audio=self.audio, worker=where)
        tally = self.summary.workers[worker]
        tally.prompts += 1
        tally.tokens += result.timings.generated
        tally.generation_s += result.timings.steps_s
        self.summary.done += 1
        self.summary.tokens += result.timings.generated
        self.on_event(RunEvent("done", worker, reply["node"], reply["pid"], job, stats))

    def _worker_died(self, job: Job, worker: int, exc: Exception) -> None:
        tally = self.summary.workers[worker]
        tries = self.attempts[job.line.number] = self.attempts.get(job.line.number, 0) + 1
        if tries >= MAX_ATTEMPTS:
            message = f"its worker died {tries} times ({_first_line(exc)})"
            self.summary.failed[job.line.number] = message
            self.on_event(RunEvent("failed", worker, tally.node, job=job, message=message))
        else:
            self.summary.retried += 1
            self.pending.appendleft(job)
            self.on_event(RunEvent("retry", worker, tally.node, job=job, message=type(exc).__name__))
        if worker in self.load:  # the first of its prompts to report the death: wait for Ray to restart it
            del self.load[worker]
            tally.deaths += 1
            self.probes[self.actors[worker].hello.remote()] = worker

    def _probed(self, ref, worker: int) -> None:
        from ray.exceptions import ActorUnavailableError, RayActorError

        try:
            hello = self.ray.get(ref)
        except ActorUnavailableError:  # still restarting: ask again shortly
            time.sleep(PROBE_PAUSE_S)
            self.probes[self.actors[worker].hello.remote()] = worker
            return
        except RayActorError:
            log.warning("worker %d is gone for good (Ray restarts a worker %d times)", worker, MAX_RESTARTS)
            return
        if hello["error"]:  # restarted, but could not load the model again: the other workers go on
            log.warning("worker %d on %s: %s", worker, hello["node"], UserError(*hello["error"]))
            return
        self._welcome(worker, hello)

    def stop(self) -> None:
        for actor in self.actors.values():
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)
