"""Which GGUF `--model` means: a path, a registry name, or a hub repo id converted on first use; and the default.

The registry (`models/registry.json`) lists known models best first. Models
live in the repository's `models/` folder or in the user model folder
(`$MIDILLM_HOME/models`, default `~/.cache/midillm-lite/models`). Names are
looked up, never joined into paths, so `--model ../../x` cannot escape.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)

REPO_MODELS = Path(__file__).resolve().parents[1] / "models"
REGISTRY = REPO_MODELS / "registry.json"
HOME_ENV = "MIDILLM_HOME"
DEFAULT_HOME = Path("~/.cache/midillm-lite")
HUB_CONVERT_QUANT = "q4_k_m"
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    repo: str
    quant: str
    file: str
    description: str = ""


def user_model_dir() -> Path:
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser() / "models"


def registry(path: Path | None = None) -> list[RegistryEntry]:
    """Registry entries, best first; an absent registry is empty, a broken one an error."""
    path = path or REGISTRY
    if not path.is_file():
        return []
    try:
        models = json.loads(path.read_text(encoding="utf-8"))["models"]
        return [RegistryEntry(name=name, **fields) for name, fields in models.items()]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a valid model registry ({exc})") from exc


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


def default_model() -> Path:
    """The best registry model present locally; a clear error naming how to get one otherwise."""
    entries = registry()
    for entry in entries:
        found = _find_file(entry.file)
        if found:
            return found
    hint = entries[-1] if entries else None
    how = (
        f"`midillm-lite gen --model {hint.repo} ...` downloads and converts it once, or "
        f"`midillm-lite convert {hint.repo} -q {hint.quant} -o {user_model_dir() / hint.file}`"
        if hint
        else "`midillm-lite convert` makes one"
    )
    raise UserError(f"no model found in {' or '.join(map(str, _search_dirs()))}; pass --model FILE.gguf ({how})")


def resolve_model(model: str | os.PathLike[str] | None, *, allow_download: bool = True) -> Path:
    """A GGUF path for what the user typed (see the module docstring); converts a hub repo on first use."""
    if model is None or str(model) == "":
        return default_model()
    text = str(model)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass a .gguf file (`midillm-lite convert` makes one from a checkpoint)")
    by_name = {e.name: e for e in registry()}
    if text in by_name:
        entry = by_name[text]
        return _find_file(entry.file) or _convert_from_hub(entry.repo, entry.quant, entry.file, allow_download)
    if text.endswith(".gguf") or (os.sep in text and not is_repo_id(text)):
        raise UserError(f"{text}: no such model file")
    if is_repo_id(text):
        file_name = f"{text.replace('/', '--')}-{HUB_CONVERT_QUANT}.gguf"
        return _find_file(file_name) or _convert_from_hub(text, HUB_CONVERT_QUANT, file_name, allow_download)
    names = ", ".join(by_name) or "none"
    raise UserError(f"{text!r} is not a model file, a registry name ({names}) or a hub repo id (owner/name)")


def _convert_from_hub(repo: str, quant: str, file_name: str, allow_download: bool) -> Path:
    target = user_model_dir() / file_name
    if not allow_download:
        raise UserError(f"{file_name} is not here; run `midillm-lite convert {repo} -q {quant} -o {target}`")
    from .convert import convert  # the conversion stage loads only when needed

    log.warning("converting %s (%s) to %s once; later runs reuse it", repo, quant, target)
    convert(repo, target, quant=quant)
    return target
