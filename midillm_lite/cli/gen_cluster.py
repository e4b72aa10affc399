"""`gen --prompts-file FILE --cluster ray[:ADDRESS]`: gen's cluster mode (checks, progress lines, the run's end)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import typer

from ..cluster.plan import SUMMARY_NAME, RunSummary, plan_run
from ..cluster.ray_run import ClusterSpec, RunEvent, check_reachable, require_ray, run_on_ray
from ..controls import ControlFlags
from ..errors import EXIT_INTERRUPTED, UserError
from ..outputs import claim_output_dir
from ..promptfile import read_prompt_file
from . import echo_or_note
from .render_cmds import audio_or_note

FAILED_SHOWN = 3  # failed lines named in the closing error; the summary file lists them all


def gen_on_cluster(cluster: str, *, prompt: str | None, prompts_file: Path | None, interactive: bool, out: Path | None,
                   model: str | None, workers: int | None, threads_per_worker: int | None, threads: int | None,
                   load: dict[str, Any], settings: dict[str, Any], controls: ControlFlags, png: bool, audio,
                   quiet: bool, as_json: bool, force: bool, slots: int | None = None) -> None:  # fmt: skip
    """Check what a cluster run needs before anything starts, run it, and end with one line (or one error)."""
    spec = ClusterSpec.parse(cluster)
    if prompt is not None or interactive or prompts_file is None:
        raise UserError("--cluster runs a --prompts-file (one prompt per line), not a PROMPT or --interactive")
    if threads is not None:
        raise UserError("with --cluster, give each worker's threads with --threads-per-worker, not --threads")
    if out is None:
        raise UserError("--cluster needs --out FOLDER: a run resumes from what that folder holds")
    if settings.get("continuation") is not None:
        raise UserError("--continue goes with one PROMPT, not with --cluster")
    if settings.get("anticipation") is not None:
        raise UserError("--infill and --accompany go with one PROMPT, not with --cluster")
    require_ray()
    audio = audio_or_note(audio, quiet=quiet)
    if spec.address is not None:
        check_reachable(spec.address)  # before OUT is touched: a typo in the address leaves nothing behind
    prompts = read_prompt_file(prompts_file)
    if prompts.replaced:  # the same warning as plain --prompts-file
        from .gen_cmds import _line_list, _warn_replaced

        _warn_replaced(f"{prompts_file} {_line_list(prompts.replaced)}")
    run_settings = {k: v for k, v in settings.items() if k not in ("seed", "continuation", "anticipation")}
    # Everything that shapes the music, for a resumed run to match: every control field, whatever gets added later.
    flags = {f.name: getattr(controls, f.name) for f in fields(controls)}
    flags = {k: sorted(v) if isinstance(v, frozenset) else v for k, v in flags.items()}
    same_music = {**run_settings, "model": model, "controls": flags}
    talk = not quiet and not as_json
    with claim_output_dir(out, force=True):  # another run writing into `out` is refused; resuming is not
        plan = plan_run(out, prompts, seed=settings.get("seed"), settings=same_music, force=force)
        summary = RunSummary(len(prompts.lines), skipped=len(plan.done), run_seed=plan.run_seed)
        if talk:
            typer.echo(_start_line(plan, summary, spec), err=True)
        try:
            if plan.todo:
                run_on_ray(plan, summary, spec=spec, model=model, load=load, settings=run_settings, controls=controls,
                           workers=workers, threads_per_worker=threads_per_worker, png=png, audio=audio, slots=slots,
                           on_event=_printer(summary, talk=talk, as_json=as_json))  # fmt: skip
        except KeyboardInterrupt:
            summary.interrupted = True
            summary.write(out)
            typer.echo(f"interrupted: {summary.complete} of {summary.prompts} prompts are complete in {out}; "
                       "run the same command to generate the rest", err=True)  # fmt: skip
            raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            if plan.todo and not summary.interrupted:  # nothing to do: the last run's summary stays
                summary.write(out)
    _end(summary, out, quiet=quiet)


def _start_line(plan, summary: RunSummary, spec: ClusterSpec) -> str:
    head = f"{summary.prompts} prompts, run seed {plan.run_seed}"
    if plan.done:
        head += f"; {len(plan.done)} already complete in {plan.out}"
    if plan.redone:
        head += f"; {len(plan.redone)} partial ones redone"
    return head + (f"; starting {spec.describe()}" if plan.todo else "; nothing to do")


def _printer(summary: RunSummary, *, talk: bool, as_json: bool):
    def show(event: RunEvent) -> None:
        if as_json and event.kind == "done" and event.job is not None:
            echo_or_note(json.dumps({"folder": str(event.job.folder), **(event.stats or {})}))
        if not talk:
            return
        line = event.job.line.number if event.job else 0
        if event.kind == "ready":
            typer.echo(f"worker {event.worker} ready on {event.node}, pid {event.pid}: model loaded in "
                       f"{event.message} s", err=True)  # fmt: skip
        elif event.kind == "done" and event.stats:
            t = event.stats["timings"]
            typer.echo(f"[{summary.complete}/{summary.prompts}] line {line} -> {event.job.folder}: "
                       f"{t['tokens_generated']} tokens, {t['tokens_per_s']} tok/s (worker {event.worker})",
                       err=True)  # fmt: skip
        elif event.kind == "retry":
            typer.echo(f"worker {event.worker} on {event.node} died ({event.message}); line {line} is retried",
                       err=True)  # fmt: skip
        elif event.kind == "failed":
            typer.echo(f"line {line} failed on worker {event.worker} ({event.node}): {event.message}", err=True)

    return show


def _end(summary: RunSummary, out: Path, *, quiet: bool) -> None:
    rate = f"{summary.tokens / summary.wall_s:.1f}" if summary.wall_s else "0"
    if not quiet:
        typer.echo(f"{summary.complete} of {summary.prompts} prompts complete in {out} ({summary.done} this run, "
                   f"{summary.tokens} tokens in {summary.wall_s:.1f} s: {rate} tok/s over "
                   f"{len(summary.workers)} workers); summary in {out / SUMMARY_NAME}", err=True)  # fmt: skip
    if summary.failed:
        shown = "; ".join(f"line {n}: {why}" for n, why in sorted(summary.failed.items())[:FAILED_SHOWN])
        more = f" and {len(summary.failed) - FAILED_SHOWN} more" if len(summary.failed) > FAILED_SHOWN else ""
        raise UserError(f"{len(summary.failed)} of {summary.prompts} prompts failed ({shown}{more}); the other "
                        f"{summary.complete} are complete in {out}")  # fmt: skip
