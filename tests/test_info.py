"""`midillm-lite info` and `read_model_info`: MIDI-LLM GGUFs described, anything else refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from clirun import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.checkpoints import VOCAB_GGUF
from midillm_lite import gguf_keys
from midillm_lite.amt import vocab
from midillm_lite.errors import UserError
from midillm_lite.layouts import LAYOUT_STANDARD
from midillm_lite.modelinfo import read_gguf_metadata, read_model_info

PLAIN_LLAMA = VOCAB_GGUF


def small_gguf(path: Path, *, arch: str = "llama", n_tokens: int = 3, midillm: bool = True) -> Path:
    """A tiny hand-made GGUF (a few keys, one tensor) for the error paths and the fuzzer."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_token_list([f"t{i}" for i in range(n_tokens)])
    if midillm:
        # The converter's own values (valid midillm.* keys): only the vocabulary is wrong.
        for name, value, kind in gguf_keys.converter_values(gguf_keys.Provenance("x", "x", "x", LAYOUT_STANDARD)):
            writer.add_key_value(name, value, kind)
    writer.add_tensor("w", np.arange(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_info_describes_a_converted_model(tiny_gguf, capsys) -> None:
    path = tiny_gguf("q8_0")
    code, out, _ = run_cli(["info", str(path)], capsys)
    assert code == 0
    assert "q8_0" in out and "183286 tokens (128256 text + 55030 MIDI)" in out
    assert vocab.SYSTEM_PROMPT.strip() in out and "top_p 0.98" in out
    assert f"({path.stat().st_size} bytes)" in out and "\ntensors            21" in out
    code, out, _ = run_cli(["info", str(path), "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["autoregress_token_id"] == vocab.MIDI_AUTOREGRESS_ID and data["n_tensors"] == 21


def test_plain_llama_gguf_is_not_midillm(capsys) -> None:
    code, out, err = run_cli(["info", str(PLAIN_LLAMA)], capsys)
    assert code != 0 and out == ""
    assert err.startswith("error: ") and "is not a MIDI-LLM GGUF" in err and "midillm-lite convert" in err


def test_wrong_vocabulary(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="3 tokens where its standard layout needs 183286"):
        read_model_info(small_gguf(tmp_path / "m.gguf"))


def test_other_architecture(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="architecture is 'gpt2', not llama"):
        read_model_info(small_gguf(tmp_path / "m.gguf", arch="gpt2"))


def test_truncated_model(tiny_gguf, tmp_path: Path) -> None:
    data = tiny_gguf("q8_0").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) - 4096])
    with pytest.raises(UserError, match=r"is truncated: tensor .* ends at byte"):
        read_model_info(tmp_path / "cut.gguf")
    (tmp_path / "head.gguf").write_bytes(data[:5000])
    with pytest.raises(UserError, match="truncated or corrupt"):
        read_model_info(tmp_path / "head.gguf")


@pytest.mark.parametrize(("content", "needle"), [(b"", "not a GGUF"), (b"PK\x03\x04zip!", "wrong magic"),
                                                 (b"GGUF\x09\0\0\0" + b"\0" * 16, "version 9")])  # fmt: skip
def test_not_gguf(tmp_path: Path, content: bytes, needle: str) -> None:
    (tmp_path / "x.gguf").write_bytes(content)
    with pytest.raises(UserError, match=needle):
        read_model_info(tmp_path / "x.gguf")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_model_info(tmp_path / "nope.gguf")


@pytest.fixture(scope="module")
def fuzz_seed(tmp_path_factory) -> bytes:
    return small_gguf(tmp_path_factory.mktemp("fuzz") / "seed.gguf").read_bytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_headers_only_raise_user_errors(fuzz_seed: bytes, tmp_path: Path, data) -> None:
    raw = bytearray(fuzz_seed)
    for _ in range(data.draw(st.integers(0, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(bytes(raw))
    try:
        meta = read_gguf_metadata(path)
    except UserError:
        return
    assert meta.data_offset <= meta.file_size or not meta.tensors
