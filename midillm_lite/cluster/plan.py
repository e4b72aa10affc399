"""A prompts-file run in one output folder, resumable and exactly-once: its manifest, each line's folder, the summary.

OUT/cluster_run.json (the manifest: prompts file hash, run seed, settings) is written
when a run starts; a run given the same OUT again must have the same file and
settings, and takes the seed from it. Each line's outputs are written into a hidden
staging folder, a completion marker goes in last, and the folder is renamed to its
final name (`00007-a-slow-waltz`): a final folder is complete, a staging folder is a
partial one, removed and redone on the next run. So a prompt never gets two folders,
and a completed one is never written again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Opt, UserError
from ..fsutil import atomic_write_text
from ..outputs import save_generation
from ..promptfile import PromptFile, PromptLine, line_folder_name, new_run_seed, prompt_seed

if TYPE_CHECKING:
    from ..audio import AudioSettings
    from ..generate import GenerationResult

log = logging.getLogger(__name__)

MANIFEST_NAME = "cluster_run.json"
SUMMARY_NAME = "cluster_summary.json"
COMPLETE_NAME = ".midillm-complete"  # written last inside a prompt's folder
STAGING_PREFIX = ".partial-"  # a prompt's folder while it is being written


@dataclass(frozen=True)
class Job:
    """One prompt line: the unit of work a worker takes."""

    line: PromptLine
    seed: int
    folder: Path  # its final name

    @property
    def staging(self) -> Path:
        return self.folder.parent / (STAGING_PREFIX + self.folder.name)


@dataclass
class RunPlan:
    out: Path
    run_seed: int
    todo: list[Job]
    done: list[Job]  # complete before this run started: skipped
    redone: list[int] = field(default_factory=list)  # lines whose partial folder was removed, to be redone


def plan_run(out: Path, prompts: PromptFile, *, seed: int | None, settings: dict[str, Any], force: bool) -> RunPlan:
    """Check `out` against its manifest (or start one), and sort the prompts into done and to do.

    `settings` is everything that shapes the music besides the seed (JSON-able); a resumed run must give the same.
    """
    out = Path(out)
    manifest = _read_manifest(out)
    if manifest is None:
        _check_fresh(out, force=force)
        run_seed = new_run_seed() if seed is None else seed
        manifest = {"prompts_file": str(prompts.path), "prompts_sha256": prompts.sha256, "run_seed": run_seed,
                    "settings": _jsonable(settings)}  # fmt: skip
        atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    else:
        run_seed = _check_resume(out, manifest, prompts, seed=seed, settings=settings)
    plan = RunPlan(out, run_seed, todo=[], done=[])
    for line in prompts.lines:
        job = Job(line, prompt_seed(run_seed, line.number), out / line_folder_name(line))
        if is_complete(job.folder):
            plan.done.append(job)
            continue
        if _remove_partial(job):
            plan.redone.append(line.number)
        plan.todo.append(job)
    return plan


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_NAME).is_file()


def write_job(
    job: Job,
    result: GenerationResult,
    *,
    controls: dict[str, Any],
    png: bool,
    worker: str,
    audio: AudioSettings | None = None,
) -> dict:
    """Write a finished prompt's folder (staging, marker, rename); its stats. A write error is a UserError."""
    _remove_partial(job)
    try:
        job.staging.mkdir()
    except OSError as exc:
        raise UserError(f"cannot create {job.staging}: {exc.strerror or exc}") from exc
    saved = save_generation(job.staging, result, job.line.text, controls=controls, png=png, audio=audio)
    if saved.errors:
        raise saved.errors[0]
    marker = {"line": job.line.number, "seed": job.seed, "worker": worker}
    atomic_write_text(job.staging / COMPLETE_NAME, json.dumps(marker) + "\n")
    try:
        os.rename(job.staging, job.folder)  # atomic: the folder appears complete, or not at all
    except OSError as exc:
        raise UserError(f"cannot rename {job.staging} to {job.folder}: {exc.strerror or exc}") from exc
    return saved.stats


def _remove_partial(job: Job) -> bool:
    """Remove what a stopped run left of this prompt (its staging folder, or a final folder without a marker)."""
    removed = False
    for folder in (job.staging, job.folder):
        if folder.exists() and not is_complete(folder):
            log.info("removing %s, left incomplete by an earlier run; line %d is redone", folder, job.line.number)
            shutil.rmtree(folder)
            removed = True
    return removed


def _read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("run_seed"), int):
            raise ValueError("not a run manifest")
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({exc}); remove it to start this folder afresh") from exc
    return manifest


def _check_fresh(out: Path, *, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for the outputs")
    try:
        out.mkdir(parents=True, exist_ok=True)
        others = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror or exc}") from exc
    if others and not force:
        raise UserError(f"{out} holds other files and no {MANIFEST_NAME}; use ", Opt("force", True),
                        " to write into it or choose another folder")  # fmt: skip


def _check_resume(out: Path, manifest: dict, prompts: PromptFile, *, seed: int | None, settings: dict) -> int:
    """The run seed of the run `out` holds, if this one is the same run; a UserError naming the difference if not."""
    again = "give the same, or another folder"
    if manifest.get("prompts_sha256") != prompts.sha256:
        started = manifest.get("prompts_file")
        raise UserError(f"{out} holds a run of another prompts file (or {prompts.path} changed since); "
                        f"give the file it was started with ({started}), or another folder")  # fmt: skip
    if seed is not None and seed != manifest["run_seed"]:
        raise UserError(f"{out} holds a run with seed {manifest['run_seed']}; {again} (or leave ", Opt("seed"),
                        " out)")  # fmt: skip
    before, now = manifest.get("settings", {}), _jsonable(settings)
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            raise UserError(f"{out} holds a run with {key} {before.get(key)!r}, not {now.get(key)!r}; {again}")
    return manifest["run_seed"]


def _jsonable(settings: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(settings, default=str))


@dataclass
class WorkerTally:
    """What one worker did: for the run summary."""

    index: int
    node: str = ""
    pids: list[int] = field(default_factory=list)  # more than one: it died and Ray restarted it
    prompts: int = 0
    tokens: int = 0
    generation_s: float = 0.0  # its prompts' sampling time, as their stats measure it
    load_s: float = 0.0
    deaths: int = 0

    def to_dict(self) -> dict[str, Any]:
        rate = self.tokens / self.generation_s if self.generation_s else 0.0
        return {"worker": self.index, "node": self.node, "pids": self.pids, "prompts": self.prompts,
                "tokens": self.tokens, "generation_s": round(self.generation_s, 3), "tokens_per_s": round(rate, 2),
                "model_load_s": round(self.load_s, 3), "deaths": self.deaths}  # fmt: skip


@dataclass
class RunSummary:
    """OUT/cluster_summary.json: prompts done/failed, tokens, tokens/s per worker and in total, wall time."""

    prompts: int
    skipped: int  # complete before this run
    done: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # line -> why
    retried: int = 0  # prompts given to another worker after theirs died
    tokens: int = 0
    wall_s: float = 0.0
    startup_s: float = 0.0  # until every worker had loaded the model (Ray start or connect included)
    workers: dict[int, WorkerTally] = field(default_factory=dict)
    interrupted: bool = False
    run_seed: int = 0
    cluster: str = ""

    @property
    def complete(self) -> int:
        return self.skipped + self.done

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts, "complete": self.complete, "skipped_already_complete": self.skipped,
            "done_this_run": self.done, "failed": {str(k): v for k, v in sorted(self.failed.items())},
            "retried_after_worker_death": self.retried, "tokens": self.tokens, "wall_s": round(self.wall_s, 3),
            "startup_s": round(self.startup_s, 3),
            "tokens_per_s": round(self.tokens / self.wall_s, 2) if self.wall_s else 0.0,
            "workers": [w.to_dict() for _, w in sorted(self.workers.items())],
            "interrupted": self.interrupted, "run_seed": self.run_seed, "cluster": self.cluster,
        }  # fmt: skip

    def write(self, out: Path) -> Path:
        path = Path(out) / SUMMARY_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path
