"""Which GGUF `--model` means (a path, a registry name, or a checkpoint converted on first use), the default, the list.

The registry (`registry.json`) lists known models best first: MIDI-LLM
conversions, then the small demo model bundled with midillm-lite. The registry
and the demo ship in the repository's top-level `models/` folder, which a wheel
or sdist installs as `midillm_lite/bundled/` (pyproject.toml); `REPO_MODELS` is
whichever of the two this copy of the package has, so a checkout (and
`pip install -e`) and an installed wheel (`pip install .`, pipx, uv) both find
them. Models live in that folder or in the user model folder
(`$MIDILLM_HOME/models`, default `~/.cache/midillm-lite/models`). Names are
looked up, never joined into paths, so `--model ../../x` cannot escape. A hub
repo id or a local checkpoint folder is converted once into the user model
folder (a folder's file name carries a fingerprint of its files, so a changed
checkpoint is converted anew). Nothing here touches the network except
`_convert_from_hub`, which only `gen --model` reaches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import Opt, UserError

# COMPANION_SUFFIX: a midi-head model's text companion, not a model of its own
from .layouts import COMPANION_SUFFIX, LAYOUT_MIDI_HEAD

log = logging.getLogger(__name__)

CHECKOUT_MODELS_DIR = "models"  # the repository's top-level folder
BUNDLED_PACKAGE_DIR = "bundled"  # the same folder in an installed package: `midillm_lite.bundled` (pyproject.toml)


def bundled_models_dir() -> Path:
    """Where the registry and the demo model are: inside the installed package, else in this checkout."""
    package = Path(__file__).resolve().parent
    installed = package / BUNDLED_PACKAGE_DIR
    return installed if installed.is_dir() else package.parent / CHECKOUT_MODELS_DIR


# The name says "repo" for history; tests patch REPO_MODELS and REGISTRY to point elsewhere.
REPO_MODELS = bundled_models_dir()

ConvertProgress = Callable[[str, int, int], None]  # convert's ProgressCallback, without importing the converter
REGISTRY = REPO_MODELS / "registry.json"
HOME_ENV = "MIDILLM_HOME"
DEFAULT_HOME = Path("~/.cache/midillm-lite")
HUB_CONVERT_QUANT = "q4_k_m"
# What a conversion for our own cache is written as: only midillm-lite reads those files, so the fastest layout
# (same music, 1.2-1.3x faster, less memory; BENCHMARKS.md "Layouts"). `convert` keeps the standard one by default.
CACHE_LAYOUT = LAYOUT_MIDI_HEAD
GGUF_SUFFIX = ".gguf"
CHECKPOINT_CONFIG = "config.json"  # what makes a folder a Hugging Face checkpoint
LOCAL_PREFIX = "local--"  # file names of converted local checkpoint folders
FINGERPRINT_CHARS = 12
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_QUANT_NAME = re.compile(r"[A-Za-z0-9_]+")

# What `list_models` says about each model (ModelListing.status).
PRESENT = "present"
BUNDLED = "bundled"
ABSENT = "absent"


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    file: str  # a file name (no folders) looked up in the model folders
    description: str = ""
    repo: str | None = None  # hub repo id that `convert` makes it from; required unless bundled
    quant: str | None = None  # the --quant for that conversion; required unless bundled
    bundled: bool = False  # shipped in the repository's models/ folder, never converted


_ENTRY_KEYS = {f.name for f in fields(RegistryEntry)} - {"name"}  # the name is the key in "models"
_BOOL_KEYS = {"bundled"}
_OPTIONAL_KEYS = {"description", "repo", "quant", "bundled"}


@dataclass(frozen=True)
class ModelChoice:
    """A model file and what it is: `entry` is its registry entry, None for any other file."""

    name: str
    path: Path
    entry: RegistryEntry | None = None

    @property
    def bundled(self) -> bool:
        return self.entry is not None and self.entry.bundled


@dataclass(frozen=True)
class ModelListing:
    """One line of `midillm-lite models`: a registry entry (present or not) or another GGUF found locally."""

    name: str
    status: str  # PRESENT, BUNDLED (present, shipped with midillm-lite) or ABSENT
    path: Path  # where it is; for an absent model, where it would go
    size_bytes: int | None
    description: str
    in_registry: bool
    bundled: bool = False
    repo: str | None = None
    quant: str | None = None
    convert_command: str | None = None  # how to make an absent model
    default: bool = False  # what `gen` uses without --model
    layout: str | None = None  # standard or midi-head, for a readable file; None when absent or unreadable

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "description": self.description,
            "in_registry": self.in_registry,
            "bundled": self.bundled,
            "repo": self.repo,
            "quant": self.quant,
            "convert_command": self.convert_command,
            "default": self.default,
            "layout": self.layout,
        }


def user_model_dir() -> Path:
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser() / "models"


def registry(path: Path | None = None) -> list[RegistryEntry]:
    """Registry entries, best first; an absent registry is empty, a broken one an error."""
    path = path or REGISTRY
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise UserError(f"{path} is not a valid model registry ({exc})") from exc
    try:
        return _parse_registry(data)
    except ValueError as exc:
        raise UserError(f"{path} is not a valid model registry ({exc})") from exc


def _parse_registry(data: object) -> list[RegistryEntry]:
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ValueError('it needs an object {"models": {NAME: {...}, ...}}')
    return [_parse_entry(name, fields_) for name, fields_ in models.items()]


def _parse_entry(name: str, raw: object) -> RegistryEntry:
    if not isinstance(raw, dict):
        raise ValueError(f"model {name!r} must be an object, not {type(raw).__name__}")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise ValueError(f"model {name!r}: unknown field {unknown[0]!r}")
    missing = sorted(_ENTRY_KEYS - _OPTIONAL_KEYS - set(raw))
    if missing:
        raise ValueError(f"model {name!r}: no {missing[0]!r}")
    for key, value in raw.items():
        wanted = bool if key in _BOOL_KEYS else str
        if not isinstance(value, wanted):
            raise ValueError(f"model {name!r}: {key!r} must be a {wanted.__name__}, not {type(value).__name__}")
    entry = RegistryEntry(name=name, **raw)
    if not name.strip():
        raise ValueError("a model name is empty")
    if not _is_file_name(entry.file):
        raise ValueError(f"model {name!r}: 'file' must be a .gguf file name without folders, not {entry.file!r}")
    if not entry.bundled:
        if entry.repo is None or not is_repo_id(entry.repo):
            raise ValueError(f"model {name!r}: 'repo' must be a hub repo id (owner/name) unless 'bundled' is true")
        if entry.quant is None or not _QUANT_NAME.fullmatch(entry.quant):
            raise ValueError(f"model {name!r}: 'quant' must be a quantization type (q8_0, ...) unless bundled")
    return entry


def _is_file_name(text: str) -> bool:
    plain = text.isprintable() and "\\" not in text and not text.startswith(".")
    return plain and text.endswith(GGUF_SUFFIX) and Path(text).name == text


def _search_dirs() -> list[Path]:
    return [REPO_MODELS, user_model_dir()]


def _find_file(file_name: str) -> Path | None:
    for folder in _search_dirs():
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
    return None


def is_repo_id(text: str) -> bool:
    return bool(_REPO_ID.fullmatch(text)) and ".." not in text


def hub_file_name(repo: str, quant: str = HUB_CONVERT_QUANT) -> str:
    """The file a hub repo id is converted into on first use: `owner--name-QUANT.gguf`."""
    return f"{repo.replace('/', '--')}-{quant}{GGUF_SUFFIX}"


def _local_ggufs() -> list[Path]:
    """Model files in the model folders (companions and hidden files left out), each folder sorted by name."""
    found: list[Path] = []
    seen: set[Path] = set()
    for folder in _search_dirs():
        try:
            paths = sorted(p for p in folder.iterdir() if p.name.endswith(GGUF_SUFFIX))
        except OSError:  # a folder that is not there (or not readable) holds no models
            continue
        for path in paths:
            if path.name.startswith(".") or path.name.endswith(COMPANION_SUFFIX) or not path.is_file():
                continue
            if path.resolve() not in seen:
                seen.add(path.resolve())
                found.append(path)
    return found


def _hub_conversions(entries: list[RegistryEntry], local: list[Path]) -> list[tuple[Path, str, str]]:
    """Files not in the registry named as `gen --model OWNER/NAME` converts a registry repo: (path, repo, quant)."""
    registry_files = {e.file for e in entries}
    repos = list(dict.fromkeys(e.repo for e in entries if e.repo and not e.bundled))
    found = []
    for path in local:
        for repo in repos:
            prefix = hub_file_name(repo, quant="")[: -len(GGUF_SUFFIX)]
            quant = path.name[len(prefix) : -len(GGUF_SUFFIX)]
            if path.name.startswith(prefix) and _QUANT_NAME.fullmatch(quant) and path.name not in registry_files:
                found.append((path, repo, quant))
                break
    return found


def _ranked(entries: list[RegistryEntry]) -> list[ModelChoice]:
    """Every model present, best first: registry conversions, other conversions of their repos, bundled models."""
    present = [(e, _find_file(e.file)) for e in entries]
    converted = [ModelChoice(e.name, p, e) for e, p in present if p and not e.bundled]
    others = [ModelChoice(p.stem, p) for p, _, _ in _hub_conversions(entries, _local_ggufs())]
    bundled = [ModelChoice(e.name, p, e) for e, p in present if p and e.bundled]
    return converted + others + bundled


def _first_readable(ranked: list[ModelChoice]) -> ModelChoice | None:
    """The first choice that is a readable MIDI-LLM GGUF; each one passed over is logged with the reason."""
    for choice in ranked:
        problem = _unreadable(choice.path)
        if problem is None:
            return choice
        log.warning("skipped %s: %s", choice.path, problem)
    return None


def _unreadable(path: Path) -> str | None:
    """Why `path` is not a MIDI-LLM GGUF (header, keys, truncation: no llama.cpp), or None if it is one."""
    from .modelinfo import read_model_info

    try:
        read_model_info(path)
    except UserError as exc:
        return str(exc)
    return None


def default_model() -> ModelChoice:
    """The best readable model present locally (see `_ranked`); a clear error naming how to get one otherwise."""
    entries = registry()
    best = _first_readable(_ranked(entries))
    if best is not None:
        return best
    hint = next((e for e in reversed(entries) if not e.bundled), None)
    missing = [e.file for e in entries if e.bundled]
    gone = f"; the bundled {', '.join(missing)} is missing too (a fresh clone or install has it)" if missing else ""
    where = f"no model found in {' or '.join(map(str, _search_dirs()))}{gone}"
    if hint is None:
        raise UserError(f"{where}; pass ", Opt("model", "FILE.gguf"), " (`midillm-lite convert` makes one)")
    assert hint.repo and hint.quant
    raise UserError(
        f"{where}; pass ", Opt("model", hint.repo), " to download and convert it once, or a GGUF made by "
        f"`{convert_command(hint.repo, hint.quant, hint.file)}`",
    )  # fmt: skip


def find_model(
    model: str | os.PathLike[str] | None, *, allow_download: bool = True, progress: ConvertProgress | None = None
) -> ModelChoice:
    """The model for what the user typed (see the module docstring); converts a hub repo or folder on first use.

    `progress` follows such a conversion (convert's (phase, done, total) callback).
    """
    if model is None or str(model) == "":
        return default_model()
    text = str(model)
    path = Path(text).expanduser()
    if path.is_file():
        entry = _registry_entry_for(path)
        return ModelChoice(entry.name if entry else _stem(path), path, entry)
    if path.is_dir():
        return _checkpoint_folder(path, allow_download, progress)
    by_name = {e.name: e for e in registry()}
    if text in by_name:
        entry = by_name[text]
        found = _find_file(entry.file)
        if found is None and entry.bundled:
            raise UserError(f"{entry.file} (bundled with midillm-lite) is missing from {REPO_MODELS}")
        return ModelChoice(entry.name, found or _convert_from_hub(entry, allow_download, progress), entry)
    if text.endswith(GGUF_SUFFIX) or (os.sep in text and not is_repo_id(text)):
        raise UserError(f"{text}: no such model file")
    if is_repo_id(text):
        file_name = hub_file_name(text)
        found = _find_file(file_name) or _convert_from_hub(
            RegistryEntry(name=text, file=file_name, repo=text, quant=HUB_CONVERT_QUANT), allow_download, progress
        )
        return ModelChoice(_stem(found), found)
    names = ", ".join(by_name) or "none"
    raise UserError(f"{text!r} is not a model file, a registry name ({names}) or a hub repo id (owner/name)")


def resolve_model(model: str | os.PathLike[str] | None, *, allow_download: bool = True) -> Path:
    """The GGUF path of `find_model`."""
    return find_model(model, allow_download=allow_download).path


def _registry_entry_for(path: Path) -> RegistryEntry | None:
    try:
        return next((e for e in registry() if e.file == path.name), None)
    except UserError:  # a broken registry does not stand between the user and a file they named
        return None


def _stem(path: Path) -> str:
    return path.name[: -len(GGUF_SUFFIX)] if path.name.endswith(GGUF_SUFFIX) else path.name


def convert_command(repo: str, quant: str, file_name: str) -> str:
    """The command that makes what `gen --model` would convert for the cache (same type and layout)."""
    return f"midillm-lite convert {repo} -q {quant} --layout {CACHE_LAYOUT} -o {user_model_dir() / file_name}"


def _checkpoint_folder(folder: Path, allow_conversion: bool, progress: ConvertProgress | None) -> ModelChoice:
    """A Hugging Face checkpoint folder, converted once (to HUB_CONVERT_QUANT) into the user model folder."""
    if not (folder / CHECKPOINT_CONFIG).is_file():
        raise UserError(f"{folder} is a folder without {CHECKPOINT_CONFIG}; give a .gguf file or a checkpoint folder")
    file_name = local_file_name(folder)
    target = user_model_dir() / file_name
    if target.is_file():
        return ModelChoice(_stem(target), target)
    if not allow_conversion:
        raise UserError(
            f"{folder} is not converted yet; run `{convert_command(str(folder), HUB_CONVERT_QUANT, file_name)}`"
        )
    from .convert import convert  # the conversion stage loads only when needed

    log.warning("converting %s (%s) to %s once; later runs reuse it", folder, HUB_CONVERT_QUANT, target)
    convert(folder, target, quant=HUB_CONVERT_QUANT, layout=CACHE_LAYOUT, progress=progress)
    return ModelChoice(_stem(target), target)


def local_file_name(folder: Path, quant: str = HUB_CONVERT_QUANT) -> str:
    """`local--NAME-FINGERPRINT-QUANT.gguf`: the fingerprint covers the folder's path and its files' sizes and times."""
    folder = folder.resolve()
    digest = hashlib.sha256(str(folder).encode())
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(f"\0{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.name).strip(".-") or "checkpoint"
    return f"{LOCAL_PREFIX}{name}-{digest.hexdigest()[:FINGERPRINT_CHARS]}-{quant}{GGUF_SUFFIX}"


def _convert_from_hub(entry: RegistryEntry, allow_download: bool, progress: ConvertProgress | None) -> Path:
    assert entry.repo and entry.quant, "only entries with a repo are converted"
    target = user_model_dir() / entry.file
    if not allow_download:
        raise UserError(f"{entry.file} is not here; run `{convert_command(entry.repo, entry.quant, entry.file)}`")
    from .convert import convert  # the conversion stage loads only when needed

    log.warning("converting %s (%s) to %s once; later runs reuse it", entry.repo, entry.quant, target)
    convert(entry.repo, target, quant=entry.quant, layout=CACHE_LAYOUT, progress=progress)
    return target


def list_models() -> list[ModelListing]:
    """The registry's models (present, bundled, or how to make them) then other local GGUFs; never the network."""
    entries = registry()
    best = _first_readable(_ranked(entries))
    default = best.path if best else None
    listing = []
    for e in entries:
        path = _find_file(e.file)
        if path is not None:
            status = BUNDLED if e.bundled else PRESENT
            listing.append(_listing(e.name, status, path, e.description, e, default))
        elif e.bundled:
            listing.append(_listing(e.name, ABSENT, REPO_MODELS / e.file, e.description, e, default))
        else:
            assert e.repo and e.quant
            how = convert_command(e.repo, e.quant, e.file)
            listing.append(_listing(e.name, ABSENT, user_model_dir() / e.file, e.description, e, default, how))
    conversions = {path: (repo, quant) for path, repo, quant in _hub_conversions(entries, _local_ggufs())}
    registry_files = {e.file for e in entries}
    for path in _local_ggufs():
        if path.name in registry_files:
            continue  # a second copy of a registry model: the first one found is the one used
        repo, quant = conversions.get(path, (None, None))
        what = f"MIDI-LLM converted from {repo} ({quant})" if repo else "a local GGUF, not in the registry"
        item = _listing(_stem(path), PRESENT, path, what, None, default)
        listing.append(replace(item, repo=repo, quant=quant))
    return listing


def _layout(path: Path) -> str | None:
    from .modelinfo import read_model_info

    try:
        return read_model_info(path).layout
    except UserError:
        return None


def _listing(name, status, path, description, entry, default, how=None) -> ModelListing:
    size = path.stat().st_size if status != ABSENT else None
    return ModelListing(
        layout=_layout(path) if status != ABSENT else None,
        name=name,
        status=status,
        path=path,
        size_bytes=size,
        description=description,
        in_registry=entry is not None,
        bundled=bool(entry and entry.bundled),
        repo=entry.repo if entry else None,
        quant=entry.quant if entry else None,
        convert_command=how,
        default=default is not None and status != ABSENT and path == default,
    )
