"""The output folder of a generation: names, layout (compatible with the reference scripts) and atomic writes.

OUT/prompt.txt, OUT/gen_<i>.mid, OUT/gen_<i>_tokens.txt (AMT ids, one per line), OUT/gen_<i>.png,
OUT/gen_<i>.mp3 (or another audio format) and OUT/generation_stats.json; an output the reference would reject
goes under OUT/rejected/ instead, never dropped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .amt.midi import save_midi
from .amt.tokens_file import write_tokens
from .errors import Opt, UserError
from .fsutil import atomic_write_text, process_alive

if TYPE_CHECKING:
    from .audio import AudioSettings
    from .generate import GenerationResult

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("midillm-out")
SLUG_WORDS = 6
SLUG_CHARS = 48
STATS_NAME = "generation_stats.json"
PROMPT_NAME = "prompt.txt"
REJECTED_DIR = "rejected"
MAX_NAME_TRIES = 1000
LOCK_WRITE_S = 10.0  # an empty lock younger than this belongs to a run writing its pid into it


def slug(text: str) -> str:
    """A short, filesystem-safe name from a prompt: ascii words joined by dashes."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())[:SLUG_WORDS]
    return "-".join(words)[:SLUG_CHARS].strip("-") or "music"


def new_output_dir(prompt: str, *, root: Path = DEFAULT_ROOT, now: float | None = None) -> Path:
    """Create and return a fresh folder under `root`, named from the time and the prompt.

    mkdir is atomic, so two processes starting in the same second get different folders.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = f"{stamp}-{slug(prompt)}"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {root}: {exc.strerror or exc}") from exc
    for attempt in range(MAX_NAME_TRIES):
        folder = root / (base if attempt == 0 else f"{base}-{attempt + 1}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"cannot create {folder}: {exc.strerror or exc}") from exc
        return folder
    raise UserError(f"could not find a free folder name for {base} under {root}")


LOCK_NAME = ".midillm-gen.lock"  # inside a folder given as the output: the run writing into it (its pid)


class OutputClaim:
    """An output folder held by this run: a lock file made with O_EXCL inside it, removed by release()."""

    def __init__(self, folder: Path, lock: Path):
        self.folder = folder
        self.lock = lock

    def release(self) -> None:
        self.lock.unlink(missing_ok=True)

    def __enter__(self) -> OutputClaim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_output_dir(out: Path, *, force: bool) -> OutputClaim:
    """Use `out` as given, for this run only: created if missing; refused if it holds files (unless forced)
    or if another run holds it. Checking emptiness alone let two runs started together share one folder."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for the outputs")
    if out.is_symlink() and not out.exists():
        raise UserError(f"{out} is a symbolic link to nothing; give a folder for the outputs")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror or exc}") from exc
    claim = OutputClaim(out, _take_lock(out / LOCK_NAME))
    if not force and any(p.name != LOCK_NAME for p in out.iterdir()):
        claim.release()
        raise UserError(f"{out} is not empty; use ", Opt("force", True), " to write into it or choose another folder")
    return claim


def _take_lock(lock: Path) -> Path:
    for _ in range(2):  # a second try after removing a dead run's lock
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            # An empty lock is either left by a run killed between creating and writing it, or a run taking it
            # this very moment (it writes its pid right after the O_EXCL create): only an old one is stale.
            if (owner is not None and process_alive(owner)) or (owner is None and _age_s(lock) < LOCK_WRITE_S):
                who = f"process {owner}" if owner is not None else "starting now"
                raise UserError(
                    f"{lock.parent} is in use by another generation ({who}); wait for it to finish or "
                    "choose another folder"
                ) from None
            log.info("removing %s, left by a run that is gone", lock)
            lock.unlink(missing_ok=True)
            continue
        except OSError as exc:
            raise UserError(f"{lock.parent} is not writable: {exc.strerror or exc}") from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        return lock
    raise UserError(f"could not claim {lock.parent}: another run keeps taking it")


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0  # gone meanwhile: its owner may be mid-release; the next try sees


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None  # unreadable or half-written: treated as left behind


def check_output_root(root: Path) -> None:
    """Make sure output folders can be made in `root` (the folder new output folders go in), creating nothing.

    Called before the model loads: a read-only folder must fail in a second, not after the generation; and a run
    that then fails for another reason leaves no empty folder behind. A missing root is judged by the nearest
    folder above it that exists, where it would be created.
    """
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} is a file; give a folder for the outputs")
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise UserError(f"cannot write in {probe}: {exc.strerror or exc}") from exc


def output_paths(out: Path, index: int, *, rejected: bool = False) -> tuple[Path, Path]:
    """(MIDI path, tokens path) of output `index` (1-based, as the reference names them)."""
    folder = out / REJECTED_DIR if rejected else out
    return folder / f"gen_{index}.mid", folder / f"gen_{index}_tokens.txt"


def write_output(out: Path, index: int, tokens: list[int], midi, *, rejected: bool = False) -> tuple[Path, Path]:
    """Write one output's token file and MIDI file atomically (overwriting: the folder is ours)."""
    midi_path, tokens_path = output_paths(out, index, rejected=rejected)
    write_tokens(tokens_path, tokens, force=True)  # first: whatever happens to the MIDI, the tokens are kept
    try:
        save_midi(midi, midi_path, force=True)
    except UserError:
        raise
    except (ValueError, OverflowError) as exc:  # mido refuses a message (e.g. a negative time)
        raise UserError(f"could not write {midi_path} ({exc}); its tokens are in {tokens_path}") from exc
    return midi_path, tokens_path


def write_prompt(out: Path, prompt: str) -> Path:
    path = out / PROMPT_NAME
    atomic_write_text(path, prompt + "\n")
    return path


def write_stats(out: Path, stats: dict[str, Any]) -> Path:
    path = out / STATS_NAME
    atomic_write_text(path, json.dumps(stats, indent=2, default=str) + "\n")
    return path


@dataclass
class SavedGeneration:
    """What save_generation wrote: the folder, each output's MIDI path (None where it failed), the stats."""

    folder: Path
    midi_paths: list[Path | None]
    stats: dict[str, Any]
    errors: list[UserError] = field(default_factory=list)  # per-output write failures, the rest was written
    audio_note: UserError | None = None  # why there is no audio (no synthesizer or soundfont, or a stop request)
    audio_stopped: bool = False  # a stop request skipped some audio


def save_generation(
    folder: Path,
    result: GenerationResult,
    prompt: str,
    *,
    controls: dict[str, Any] | None = None,
    png: bool = True,
    audio: AudioSettings | None = None,
    stop: Callable[[], bool] | None = None,
    on_audio: AudioProgressFn | None = None,
) -> SavedGeneration:
    """Write one prompt's folder: prompt.txt, each output's tokens and MIDI, the stats, the piano rolls, then audio
    (`audio`: its settings, None for none), the stats again after each step.

    The order is what keeps work safe: tokens before MIDI, music and stats before pictures and audio, so a failure
    or a signal in a later step never costs an earlier one. One output's write error does not stop the rest;
    it is returned in `errors` for the caller to report. `stop()` turning true skips the audio not yet finished
    (none is left half-written); `on_audio(index, count, path, fraction)` follows the rendering.
    """
    write_prompt(folder, prompt)
    paths: list[Path | None] = []
    errors: list[UserError] = []
    for output in result.outputs:
        try:
            midi_path, _ = write_output(folder, output.index, output.tokens, output.midi, rejected=not output.usable)
        except UserError as exc:
            errors.append(exc)
            midi_path = None
        paths.append(midi_path)
    stats = result.stats()
    if controls is not None:
        stats["controls"] = controls
    for entry, path in zip(stats["outputs"], paths, strict=True):
        entry["file"] = None if path is None else str(path)
    write_stats(folder, stats)
    saved = SavedGeneration(folder, paths, stats, errors)
    if png:
        _pictures(result, saved, title=prompt)
        write_stats(folder, stats)
    if audio is not None:
        saved.audio_note = _audio(result, saved, audio, stop=stop, on_audio=on_audio)
        write_stats(folder, stats)
    return saved


AudioProgressFn = Callable[[int, int, Path, float], None]


def _audio(result: GenerationResult, saved: SavedGeneration, settings: AudioSettings, *,
           stop: Callable[[], bool] | None, on_audio: AudioProgressFn | None) -> UserError | None:  # fmt: skip
    """gen_i.<format> beside each written, usable gen_i.mid (not those under rejected/); returns why there is none,
    if so. A render error is one output's error, like a MIDI write failure; the others are still rendered."""
    from .audio import AudioUnavailable, RenderStopped, audio_path, prepare

    try:
        renderer = prepare(settings)
    except AudioUnavailable as exc:
        saved.stats["audio"] = {"skipped": str(exc)}
        return UserError("no audio: ", *exc.parts)
    except UserError as exc:  # a named soundfont gone bad since the start: reported after the MIDI files
        saved.stats["audio"] = {"error": str(exc)}
        saved.errors.append(exc)
        return None
    outputs = zip(result.outputs, saved.stats["outputs"], saved.midi_paths, strict=True)
    todo = [(entry, path) for output, entry, path in outputs if path and output.usable]
    for number, (entry, path) in enumerate(todo, start=1):
        target = audio_path(path, settings.format)
        progress = None if on_audio is None else (lambda f, n=number, t=target: on_audio(n, len(todo), t, f))
        try:
            entry["audio"] = renderer.render(_midi_of(path), target, name=str(path), stop=stop,
                                             on_progress=progress).to_dict()  # fmt: skip
        except RenderStopped:
            note = f"audio stopped by a signal: {len(todo) - number + 1} of {len(todo)} outputs not rendered"
            saved.stats["audio"] = {"skipped": note}
            saved.audio_stopped = True
            return UserError(note)
        except UserError as exc:
            entry["audio"] = {"error": str(exc)}
            saved.errors.append(exc)
    return None


def _midi_of(path: Path):
    from .amt.midi import load_midi_file

    return load_midi_file(path)  # the file as written (grid, names, tracks): what a DAW or player would read


def _pictures(result: GenerationResult, saved: SavedGeneration, *, title: str) -> None:
    """gen_i.png beside each gen_i.mid (after the MIDI files exist: a drawing problem never costs music)."""
    from .pianoroll import PNG_SUFFIX, plot_midi

    span = None if result.anticipation is None else (result.anticipation.start, result.anticipation.end)
    for output, path, entry in zip(result.outputs, saved.midi_paths, saved.stats["outputs"], strict=True):
        if path is not None:  # None: its MIDI could not be written (reported by the caller)
            entry["png"] = str(plot_midi(output.midi, path.with_suffix(PNG_SUFFIX), title=title, span=span))
