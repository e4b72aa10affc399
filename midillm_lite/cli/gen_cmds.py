"""CLI verbs `gen` (text -> MIDI files) and `bench` (throughput table): thin layers over Generator and run_bench."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..amt import vocab
from ..audio.process import DEFAULT_LOUDNESS
from ..bench import DEFAULT_NS, DEFAULT_STEPS
from ..controls import ControlFlags
from ..errors import EXIT_INTERRUPTED, EXIT_NO_MUSIC, UserError
from ..llamacpp import DEVICES
from ..outputs import (
    DEFAULT_ROOT,
    check_output_root,
    claim_output_dir,
    new_output_dir,
    save_generation,
)
from ..promptfile import PromptLine, new_run_seed, prompt_seed, read_prompt_file
from ..sampling import MAX_SIMULTANEOUS_NOTES
from . import InterruptGate, app, echo_or_note, flag
from .anticipation_args import (
    AccompanyOption,
    InfillOption,
    KeepInstrumentsOption,
    KeepTracksOption,
    ToOption,
    prepare_sources,
)
from .params import (
    GPU_LAYERS,
    INPUT_SECONDS,
    MAX_TOKENS,
    OUTPUTS,
    SECONDS,
    SEED,
    SLOTS,
    STEPS,
    TEMPERATURE,
    THREADS,
    TOP_K,
    TOP_P,
    WORKERS,
    parse_counts,
    parser,
)
from .progress import AudioProgress, Progress, ProgressPlan
from .render_cmds import DEFAULT_AUDIO, AudioOption, LoudnessOption, NoAudioOption, SoundfontOption
from .render_cmds import audio_settings as resolve_audio

if TYPE_CHECKING:
    from ..audio import AudioSettings
    from ..generate import GenerationResult
    from ..models import ModelChoice

NOT_UTF8 = "Bytes that are not UTF-8 become U+FFFD, with a warning naming where."
DEMO_NOTE = "demo model bundled with midillm-lite; run `midillm-lite models` to get MIDI-LLM"


Device = Enum("Device", {name: name for name in DEVICES}, type=str)  # typer shows the choices
AUTO_DEVICE = Device("auto")
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        parser=parser(THREADS),
        help=f"CPU threads ({THREADS.describe()}).",
        show_default="performance cores, less one above 4",
    ),
]


@app.command("gen")
def gen_command(
    prompt: Annotated[
        str | None, typer.Argument(metavar="PROMPT", help="What the music should be. " + NOT_UTF8)
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="GGUF file, registry name, or hub repo id or checkpoint folder (converted once).",
            show_default="best model found locally",
        ),
    ] = None,
    n_outputs: Annotated[
        int,
        typer.Option(
            "--n-outputs",
            "-n",
            parser=parser(OUTPUTS),
            help=f"Outputs per prompt, decoded together ({OUTPUTS.describe()}).",
        ),
    ] = 4,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output folder (with several prompts: the folder their folders go in).",
            show_default="a new folder under ./midillm-out/",
        ),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            parser=parser(TEMPERATURE),
            help="Sampling temperature, a finite number; 0 or less is greedy.",
            show_default=f"model's, {vocab.DEFAULT_TEMPERATURE}",
        ),
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option(
            "--top-p",
            parser=parser(TOP_P),
            help=f"Nucleus sampling mass in {TOP_P.describe()}.",
            show_default=f"model's, {vocab.DEFAULT_TOP_P}",
        ),
    ] = None,
    top_k: Annotated[
        int,
        typer.Option("--top-k", parser=parser(TOP_K), help=f"Keep only the k likeliest tokens ({TOP_K.describe()})."),
    ] = 0,
    seed: Annotated[
        int | None,
        typer.Option(
            parser=parser(SEED), help=f"Random seed in {SEED.describe()}; recorded in the stats.", show_default="random"
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            parser=parser(MAX_TOKENS),
            help=f"New tokens per output ({vocab.TOKENS_PER_NOTE} per note, and per control that --infill or "
            f"--accompany inserts; {MAX_TOKENS.describe()}).",
            show_default=f"model's, {vocab.DEFAULT_MAX_TOKENS}",
        ),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(
            parser=parser(SECONDS), help=f"Stop an output once its music reaches this length, in {SECONDS.describe()}."
        ),
    ] = None,
    prompts_file: Annotated[
        Path | None,
        typer.Option(
            "--prompts-file",
            help="One prompt per line (# comments); the model loads once; each line's seed "
            "derives from --seed and its line number. " + NOT_UTF8,
        ),
    ] = None,
    slots: Annotated[
        int | None,
        typer.Option(
            parser=parser(SLOTS),
            help=f"With --prompts-file: outputs decoded at once, over all prompts ({SLOTS.describe()}); with "
            "--cluster, per worker (default -n: one prompt at a time, the same tokens however a run is split).",
            show_default="4, or -n if larger",
        ),
    ] = None,
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="Prompt loop; the model loads once.")
    ] = False,
    device: Annotated[Device, typer.Option(help="auto: GPU if llama.cpp was built with one.")] = AUTO_DEVICE,
    gpu_layers: Annotated[
        int | None,
        typer.Option(
            "--gpu-layers",
            parser=parser(GPU_LAYERS),
            help=f"Layers to offload ({GPU_LAYERS.describe()}).",
            show_default="all on a GPU",
        ),
    ] = None,
    threads: ThreadsOption = None,
    strict: Annotated[
        bool, typer.Option("--strict/--free", help="Strict: well-formed notes only. Free: the reference's sampler.")
    ] = True,
    continue_from: Annotated[
        Path | None, typer.Option("--continue", help="Continue this MIDI file; the output holds both.")
    ] = None,
    from_seconds: Annotated[
        float | None,
        typer.Option(
            "--from",
            parser=parser(INPUT_SECONDS),
            help=f"With --continue: cut the piece here (seconds, {INPUT_SECONDS.describe()}) and continue from it. "
            "With --infill or --accompany: where the span starts.",
        ),
    ] = None,
    infill: InfillOption = None,
    accompany: AccompanyOption = None,
    to_seconds: ToOption = None,
    keep_instruments: KeepInstrumentsOption = None,
    keep_tracks: KeepTracksOption = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Write into a non-empty --out folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print each generation's stats as one JSON line.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display; errors only.")] = False,
    instruments: Annotated[
        str | None,
        typer.Option(help="Only these instruments may play: GM names, families (strings), programs 0-127, drums."),
    ] = None,
    tempo: Annotated[
        str, typer.Option(help="BPM of the MIDI grid (also told to the model), or auto: the prompt's, else estimated.")
    ] = "auto",
    meter: Annotated[
        str,
        typer.Option(
            help="Time signature N/D (also told to the model), or auto: the prompt's, else estimated (3/4, "
            "4/4 or 6/8; 4/4 when unclear)."
        ),
    ] = "auto",
    key: Annotated[str | None, typer.Option(help="Key told to the model, like 'D minor'.")] = None,
    dynamics: Annotated[
        bool,
        typer.Option(
            "--dynamics",
            help="Accent the grid in the velocities: downbeats loudest, other beats louder, off-beats softer "
            "(else all 72, as the model writes); no note moves.",
        ),
    ] = False,
    png: Annotated[
        bool, typer.Option("--png/--no-png", help="Write a piano roll gen_i.png next to each MIDI file.")
    ] = True,
    cluster: Annotated[
        str | None,
        typer.Option(
            help="ray: run --prompts-file on a local Ray cluster; ray:HOST:PORT: on that one. Resumable: "
            "run it again to finish. Needs Ray: the cluster extra (README).",
            rich_help_panel="Cluster",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            parser=parser(WORKERS),
            help="With --cluster: worker processes, each loading the model once.",
            show_default="the cluster's CPUs / --threads-per-worker",
            rich_help_panel="Cluster",
        ),
    ] = None,
    threads_per_worker: Annotated[
        int | None,
        typer.Option(
            "--threads-per-worker",
            parser=parser(THREADS),
            help="With --cluster: each worker's threads.",
            show_default="4, or the CPUs if fewer",
            rich_help_panel="Cluster",
        ),
    ] = None,
    audio: AudioOption = DEFAULT_AUDIO,
    no_audio: NoAudioOption = False,
    soundfont: SoundfontOption = None,
    loudness: LoudnessOption = DEFAULT_LOUDNESS,
) -> None:
    """Generate MIDI files from a text description (several outputs at once, offline)."""
    from ..generate import Generator, check_settings, setting_warnings

    root = out or DEFAULT_ROOT
    settings = dict(
        n=n_outputs, seed=seed, temperature=temperature, top_p=top_p, top_k=top_k, strict=strict,
        max_tokens=max_tokens, seconds=seconds,
    )  # fmt: skip
    # Every check that needs no model runs first: a bad argument must not cost a model load.
    check_settings(prompt, **{k: v for k, v in settings.items() if k not in ("seed", "strict")})
    settings["continuation"], settings["anticipation"] = prepare_sources(
        continue_from=continue_from, infill=infill, accompany=accompany, from_seconds=from_seconds,
        to_seconds=to_seconds, keep_instruments=keep_instruments, keep_tracks=keep_tracks, seconds=seconds,
    )  # fmt: skip
    controls = ControlFlags.parse(tempo=tempo, meter=meter, instruments=instruments, key=key, dynamics=dynamics)
    audio_settings = resolve_audio(audio, no_audio, soundfont, loudness)
    if prompts_file is not None and (cluster is None or slots is not None):
        from .batch_gen import check_slots

        slots = check_slots(slots, n_outputs)
    talk = not quiet and not as_json
    if not quiet:
        # Said now, before the wait: an accompaniment of a long piece writes its first 95 s and says where to go on.
        planned = settings["anticipation"].warnings if settings["anticipation"] is not None else []
        chosen = setting_warnings(n=n_outputs, temperature=temperature) if temperature is not None else []
        for warning in chosen + planned:
            typer.echo(f"warning: {warning}", err=True)
    if cluster is not None:
        from .gen_cluster import gen_on_cluster

        return gen_on_cluster(cluster, prompt=prompt, prompts_file=prompts_file, interactive=interactive, out=out,
                              model=model, workers=workers, threads_per_worker=threads_per_worker, threads=threads,
                              load={"device": device.value, "gpu_layers": gpu_layers}, settings=settings,
                              controls=controls, png=png, audio=audio_settings, quiet=quiet, as_json=as_json,
                              force=force, slots=slots)  # fmt: skip
    if workers is not None or threads_per_worker is not None:
        raise UserError("--workers and --threads-per-worker go with --cluster")
    prompts = _prompts(prompt, prompts_file, interactive, quiet=quiet)
    batch = prompts_file is not None or interactive
    # Each line of a prompts file has its own seed, from the run's and its line number (as with --cluster).
    run_seed = new_run_seed() if seed is None else seed
    no_music = False
    noted: set[str] = set()  # the reasons for no audio already told (once per run, not per prompt)
    # The output folder is claimed (or its parent checked) before the model loads: a bad or busy folder
    # fails in a second, not after the generation; the claim is held until the last file is written.
    claim = claim_output_dir(out, force=force) if out is not None and not batch else None
    if claim is None:
        check_output_root(root)
    try:
        # SIGTERM reaches here as KeyboardInterrupt (cli.main), so it also keeps the partial outputs.
        with _conversion_progress(quiet or as_json) as converting:  # only a hub repo or folder seen first converts
            generator = Generator(model, device=device.value, gpu_layers=gpu_layers, threads=threads,
                                  convert_progress=converting)  # fmt: skip
        with generator as gen:
            if talk:
                echo_or_note(model_line(gen.choice, f"{gen.info.quant}, {gen.model.n_threads} threads"), err=True)
            plan = ProgressPlan(
                n=n_outputs,
                max_tokens=gen.info.max_new_tokens if max_tokens is None else max_tokens,
                may_stop_early=strict or seconds is not None,
            )
            if prompts_file is not None:  # all prompts at once, through the batch scheduler
                no_music = _batched(gen, list(prompts), root, settings, run_seed, controls, slots, as_json=as_json,
                                    quiet=quiet, png=png, audio=audio_settings)  # fmt: skip
                prompts = iter(())
            for number, text in prompts:
                where = out if claim is not None else root
                each = settings if number is None else {**settings, "seed": prompt_seed(run_seed, number)}
                result, interrupted = _one(gen, text, where, claim is None, each, controls, plan, as_json=as_json,
                                           quiet=quiet, png=png, audio=audio_settings, noted=noted)  # fmt: skip
                if interrupted:
                    raise typer.Exit(EXIT_INTERRUPTED)
                if not quiet:
                    line = outcome_line(result, demo=gen.choice.bundled, seconds=seconds)
                    if line:
                        typer.echo(line, err=True)
                no_music = no_music or all(o.failed for o in result.outputs)
    finally:
        if claim is not None:
            claim.release()
    if no_music:
        raise typer.Exit(EXIT_NO_MUSIC)


def _conversion_progress(quiet: bool):
    from .convert_cmds import progress_display

    return progress_display(enabled=not quiet)


def model_line(choice: ModelChoice, details: str = "") -> str:
    """`model: NAME (PATH; details)`, or for the bundled demo a pointer to the real thing."""
    if choice.bundled:
        return f"model: {choice.name} ({DEMO_NOTE})"
    return f"model: {choice.name} ({choice.path}{'; ' + details if details else ''})"


def _one(gen, text: str, where: Path, new_folder: bool, settings: dict, flags: ControlFlags, plan: ProgressPlan, *,
         as_json: bool, quiet: bool, png: bool = True, audio: AudioSettings | None = None,
         noted: set[str] | None = None) -> tuple[GenerationResult, bool]:  # fmt: skip
    """Generate for one prompt and write its folder (partial files too); the result, and whether to stop (a signal)."""
    controls = flags.for_prompt(text)
    with InterruptGate() as gate:
        with Progress(plan, enabled=not quiet and not as_json) as progress:
            result = gen.generate(
                controls.model_prompt, on_step=progress.update, instruments=controls.instruments, grid=controls.grid,
                **settings,
            )  # fmt: skip
        gate.close()  # sampling is over: from here a signal is recorded, and acted on once the files exist
        folder = new_output_dir(text, root=where) if new_folder else where
        # Audio comes last and stops early on a signal (recorded by the gate): the files before it are complete.
        with AudioProgress(enabled=not quiet and not as_json) as rendering:
            saved = save_generation(folder, result, text, controls=controls.to_dict(), png=png, audio=audio,
                                    stop=lambda: bool(gate.caught), on_audio=rendering.update)  # fmt: skip
    _report(result, saved, as_json=as_json, quiet=quiet, caught=bool(gate.caught), noted=noted)
    return result, result.interrupted or bool(gate.caught)


def _batched(gen, prompts: list[tuple[int | None, str]], root: Path, settings: dict, run_seed: int,
             flags: ControlFlags, slots: int, *, as_json: bool, quiet: bool, png: bool,
             audio: AudioSettings | None) -> bool:  # fmt: skip
    """--prompts-file: all prompts through the batch scheduler; True when some prompt made no music."""
    from .batch_gen import run_prompts

    per_prompt = [settings if number is None else {**settings, "seed": prompt_seed(run_seed, number)}
                  for number, _ in prompts]  # fmt: skip
    done, interrupted = run_prompts(gen, [text for _, text in prompts], per_prompt, root=root, flags=flags,
                                    slots=slots, png=png, audio=audio, show=not quiet and not as_json)  # fmt: skip
    noted: set[str] = set()
    for item in done:
        if item.result is not None and item.saved is not None:
            _report(item.result, item.saved, as_json=as_json, quiet=quiet, noted=noted)
            if not quiet:
                line = outcome_line(item.result, demo=gen.choice.bundled, seconds=settings["seconds"])
                if line:
                    typer.echo(line, err=True)
        elif item.error is not None:
            typer.echo(f"error: prompt {item.index + 1} ({item.text!r}) failed; the others went on", err=True)
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    errors = [item.error for item in done if item.error is not None]
    if errors:
        raise errors[0]
    return any(all(o.failed for o in item.result.outputs) for item in done if item.result is not None)


def _report(result: GenerationResult, saved, *, as_json: bool, quiet: bool, caught: bool = False,
            noted: set[str] | None = None) -> None:  # fmt: skip
    """What gen prints for one written folder: notes, warnings, the table or JSON line, interruption, CPU hints."""
    paths, failed, stats, folder = saved.midi_paths, saved.errors, saved.stats, saved.folder
    noted = set() if noted is None else noted
    note = saved.audio_note.render(flag) if saved.audio_note else None
    if note and note not in noted and (saved.audio_stopped or not quiet):
        typer.echo(f"note: {note}", err=True)
        noted.add(note)
    warned = {o.degenerate for o in result.outputs if o.degenerate}  # one line per distinct reason
    for reason in sorted(warned):
        typer.echo(f"warning: {reason} ({folder})", err=True)
    if failed:
        raise failed[0]
    if as_json:
        echo_or_note(json.dumps({"folder": str(folder), **stats}))
    elif not quiet:
        Progress.final_table(result, paths, folder)
    if result.interrupted:
        typer.echo(f"interrupted: partial outputs written to {folder}", err=True)
    elif caught:
        skipped = "; the audio not yet rendered was skipped" if saved.audio_stopped else ""
        typer.echo(f"interrupted after sampling ended: the outputs in {folder} are complete{skipped}", err=True)
    if caught and result.interrupted:
        typer.echo("(a further signal arrived while writing; the files were finished first)", err=True)
    hint = contention_hint(result)
    if hint and not quiet:
        typer.echo(hint, err=True)


def outcome_line(result: GenerationResult, *, demo: bool, seconds: float | None) -> str | None:
    """One plain line after the table when some or all outputs failed or were rejected, with what to try."""
    total = len(result.outputs)
    failed = [o for o in result.outputs if o.failed]
    rejected = [o for o in result.outputs if o.rejected]
    if not failed and not rejected:
        return None
    parts = []
    if failed:
        parts.append(f"{_some(len(failed), total)} failed (no notes)")
    if rejected:
        were = "was" if len(rejected) == 1 else "were"
        why = f"more than {MAX_SIMULTANEOUS_NOTES} notes at one onset"
        parts.append(f"{_some(len(rejected), total)} {were} rejected ({why})")
    every = len(failed) + len(rejected) == total
    kept = "it is" if len(failed) + len(rejected) == 1 else "they are"
    head = ("no usable output: " if every else "") + " and ".join(parts) + f"; {kept} kept under rejected/"
    tries = []
    if rejected:
        tries.append("a shorter --seconds" if seconds is not None else "--seconds 60 (notes pile up late in a piece)")
    if failed and result.params.strict is False:
        tries.append("--strict (the default: well-formed notes only)")
    tries.append("another prompt" + (" (the demo model's card lists the ones it plays well)" if demo else ""))
    tries.append("a better model (`midillm-lite models`)")
    return f"{head}. Try {', '.join(tries[:-1])} or {tries[-1]}."


def _some(part: int, total: int) -> str:
    if total == 1:
        return "the output"
    return f"all {total} outputs" if part == total else f"{part} of {total} outputs"


def contention_hint(result) -> str | None:
    """One line when other programs held the CPU during generation, naming what to do about it."""
    if not result.cpu_contended:
        return None
    got = f"llama.cpp's {result.threads} thread(s) ran {result.cpu_share:.0%} of the time while generating"
    fix = "close them, or set --threads to the cores left idle" if result.threads > 1 else "close them"
    return f"hint: other programs were using the CPU ({got}), so this was far slower than this machine can be; {fix}"


def _prompts(
    prompt: str | None, prompts_file: Path | None, interactive: bool, *, quiet: bool
) -> Iterator[tuple[int | None, str]]:
    """(line number in --prompts-file, else None; prompt) pairs."""
    given = sum(x for x in (prompt is not None, prompts_file is not None, interactive))
    if given != 1:
        raise UserError("give exactly one of: a PROMPT, --prompts-file FILE, or --interactive")
    if prompt is not None:
        text, replaced = _valid_text(prompt)
        if replaced:
            _warn_replaced("the PROMPT argument")
        return iter([(None, text)])
    if prompts_file is not None:
        return iter([(line.number, line.text) for line in _read_prompts(prompts_file)])
    return ((None, text) for text in _ask(quiet=quiet))


# Text that is not UTF-8 (a Latin-1 terminal, a file saved in another encoding) is not refused: each undecodable
# byte becomes U+FFFD, the replacement character, and a warning says where, so the rest of the description still
# counts. Python hands such bytes over as lone surrogates (argv and stdin under surrogateescape).
REPLACEMENT = "\ufffd"
SURROGATES = range(0xD800, 0xE000)


def _valid_text(text: str) -> tuple[str, bool]:
    """`text` with every lone surrogate (an undecodable byte) replaced by U+FFFD, and whether any was."""
    if not any(ord(c) in SURROGATES for c in text):
        return text, False
    return "".join(REPLACEMENT if ord(c) in SURROGATES else c for c in text), True


def _warn_replaced(where: str) -> None:
    typer.echo(f"warning: {where} is not valid UTF-8; its undecodable bytes became U+FFFD", err=True)


def _line_list(numbers: list[int], shown: int = 3) -> str:
    head = ", ".join(map(str, numbers[:shown]))
    more = f" and {len(numbers) - shown} more" if len(numbers) > shown else ""
    return f"line{'s' if len(numbers) > 1 else ''} {head}{more}"


def _read_prompts(path: Path) -> list[PromptLine]:
    prompts = read_prompt_file(path)
    if prompts.replaced:
        _warn_replaced(f"{path} {_line_list(prompts.replaced)}")
    return prompts.lines


ASK = "describe the music (empty line to quit)> "


def _ask(*, quiet: bool = False) -> Iterator[str]:
    """Prompts read from standard input until an empty line, EOF or Ctrl-C at the prompt.

    The question goes to stderr (stdout may carry --json lines), and only to a person: not with --quiet, and not
    when standard input is a file or a pipe.
    """
    with contextlib.suppress(AttributeError, ValueError):  # a replaced stdin (tests, embedding) keeps its own
        sys.stdin.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    ask = "" if quiet or not sys.stdin.isatty() else ASK
    number = 0
    while True:
        try:
            if ask:
                sys.stderr.write(ask)
                sys.stderr.flush()
            text = input()
        except (EOFError, KeyboardInterrupt):
            if ask:
                typer.echo("", err=True)
            return
        number += 1
        if not text.strip():
            return
        text, replaced = _valid_text(text)
        if replaced:
            _warn_replaced(f"standard input line {number}")
        yield text


@app.command("bench")
def bench_command(
    model: Annotated[str | None, typer.Option("--model", "-m", help="GGUF file, registry name or hub repo id.")] = None,
    ns: Annotated[
        str, typer.Option("--n", help=f"Comma-separated numbers of parallel outputs, each {OUTPUTS.describe()}.")
    ] = ",".join(map(str, DEFAULT_NS)),
    steps: Annotated[
        int, typer.Option(parser=parser(STEPS), help=f"Tokens generated per output for each n ({STEPS.describe()}).")
    ] = DEFAULT_STEPS,
    threads: ThreadsOption = None,
    device: Annotated[Device, typer.Option(help="auto: GPU if llama.cpp was built with one.")] = AUTO_DEVICE,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Measure prompt and generation throughput for several numbers of outputs decoded together."""
    from ..bench import format_table, run_bench
    from ..models import find_model

    counts = parse_counts(ns)
    choice = find_model(model)
    rows = run_bench(choice.path, ns=counts, steps=steps, threads=threads, device=device.value)
    if as_json:
        typer.echo(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        typer.echo(model_line(choice))
        typer.echo(format_table(rows))
