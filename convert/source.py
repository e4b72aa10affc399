"""Where a checkpoint comes from: a local Hugging Face folder or a hub repo id, its config and its shards.

Only safetensors are accepted; pickled checkpoints are refused before anything
is opened. Both config styles are read: `rope_scaling` + `rope_theta`
(transformers 4.x) and `rope_parameters` (transformers 5.x).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midillm_lite.errors import UserError
from midillm_lite.fsutil import sha256_file

from .safetensors import TensorSlot, read_header

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SINGLE_WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# What snapshot_download fetches: nothing else (no pickles, no README images).
HUB_ALLOW_PATTERNS = [
    CONFIG_FILE,
    GENERATION_CONFIG_FILE,
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    "special_tokens_map.json",
    "*.safetensors",
    WEIGHTS_INDEX_FILE,
]
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
LOCAL_REVISION = "local"
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")  # an LFS blob in the hub cache is named by its content's sha256
HUB_SNAPSHOTS_DIR, HUB_BLOBS_DIR = "snapshots", "blobs"  # the HF cache: snapshots/<rev>/<file> -> ../../blobs/<hash>


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 frequency scaling ("llama3" rope type); `None` in HParams when the rope is unscaled."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class HParams:
    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None
    max_position_embeddings: int
    tied_embeddings: bool
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]


@dataclass
class Checkpoint:
    """A resolved checkpoint folder: hyperparameters, tensors by name, tokenizer files, provenance."""

    folder: Path
    hparams: HParams
    tensors: dict[str, TensorSlot]
    repo: str
    revision: str
    tokenizer: dict[str, Any] = field(repr=False, default_factory=dict)
    tokenizer_config: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def open_checkpoint(source: str | os.PathLike[str]) -> Checkpoint:
    """Resolve `source` (folder or hub repo id), validate every file it needs, and read the headers."""
    folder, repo, revision = resolve_source(source)
    refuse_pickles(folder)
    config = read_json(checked_file(folder, CONFIG_FILE), what="the model config")
    generation = read_json(checked_file(folder, GENERATION_CONFIG_FILE), what="the generation config", required=False)
    tok_config = read_json(checked_file(folder, TOKENIZER_CONFIG_FILE), what="the tokenizer config", required=False)
    tokenizer = read_json(checked_file(folder, TOKENIZER_FILE), what="the tokenizer")
    hparams = parse_hparams(config, generation, folder / CONFIG_FILE)
    tensors = read_shards(folder)
    return Checkpoint(folder, hparams, tensors, repo, revision, tokenizer, tok_config)


def resolve_source(source: str | os.PathLike[str]) -> tuple[Path, str, str]:
    """Return (folder, repo, revision): a local folder as is, a `owner/name` id via the hub cache."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve(), path.resolve().name, LOCAL_REVISION
    if path.exists():
        raise UserError(f"{source} is a file; give the checkpoint folder (with config.json) or a hub repo id")
    text = str(source)
    if text.count("/") != 1 or text.startswith((".", "/", "~")) or any(c.isspace() for c in text):
        raise UserError(f"{source} is neither a local folder nor a Hugging Face repo id like owner/name")
    return download_from_hub(text)


def download_from_hub(repo_id: str) -> tuple[Path, str, str]:
    """Fetch only the files conversion needs (resumable; honours HF_HOME, HF_TOKEN, HF_HUB_OFFLINE)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=HUB_ALLOW_PATTERNS))
    except LocalEntryNotFoundError as exc:
        raise UserError(
            f"{repo_id} is not in the local Hugging Face cache and the hub cannot be reached "
            f"(HF_HUB_OFFLINE is set or there is no network); download it where you are online with "
            f"`hf download {repo_id}` (or unset HF_HUB_OFFLINE), or give a local checkpoint folder instead"
        ) from exc
    except HfHubHTTPError as exc:
        raise UserError(
            f"cannot download {repo_id} from the Hugging Face hub: {exc}; check the repo id, your network, "
            f"and HF_TOKEN for gated repos"
        ) from exc
    except OSError as exc:
        raise UserError(f"cannot download {repo_id}: {exc}") from exc
    # snapshots/<commit>/ is the resolved revision; its files are symlinks into ../../blobs, as expected.
    verify_blobs(folder)
    return folder, repo_id, folder.name


def verify_blobs(folder: Path) -> None:
    """Hash each weight file whose cache blob is named by a sha256 (the hub's LFS etag) and compare.

    huggingface-hub checks sizes only; a same-size corruption (disk, proxy, a tampered
    cache) would otherwise be converted without complaint. About a second per GB.
    """
    for link in sorted(folder.glob("*.safetensors")):
        blob = link.resolve()
        if not _SHA256_NAME.fullmatch(blob.name):
            continue  # not an LFS blob: the hub names it by a git hash, which is not the content's sha256
        if sha256_file(blob) != blob.name:
            raise UserError(
                f"{link.name} in the Hugging Face cache is corrupt (its sha256 is not the hub's {blob.name[:12]}...); "
                f"delete {blob} and convert again to download it anew"
            )


def refuse_pickles(folder: Path) -> None:
    """Pickled checkpoints can run code when loaded; we never open them."""
    has_safetensors = any(folder.glob("*.safetensors"))
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not has_safetensors:
        raise UserError(
            f"{folder} holds only pickled PyTorch weights ({', '.join(pickles)}); they can run arbitrary code "
            f"when loaded and are never read here. Convert them to safetensors first (e.g. save_pretrained(..., "
            f"safe_serialization=True) in a trusted environment) or download the repo's .safetensors files"
        )
    if not has_safetensors:
        raise UserError(f"{folder} has no model.safetensors or sharded *.safetensors files")


def read_json(path: Path, *, what: str, required: bool = True) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise UserError(f"{path} is missing ({what}); the checkpoint folder must be in Hugging Face layout")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} ({what}) is not a JSON object")
    return data


def read_shards(folder: Path) -> dict[str, TensorSlot]:
    """Tensors from model.safetensors, or from the shards the index names (each checked to match)."""
    index_path = checked_file(folder, WEIGHTS_INDEX_FILE)
    if index_path.exists():
        index = read_json(index_path, what="the shard index")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(f"{index_path} has no weight_map; the shard index is corrupt")
        tensors: dict[str, TensorSlot] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = _inside(folder, str(shard))
            for name, slot in read_header(shard_path).items():
                if weight_map.get(name) != shard:
                    raise UserError(f"{shard_path} holds {name!r} but {index_path.name} places it elsewhere")
                tensors[name] = slot
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise UserError(f"{index_path.name} lists {missing[0]!r} but no shard holds it (incomplete download?)")
        return tensors
    single = checked_file(folder, SINGLE_WEIGHTS_FILE)
    if not single.exists():
        raise UserError(f"{folder} has neither {SINGLE_WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE}")
    return read_header(single)


def _inside(folder: Path, name: str) -> Path:
    """A shard path named by the index must stay in the folder (hub symlinks into ../../blobs are fine)."""
    candidate = folder / name
    if Path(name).is_absolute() or ".." in Path(name).parts or candidate.parent != folder:
        raise UserError(f"the shard index names {name!r}, which is outside {folder}; refusing to read it")
    if not candidate.exists():
        raise UserError(f"shard {candidate} is missing (incomplete download?)")
    return checked_file(folder, name)


def checked_file(folder: Path, name: str) -> Path:
    """`folder / name`, refusing a symlink that leads outside the checkpoint.

    The one expected exception is the Hugging Face cache, whose snapshots/<rev>/ files
    link into the repo's ../../blobs.
    """
    path = folder / name
    if not path.is_symlink():
        return path
    target = path.resolve()
    allowed = [folder.resolve()]
    if folder.parent.name == HUB_SNAPSHOTS_DIR:
        allowed.append((folder.parent.parent / HUB_BLOBS_DIR).resolve())
    if not any(target.is_relative_to(root) for root in allowed):
        raise UserError(
            f"{path} is a symlink to {target}, outside the checkpoint folder; copy the file into {folder} "
            f"if it is meant to be read"
        )
    return path


def parse_hparams(config: dict[str, Any], generation: dict[str, Any], where: Path) -> HParams:
    """Read a Llama config in either transformers style into HParams, naming any missing or odd field."""
    archs = config.get("architectures") or []
    if not isinstance(archs, list) or (archs and not set(map(str, archs)) & set(SUPPORTED_ARCHITECTURES)):
        raise UserError(f"{where}: architecture {archs} is not supported; expected {SUPPORTED_ARCHITECTURES[0]}")

    def need(key: str, *, default: Any = None) -> int:
        value = config.get(key, default)
        if value is None and default is None:
            raise UserError(f"{where}: {key} is missing")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"{where}: {key} is {value!r}; expected a positive whole number")
        return value

    hidden, n_heads = need("hidden_size"), need("num_attention_heads")
    n_kv_heads = need("num_key_value_heads", default=n_heads)
    head_dim = need("head_dim", default=hidden // n_heads or None)
    if n_heads % n_kv_heads or head_dim % 2:
        raise UserError(
            f"{where}: {n_heads} attention heads over {n_kv_heads} KV heads of dim {head_dim} is not a valid "
            f"grouped-query layout (heads must divide evenly, head_dim must be even)"
        )
    eps = config.get("rms_norm_eps")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise UserError(f"{where}: rms_norm_eps is {eps!r}; expected a small positive number")
    rope_theta, scaling = _rope(config, where)
    return HParams(
        vocab_size=need("vocab_size"),
        hidden_size=hidden,
        n_layers=need("num_hidden_layers"),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        ffn_size=need("intermediate_size"),
        rms_norm_eps=float(eps),
        rope_theta=rope_theta,
        rope_scaling=scaling,
        max_position_embeddings=need("max_position_embeddings"),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        bos_token_id=config.get("bos_token_id"),
        eos_token_ids=_eos_ids(config, generation),
    )


def _rope(config: dict[str, Any], where: Path) -> tuple[float, RopeScaling | None]:
    params = config.get("rope_parameters")  # transformers 5.x: theta and scaling in one dict
    if isinstance(params, dict):
        theta = params.get("rope_theta", config.get("rope_theta"))
        scaling = params
    else:
        theta = config.get("rope_theta")
        scaling = config.get("rope_scaling") or {}
    if not isinstance(scaling, dict):
        raise UserError(f"{where}: rope_scaling is {scaling!r}; expected an object or null")
    if not isinstance(theta, (int, float)) or isinstance(theta, bool) or theta <= 0:
        raise UserError(f"{where}: rope_theta is missing or not positive (rope_theta or rope_parameters.rope_theta)")
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type in (None, "default"):
        return float(theta), None
    if rope_type != "llama3":
        raise UserError(f"{where}: rope type {rope_type!r} is not supported; expected 'llama3' or none")
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [k for k in keys if isinstance(scaling.get(k), bool) or not isinstance(scaling.get(k), (int, float))]
    if missing:
        raise UserError(f"{where}: llama3 rope scaling lacks {', '.join(missing)}")
    if not 0 < scaling["low_freq_factor"] < scaling["high_freq_factor"] or min(scaling[k] for k in keys) <= 0:
        raise UserError(f"{where}: llama3 rope scaling {scaling} needs positive values and low < high freq factor")
    return float(theta), RopeScaling(
        float(scaling["factor"]),
        float(scaling["low_freq_factor"]),
        float(scaling["high_freq_factor"]),
        int(scaling["original_max_position_embeddings"]),
    )


def _eos_ids(config: dict[str, Any], generation: dict[str, Any]) -> tuple[int, ...]:
    ids: list[int] = []
    for source in (generation, config):
        value = source.get("eos_token_id")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, int) and item not in ids:
                ids.append(item)
    return tuple(ids)
