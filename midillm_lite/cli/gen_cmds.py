"""CLI verbs `gen` (text -> MIDI files) and `bench` (throughput table): thin layers over Generator and run_bench."""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..amt import vocab
from ..bench import DEFAULT_NS, DEFAULT_STEPS, MIN_STEPS
from ..controls import ControlFlags
from ..errors import EXIT_INTERRUPTED, UserError
from ..llamacpp import DEVICES
from ..outputs import DEFAULT_ROOT, new_output_dir, prepare_output_dir, write_output, write_prompt, write_stats
from . import app
from .progress import Progress

if TYPE_CHECKING:
    from ..models import ModelChoice

DEMO_NOTE = "demo model bundled with midillm-lite; run `midillm-lite models` to get MIDI-LLM"


Device = Enum("Device", {name: name for name in DEVICES}, type=str)  # typer shows the choices
AUTO_DEVICE = Device("auto")


@app.command("gen")
def gen_command(
    prompt: Annotated[str | None, typer.Argument(metavar="PROMPT", help="What the music should be.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="GGUF file, registry name, or hub repo id (converted once).",
            show_default="best model found locally",
        ),
    ] = None,
    n_outputs: Annotated[int, typer.Option("--n-outputs", "-n", help="Outputs per prompt, decoded together.")] = 4,
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
            help="Sampling temperature; 0 or less is greedy.", show_default=f"model's, {vocab.DEFAULT_TEMPERATURE}"
        ),
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option(
            "--top-p", help="Nucleus sampling mass in (0, 1].", show_default=f"model's, {vocab.DEFAULT_TOP_P}"
        ),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Keep only the k likeliest tokens (0: off).")] = 0,
    seed: Annotated[int | None, typer.Option(help="Random seed; recorded in the stats.", show_default="random")] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            help=f"New tokens per output ({vocab.TOKENS_PER_NOTE} per note).",
            show_default=f"model's, {vocab.DEFAULT_MAX_TOKENS}",
        ),
    ] = None,
    seconds: Annotated[float | None, typer.Option(help="Stop an output once its music reaches this length.")] = None,
    prompts_file: Annotated[
        Path | None, typer.Option("--prompts-file", help="One prompt per line (# comments); the model loads once.")
    ] = None,
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="Prompt loop; the model loads once.")
    ] = False,
    device: Annotated[Device, typer.Option(help="auto: GPU if llama.cpp was built with one.")] = AUTO_DEVICE,
    gpu_layers: Annotated[
        int | None, typer.Option("--gpu-layers", help="Layers to offload (-1: all).", show_default="all on a GPU")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads.", show_default="performance cores, less one above 4")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict/--free", help="Strict: well-formed notes only. Free: the reference's sampler.")
    ] = True,
    continue_from: Annotated[
        Path | None, typer.Option("--continue", help="Continue this MIDI file; the output holds both.")
    ] = None,
    from_seconds: Annotated[
        float | None, typer.Option("--from", help="With --continue: cut the piece here and continue from it.")
    ] = None,
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
        str, typer.Option(help="Time signature N/D (also told to the model), or auto: the prompt's, else 4/4.")
    ] = "auto",
    key: Annotated[str | None, typer.Option(help="Key told to the model, like 'D minor'.")] = None,
    png: Annotated[
        bool, typer.Option("--png/--no-png", help="Write a piano roll gen_i.png next to each MIDI file.")
    ] = True,
) -> None:
    """Generate MIDI files from a text description (several outputs at once, offline)."""
    from ..amt.continuation import prepare_continuation
    from ..generate import Generator

    prompts = _prompts(prompt, prompts_file, interactive)
    batch = prompts_file is not None or interactive
    root = out or DEFAULT_ROOT
    if not batch and out is not None:
        prepare_output_dir(out, force=force)  # before loading: a bad folder fails fast
    if from_seconds is not None and continue_from is None:
        raise UserError("--from needs --continue FILE.mid")
    continuation = prepare_continuation(continue_from, from_seconds=from_seconds) if continue_from else None
    controls = ControlFlags.parse(tempo=tempo, meter=meter, instruments=instruments, key=key)
    settings = dict(
        n=n_outputs, seed=seed, temperature=temperature, top_p=top_p, top_k=top_k, strict=strict,
        max_tokens=max_tokens, seconds=seconds, continuation=continuation,
    )  # fmt: skip
    # SIGTERM reaches here as KeyboardInterrupt (cli.main), so it also keeps the partial outputs.
    with Generator(model, device=device.value, gpu_layers=gpu_layers, threads=threads) as gen:
        if not quiet and not as_json:
            typer.echo(model_line(gen.choice, f"{gen.info.quant}, {gen.model.n_threads} threads"), err=True)
        for text in prompts:
            where = out if out is not None and not batch else root
            interrupted = _one(
                gen, text, where, batch or out is None, settings, controls, as_json=as_json, quiet=quiet, png=png
            )
            if interrupted:
                raise typer.Exit(EXIT_INTERRUPTED)


def model_line(choice: ModelChoice, details: str = "") -> str:
    """`model: NAME (PATH; details)`, or for the bundled demo a pointer to the real thing."""
    if choice.bundled:
        return f"model: {choice.name} ({DEMO_NOTE})"
    return f"model: {choice.name} ({choice.path}{'; ' + details if details else ''})"


def _one(
    gen, text: str, where: Path, new_folder: bool, settings: dict, flags: ControlFlags, *, as_json: bool, quiet: bool,
    png: bool = True,
) -> bool:  # fmt: skip
    """Generate for one prompt and write its folder; True if interrupted (partial files written)."""
    controls = flags.for_prompt(text)
    with Progress(settings["n"], enabled=not quiet and not as_json) as progress:
        result = gen.generate(
            controls.model_prompt, on_step=progress.update, instruments=controls.instruments, grid=controls.grid,
            **settings,
        )  # fmt: skip
    folder = new_output_dir(text, root=where) if new_folder else where
    write_prompt(folder, text)
    paths = []
    for output in result.outputs:
        midi_path, _ = write_output(folder, output.index, output.tokens, output.midi, rejected=bool(output.rejected))
        paths.append(midi_path)
    stats = result.stats()
    stats["controls"] = controls.to_dict()
    for entry, path in zip(stats["outputs"], paths, strict=True):
        entry["file"] = str(path)
    write_stats(folder, stats)
    if png:  # after the music and its stats are safe: a Ctrl-C while drawing costs only pictures
        _pictures(result, paths, stats, text)
        write_stats(folder, stats)
    if as_json:
        typer.echo(json.dumps({"folder": str(folder), **stats}))
    elif not quiet:
        Progress.final_table(result, paths, folder)
    if result.interrupted:
        typer.echo(f"interrupted: partial outputs written to {folder}", err=True)
    hint = contention_hint(result)
    if hint and not quiet:
        typer.echo(hint, err=True)
    return result.interrupted


def contention_hint(result) -> str | None:
    """One line when other programs held the CPU during generation, naming what to do about it."""
    if not result.cpu_contended:
        return None
    got = f"llama.cpp's {result.threads} thread(s) ran {result.cpu_share:.0%} of the time while generating"
    fix = "close them, or set --threads to the cores left idle" if result.threads > 1 else "close them"
    return f"hint: other programs were using the CPU ({got}), so this was far slower than this machine can be; {fix}"


def _pictures(result, paths: list[Path], stats: dict, title: str) -> None:
    """gen_i.png beside each gen_i.mid (after the MIDI files exist: a drawing problem never costs music)."""
    from ..pianoroll import PNG_SUFFIX, plot_midi

    for output, path, entry in zip(result.outputs, paths, stats["outputs"], strict=True):
        entry["png"] = str(plot_midi(output.midi, path.with_suffix(PNG_SUFFIX), title=title))


def _prompts(prompt: str | None, prompts_file: Path | None, interactive: bool) -> Iterator[str]:
    given = sum(x for x in (prompt is not None, prompts_file is not None, interactive))
    if given != 1:
        raise UserError("give exactly one of: a PROMPT, --prompts-file FILE, or --interactive")
    if prompt is not None:
        return iter([prompt])
    if prompts_file is not None:
        return iter(_read_prompts(prompts_file))
    return _ask()


def _read_prompts(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise UserError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read prompts from {path}: {exc}") from exc
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise UserError(f"{path} holds no prompts (one per line; # starts a comment)")
    return prompts


def _ask() -> Iterator[str]:
    """Prompts typed at the terminal until an empty line, EOF or Ctrl-C at the prompt."""
    while True:
        try:
            text = input("describe the music (empty line to quit)> ")
        except (EOFError, KeyboardInterrupt):
            typer.echo("", err=True)
            return
        if not text.strip():
            return
        yield text


@app.command("bench")
def bench_command(
    model: Annotated[str | None, typer.Option("--model", "-m", help="GGUF file, registry name or hub repo id.")] = None,
    ns: Annotated[str, typer.Option("--n", help="Comma-separated numbers of parallel outputs.")] = ",".join(
        map(str, DEFAULT_NS)
    ),
    steps: Annotated[int, typer.Option(min=MIN_STEPS, help="Tokens generated per output for each n.")] = DEFAULT_STEPS,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads.", show_default="physical cores")] = None,
    device: Annotated[Device, typer.Option(help="auto: GPU if llama.cpp was built with one.")] = AUTO_DEVICE,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Measure prompt and generation throughput for several numbers of outputs decoded together."""
    from ..bench import format_table, run_bench
    from ..models import find_model

    counts = _parse_counts(ns)
    choice = find_model(model)
    rows = run_bench(choice.path, ns=counts, steps=steps, threads=threads, device=device.value)
    if as_json:
        typer.echo(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        typer.echo(model_line(choice))
        typer.echo(format_table(rows))


def _parse_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise UserError(f"--n takes comma-separated integers like 1,2,4,8, not {text!r}") from exc
    if not counts or any(c < 1 for c in counts):
        raise UserError(f"--n needs positive counts, not {text!r}")
    return counts
