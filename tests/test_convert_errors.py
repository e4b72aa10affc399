"""Every bad input to `convert` gives one clear UserError (and the CLI one `error:` line), never a traceback."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import gguf
import pytest
from midillm_lite.convert import convert
from midillm_lite.convert import pipeline as pipeline_module

from midillm_lite import gguf_keys
from midillm_lite.cli import main
from midillm_lite.errors import UserError
from midillm_lite.modelinfo import read_gguf_metadata


@pytest.fixture
def checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint that a test may break."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))


def _convert(source: Path | str, tmp_path: Path, **kwargs) -> Path:
    out = tmp_path / "out.gguf"
    convert(source, out, **kwargs)
    return out


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_pickle_checkpoint_is_refused_unread(checkpoint: Path, tmp_path: Path) -> None:
    (checkpoint / "model.safetensors").unlink()
    (checkpoint / "pytorch_model.bin").write_bytes(b"\x80\x04this would be a pickle")
    with pytest.raises(UserError, match=r"pickled PyTorch weights \(pytorch_model\.bin\).*never read"):
        _convert(checkpoint, tmp_path)


@pytest.mark.parametrize(
    ("breakage", "needle"),
    [
        (lambda c: (c / "config.json").unlink(), r"config\.json is missing"),
        (lambda c: (c / "config.json").write_text("{oops"), "cannot read the model config"),
        (lambda c: (c / "tokenizer.json").unlink(), r"tokenizer\.json is missing"),
        (lambda c: (c / "model.safetensors").unlink(), "no model.safetensors"),
        (lambda c: _edit_json(c / "config.json", lambda d: d.update(vocab_size=128256)), "vocab_size 128256"),
        (lambda c: _edit_json(c / "config.json", lambda d: d.update(intermediate_size=100)), r"\[100, 64\]"),
        (lambda c: _edit_json(c / "config.json", lambda d: d.update(tie_word_embeddings=False)), "output.weight"),
        (lambda c: _edit_json(c / "config.json", lambda d: d.update(num_hidden_layers=3)), r"blk\.2\."),
        (lambda c: _truncate(c / "model.safetensors"), "truncated"),
    ],
    ids=[
        "no-config",
        "bad-config",
        "no-tokenizer",
        "no-weights",
        "text-vocab",
        "ffn-shape",
        "untied-no-head",
        "too-few-layers",
        "truncated",
    ],
)
def test_broken_checkpoints(checkpoint: Path, tmp_path: Path, breakage, needle: str) -> None:
    breakage(checkpoint)
    with pytest.raises(UserError, match=needle):
        _convert(checkpoint, tmp_path, quant="f32")
    assert not list(tmp_path.glob("*.gguf*")), "nothing is left behind"


def _truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 1000)


def test_shard_index_cannot_point_outside(checkpoint_factory, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(checkpoint_factory(sharded=True), tmp_path / "sharded"))
    _edit_json(folder / "model.safetensors.index.json",
               lambda d: d["weight_map"].update({"model.norm.weight": "../evil.safetensors"}))  # fmt: skip
    with pytest.raises(UserError, match=r"outside"):
        _convert(folder, tmp_path)


def test_shard_missing(checkpoint_factory, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(checkpoint_factory(sharded=True), tmp_path / "sharded"))
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(UserError, match=r"model-00002-of-00002\.safetensors is missing"):
        _convert(folder, tmp_path)


def test_unknown_quant_lists_the_choices(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown quantization 'q3_k'.*q4_k_m"):
        _convert(tiny_checkpoint, tmp_path, quant="q3_k")


def test_existing_output_needs_force(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(UserError, match="already exists; use force=True"):
        convert(tiny_checkpoint, out, quant="f32")
    assert out.read_bytes() == b"precious"
    convert(tiny_checkpoint, out, quant="f32", force=True)
    assert read_gguf_metadata(out).fields[gguf.Keys.General.FILE_TYPE] == gguf.LlamaFileType.ALL_F32


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_interrupted_conversion_leaves_nothing(tiny_checkpoint: Path, tmp_path: Path, monkeypatch, quant: str) -> None:
    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline_module, "_encoded_blocks", explode)
    with pytest.raises(KeyboardInterrupt):
        _convert(tiny_checkpoint, tmp_path, quant=quant)
    assert list(tmp_path.iterdir()) == [], "no partial output, temp or intermediate file survives"


def test_rows_off_the_block_size_fall_back_to_f16(checkpoint_factory, tmp_path: Path) -> None:
    # hidden 48 is not a multiple of Q8_0's 32-value blocks; ffn 96 is, so only ffn_down stays Q8_0.
    out = _convert(checkpoint_factory(hidden=48, ffn=96, heads=4, kv_heads=2), tmp_path, quant="q8_0")
    types = {t.name: gguf.GGMLQuantizationType(t.type) for t in read_gguf_metadata(out).tensors if len(t.shape) == 2}
    assert types.pop("blk.0.ffn_down.weight") == types.pop("blk.1.ffn_down.weight") == gguf.GGMLQuantizationType.Q8_0
    assert set(types.values()) == {gguf.GGMLQuantizationType.F16}


def test_hub_offline_without_cache_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(UserError, match=r"MIDI-LLM_Llama-3\.2-1B is not in the local.*`hf download slseanwu/") as error:
        _convert("slseanwu/MIDI-LLM_Llama-3.2-1B", tmp_path)
    # The command it names is the one huggingface-hub installs (0.34 and later ship `hf`; 1.x only `hf`).
    assert shutil.which("hf", path=str(Path(sys.executable).parent)) and "huggingface-cli" not in str(error.value)


@pytest.mark.parametrize("source", ["no/such/folder", "./missing", "two words/x"])
def test_source_that_is_neither_folder_nor_repo(tmp_path: Path, monkeypatch, source: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="neither a local folder nor a Hugging Face repo id"):
        _convert(source, tmp_path)


def test_source_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="is a file; give the checkpoint folder"):
        _convert(tmp_path / "model.safetensors", tmp_path)


def test_cli_prints_one_error_line(checkpoint: Path, tmp_path: Path, capsys) -> None:
    (checkpoint / "config.json").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(checkpoint), "-o", str(tmp_path / "x.gguf"), "--quant", "f32"])
    assert exit_info.value.code == UserError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "config.json is missing" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_symlink_out_of_the_folder_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    (checkpoint / "config.json").rename(outside)
    (checkpoint / "config.json").symlink_to(outside)
    with pytest.raises(UserError, match=r"config\.json is a symlink to .*outside the checkpoint folder"):
        _convert(checkpoint, tmp_path)


def test_hub_cache_snapshot_converts_offline(tiny_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    # The HF cache layout: snapshots/<commit>/<file> are symlinks into ../../blobs; that is expected.
    repo_dir = tmp_path / "hf" / "hub" / "models--someone--tiny-midi"
    snapshot = repo_dir / "snapshots" / ("ab" * 20)
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("ab" * 20)
    for i, source in enumerate(sorted(tiny_checkpoint.iterdir())):
        blob = repo_dir / "blobs" / f"blob{i}"
        shutil.copy(source, blob)
        (snapshot / source.name).symlink_to(Path("../..") / "blobs" / blob.name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    out = tmp_path / "out.gguf"
    result = convert("someone/tiny-midi", out, quant="f32")
    assert (result.source_repo, result.source_revision) == ("someone/tiny-midi", "ab" * 20)
    assert read_gguf_metadata(out).fields[gguf_keys.SOURCE_REVISION] == "ab" * 20
