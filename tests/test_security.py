"""Security boundaries: model names and prompts cannot reach outside their folders, the converter does not follow
symlinks out of a checkpoint, nothing is ever unpickled, and what the hub delivers is checked before use."""

from __future__ import annotations

import ast
import hashlib
import shutil
from pathlib import Path

import pytest
from clirun import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from midillm_lite.convert import source

from midillm_lite import models
from midillm_lite.errors import UserError
from midillm_lite.outputs import new_output_dir, slug

ROOT = Path(__file__).parents[1]
PACKAGES = [ROOT / "midillm_lite", ROOT / "convert"]


@pytest.fixture
def empty_model_dirs(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "REPO_MODELS", tmp_path / "repo-models")
    monkeypatch.setattr(models, "REGISTRY", tmp_path / "repo-models" / "registry.json")
    monkeypatch.setenv("MIDILLM_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("name", ["../../x", "..", "../models/x.gguf", "a/../../b", "x/../..", "./../x", "~/../../x"])
def test_model_names_cannot_escape(empty_model_dirs, name, capsys) -> None:
    with pytest.raises(UserError):
        models.resolve_model(name, allow_download=False)
    code, _, err = run_cli(["gen", "x", "--model", name, "--quiet"], capsys)
    assert code == 2 and err.startswith("error: ")


def test_a_path_to_something_else_is_not_a_model(empty_model_dirs, capsys) -> None:
    code, _, err = run_cli(["gen", "x", "--model", "/etc/passwd", "--quiet"], capsys)
    assert code == 2 and "not a GGUF file" in err


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_slugs_are_plain_names(prompt: str) -> None:
    name = slug(prompt)
    assert name and len(name) <= 48 and name not in (".", "..")
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") and not name.startswith("-")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=100))
def test_prompt_folders_stay_under_the_root(tmp_path_factory, prompt: str) -> None:
    root = tmp_path_factory.getbasetemp() / "slug-root"
    folder = new_output_dir(prompt, root=root)
    assert folder.parent == root and folder.resolve().parent == root.resolve()
    folder.rmdir()


@pytest.fixture
def checkpoint_copy(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    return folder


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
def test_symlink_out_of_the_checkpoint_is_refused(checkpoint_copy: Path, tmp_path: Path, name: str) -> None:
    outside = tmp_path / f"outside-{name}"
    (checkpoint_copy / name).rename(outside)
    (checkpoint_copy / name).symlink_to(outside)
    with pytest.raises(UserError, match=rf"{name} is a symlink to .*outside-{name}, outside the checkpoint folder"):
        source.open_checkpoint(checkpoint_copy)


def test_symlink_chain_through_the_folder_is_followed_to_its_end(checkpoint_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.safetensors"
    (checkpoint_copy / "model.safetensors").rename(outside)
    (checkpoint_copy / "hop.safetensors").symlink_to(outside)
    (checkpoint_copy / "model.safetensors").symlink_to(checkpoint_copy / "hop.safetensors")
    with pytest.raises(UserError, match="outside the checkpoint folder"):
        source.open_checkpoint(checkpoint_copy)


def test_symlink_inside_the_checkpoint_is_fine(checkpoint_copy: Path) -> None:
    (checkpoint_copy / "model.safetensors").rename(checkpoint_copy / "weights.data")
    (checkpoint_copy / "model.safetensors").symlink_to("weights.data")
    assert source.open_checkpoint(checkpoint_copy).tensors


@pytest.mark.parametrize("shard", ["../x.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_shard_index_cannot_name_files_outside(checkpoint_copy: Path, shard: str) -> None:
    (checkpoint_copy / "model.safetensors.index.json").write_text(f'{{"weight_map": {{"w": "{shard}"}}}}')
    with pytest.raises(UserError, match="outside"):
        source.open_checkpoint(checkpoint_copy)


# --- nothing is unpickled ----------------------------------------------------------------------------------------

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "marshal", "shelve", "torch"}


def _python_files() -> list[Path]:
    files = [p for package in PACKAGES for p in package.rglob("*.py")]
    assert len(files) > 20
    return files


def test_no_module_imports_a_deserializer() -> None:
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
    assert found == []


def test_no_call_loads_pickles() -> None:
    """np.load/torch.load with allow_pickle or weights_only=False, and pickle.loads by attribute, never appear."""
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if func.endswith(("pickle.load", "pickle.loads", "torch.load", "Unpickler")) or (
                func.endswith("load") and keywords.get("allow_pickle") == "True"
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_pickled_checkpoints_are_refused_unopened(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 this would run code if unpickled")
    with pytest.raises(UserError, match="only pickled PyTorch weights"):
        source.open_checkpoint(folder)


# --- downloads ---------------------------------------------------------------------------------------------------


def test_a_size_mismatch_from_the_hub_is_a_user_error(monkeypatch) -> None:
    """huggingface-hub checks each file's size against the hub's metadata and raises OSError on a mismatch."""
    import huggingface_hub

    def snapshot_download(repo_id, **kwargs):
        raise OSError("Consistency check failed: file should be of size 10 but has size 5 (model.safetensors).")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(UserError, match="cannot download owner/model: Consistency check failed"):
        source.resolve_source("owner/model")


def _fake_hub_snapshot(cache: Path, checkpoint: Path, *, corrupt: bool) -> Path:
    """A Hugging Face cache layout: snapshots/<rev>/<file> -> ../../blobs/<sha256 of the file>, as the hub makes."""
    repo = cache / "models--owner--model"
    snapshot, blobs = repo / "snapshots" / "0123abc", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for file in checkpoint.iterdir():
        data = file.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        if corrupt and file.name == "model.safetensors":
            data = data[:-8] + bytes(8)  # same size, other bytes: what a size check cannot see
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("../../blobs") / blob.name)
    return snapshot


def test_hub_cache_layout_is_accepted(tiny_checkpoint, tmp_path, monkeypatch) -> None:
    import huggingface_hub

    snapshot = _fake_hub_snapshot(tmp_path / "hub", tiny_checkpoint, corrupt=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(snapshot))
    checkpoint = source.open_checkpoint("owner/model")
    assert (checkpoint.repo, checkpoint.revision) == ("owner/model", "0123abc")


def test_a_corrupted_blob_with_the_right_size_is_refused(tiny_checkpoint, tmp_path, monkeypatch) -> None:
    import huggingface_hub

    snapshot = _fake_hub_snapshot(tmp_path / "hub", tiny_checkpoint, corrupt=True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(snapshot))
    with pytest.raises(UserError, match=r"model\.safetensors in the Hugging Face cache is corrupt"):
        source.open_checkpoint("owner/model")
