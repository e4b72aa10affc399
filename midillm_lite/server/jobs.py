"""The server's generations: each a job with a folder under the output root, a queue, and the threads that run them.

A job's folder is made when the request is accepted (its name is the job's id) and holds `job.json`, the
server's record of the request and its state, beside what `save_generation` writes, the same layout as `gen`.
So a restarted server lists the work of the last one, and a folder `gen` wrote in the same root is listed too.
Jobs run on worker threads that call the runner (see runner.py); a cancel, or a shutdown, sets the job's
event and the generation stops at its next step, keeping what it made.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..amt.anticipation import Anticipation
from ..amt.continuation import Continuation
from ..errors import UserError
from ..fsutil import atomic_write_bytes, atomic_write_text
from ..outputs import STATS_NAME, new_output_dir, save_generation
from .files import INPUT_NAME
from .request import GenerationRequest, prepare_midi_mode
from .runner import Runner

if TYPE_CHECKING:
    from ..audio import AudioSettings

log = logging.getLogger(__name__)

JOB_NAME = "job.json"
QUEUED, RUNNING = "queued", "running"
DONE, CANCELLED, INTERRUPTED, FAILED = "done", "cancelled", "interrupted", "failed"
FINAL = (DONE, CANCELLED, INTERRUPTED, FAILED)
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,159}")  # what new_output_dir makes (and gen's folder names)


class QueueFull(Exception):
    """More requests wait than the server takes; the client should come back later."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new work."""


@dataclass
class Job:
    id: str
    folder: Path
    prompt: str
    request: dict[str, Any]
    created: float
    status: str = QUEUED
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    progress: list[dict[str, Any]] = field(default_factory=list)
    tokens_per_s: float = 0.0
    stats: dict[str, Any] | None = None
    version: int = 0  # bumped on every change, so a stream sends only news
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    spec: GenerationRequest | None = field(default=None, repr=False)  # None for jobs read back from disk
    continuation: Continuation | None = field(default=None, repr=False)
    anticipation: Anticipation | None = field(default=None, repr=False)  # mode infill or accompany

    @property
    def done(self) -> bool:
        return self.status in FINAL

    def on_step(self, outputs, timings) -> None:
        """Generator's progress callback (a worker thread): the numbers a status read or a stream shows."""
        self.status = RUNNING
        self.progress = [
            {"tokens": p.tokens, "notes": p.notes, "seconds": round(p.seconds, 2), "done": p.done} for p in outputs
        ]
        self.tokens_per_s = round(timings.generated / timings.steps_s, 1) if timings.steps_s else 0.0
        self.version += 1

    def to_dict(self) -> dict[str, Any]:
        outputs = []
        for entry in (self.stats or {}).get("outputs", []):
            shown = {k: v for k, v in entry.items() if k not in ("file", "png")}  # server paths stay private
            shown["usable"] = not (entry.get("failed") or entry.get("rejected"))
            outputs.append(shown)
        return {
            "id": self.id,
            "prompt": self.prompt,
            "status": self.status,
            "partial": any(o.get("partial") for o in outputs),
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
            "request": self.request,
            "progress": {"outputs": self.progress, "tokens_per_s": self.tokens_per_s},
            "outputs": outputs,
            "warnings": self.warnings(),
            "seed": (self.stats or {}).get("sampling", {}).get("seed"),
        }

    def warnings(self) -> list[str]:
        """What gen prints as warnings (e.g. an accompaniment's "go on from 95 s"); a folder read back from disk may
        hold anything."""
        said = (self.stats or {}).get("warnings")
        return [w for w in said if isinstance(w, str)] if isinstance(said, list) else []

    def record(self) -> None:
        """job.json: what a restarted server knows of this job."""
        derived = ("progress", "outputs", "partial", "seed", "warnings")  # read again from generation_stats.json
        data = {k: v for k, v in self.to_dict().items() if k not in derived}
        atomic_write_text(self.folder / JOB_NAME, json.dumps(data, indent=2) + "\n")


class JobStore:
    """Accepts requests into a bounded queue, runs them on `workers` threads through `runner`, remembers them all."""

    def __init__(self, root: Path, runner: Runner, *, workers: int, max_queue: int, audio: AudioSettings | None = None):
        self.root = root
        self.runner = runner
        self.audio = audio
        self.max_queue = max_queue
        self.stopping = False
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: list[Job] = []
        self._load_existing()
        self._threads = [threading.Thread(target=self._work, name=f"midillm-serve-{i}", daemon=True)
                         for i in range(workers)]  # fmt: skip
        for thread in self._threads:
            thread.start()

    # --- accepting -------------------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, midi: bytes | None = None) -> Job:
        """A new job for `request` (with the MIDI file to continue, if any), queued; QueueFull or ShuttingDown."""
        with self._lock:
            self._check_room()
        folder = new_output_dir(request.prompt, root=self.root)
        job = Job(folder.name, folder, request.prompt, request.to_dict(), time.time(), spec=request)
        try:
            if midi is not None:
                path = folder / INPUT_NAME
                atomic_write_bytes(path, midi)
                source = prepare_midi_mode(request, path)
                job.continuation, job.anticipation = source.get("continuation"), source.get("anticipation")
            job.record()
            with self._lock:
                self._check_room()  # checked again: others may have come in meanwhile
                self._jobs[job.id] = job
                self._queue.append(job)
                self._wake.notify()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # refused: nothing of it stays
            raise
        log.info("accepted %s", job.id)
        return job

    def _check_room(self) -> None:
        if self.stopping:
            raise ShuttingDown
        if len(self._queue) >= self.max_queue:
            raise QueueFull

    def cancel(self, job: Job) -> None:
        job.cancel.set()
        with self._lock:
            if job in self._queue:  # not started: it ends here, with no outputs
                self._queue.remove(job)
                self._finish(job, CANCELLED)

    # --- reading ---------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        if not JOB_ID.fullmatch(job_id):
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def recent(self, limit: int) -> list[Job]:
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: (j.created, j.id), reverse=True)
        return jobs[:limit]

    def counts(self) -> dict[str, int]:
        with self._lock:
            running = sum(1 for j in self._jobs.values() if j.status == RUNNING)
            return {"queued": len(self._queue), "running": running}

    # --- running ---------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self.stopping:
                    self._wake.wait()
                if not self._queue:
                    return
                job = self._queue.pop(0)
                job.started = time.time()
            self._run(job)

    def _run(self, job: Job) -> None:
        spec = job.spec
        assert spec is not None  # only jobs submitted to this server are queued
        status, error = DONE, None
        if job.cancel.is_set():  # cancelled between leaving the queue and starting
            with self._lock:
                self._finish(job, INTERRUPTED if self.stopping else CANCELLED)
            return
        try:
            controls = spec.controls().for_prompt(spec.prompt)
            result = self.runner.generate(
                controls.model_prompt, cancel=job.cancel, on_step=job.on_step, continuation=job.continuation,
                anticipation=job.anticipation, instruments=controls.instruments, grid=controls.grid,
                **spec.settings(),
            )  # fmt: skip
            # A cancel or shutdown after sampling skips the audio not yet rendered (nothing is left half-written).
            saved = save_generation(job.folder, result, spec.prompt, controls=controls.to_dict(), audio=self.audio,
                                    stop=job.cancel.is_set)  # fmt: skip
            job.stats = saved.stats
            if saved.errors:
                status, error = FAILED, str(saved.errors[0])
            elif result.interrupted:
                status = INTERRUPTED if self.stopping else CANCELLED
        except UserError as exc:
            status, error = FAILED, str(exc)
        except Exception as exc:  # a bug: the job says so, the server goes on
            log.exception("generation %s failed", job.id)
            status, error = FAILED, f"internal error: {type(exc).__name__}: {exc}"
        with self._lock:
            self._finish(job, status, error)

    def _finish(self, job: Job, status: str, error: str | None = None) -> None:
        job.status, job.error, job.finished = status, error, time.time()
        job.version += 1
        try:
            job.record()
        except UserError as exc:
            log.warning("could not record %s: %s", job.id, exc)

    # --- stopping --------------------------------------------------------------------------------------------
    def begin_shutdown(self) -> None:
        """Take no more work; running jobs stop at their next step and write what they made; queued ones end."""
        with self._lock:
            self.stopping = True
            for job in self._queue:
                job.cancel.set()
                self._finish(job, INTERRUPTED)
            self._queue.clear()
            for job in self._jobs.values():
                job.cancel.set()
            self._wake.notify_all()

    def close(self) -> None:
        """Wait for the workers (their outputs written), then close the runner."""
        self.begin_shutdown()
        for thread in self._threads:
            thread.join()
        self.runner.close()

    # --- what earlier servers (and gen) left -----------------------------------------------------------------
    def _load_existing(self) -> None:
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if folder.is_dir() and not folder.is_symlink() and JOB_ID.fullmatch(folder.name):
                job = _read_job(folder)
                if job is not None:
                    self._jobs[job.id] = job


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_job(folder: Path) -> Job | None:
    """A finished job from its folder: job.json and/or generation_stats.json; None if it holds neither."""
    record, stats = _read_json(folder / JOB_NAME), _read_json(folder / STATS_NAME)
    if record is None and stats is None:
        return None
    record = record or {}
    status = record.get("status")
    if status not in FINAL:  # a server that died (or a gen run): what the files say
        status = INTERRUPTED if stats is None or stats.get("interrupted") else DONE
    prompt = record.get("prompt") or (stats or {}).get("prompt") or ""
    created = record.get("created")
    if not isinstance(created, int | float):
        created = folder.stat().st_mtime
    request = record.get("request") if isinstance(record.get("request"), dict) else {}
    job = Job(folder.name, folder, str(prompt), request, float(created), status=status, stats=stats,
              error=record.get("error"), started=record.get("started"), finished=record.get("finished"))  # fmt: skip
    job.cancel.set()
    return job
