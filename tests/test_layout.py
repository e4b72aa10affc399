"""The midi-head layout: what the split files hold, logits and tokens equal to the standard layout's, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np
import pytest
from clirun import run_cli
from midillm_lite.convert import convert

from midillm_lite import engine
from midillm_lite.amt import vocab
from midillm_lite.errors import UserError
from midillm_lite.layouts import LAYOUT_MIDI_HEAD, companion_path
from midillm_lite.modelinfo import read_gguf_metadata, read_model_info

pytestmark = pytest.mark.slow
DESCRIPTION = "A calm string quartet in D minor"
PREFIX = [0, vocab.DUR_OFFSET + 40, vocab.NOTE_OFFSET + 40 * 128 + 62, 25]  # a violin D, then a time
THREADS = 1


@pytest.fixture(scope="module")
def pair(tiny_gguf, tmp_path_factory):
    """{quant: (standard path, midi-head path)} for f32 and q8_0, split from the same standard files."""
    out = {}
    for quant in ("f32", "q8_0"):
        standard = tiny_gguf(quant)
        head = tmp_path_factory.mktemp("head") / f"tiny-{quant}-mh.gguf"
        convert(standard, head, layout=LAYOUT_MIDI_HEAD)
        out[quant] = (standard, head)
    return out


def midi_logits(path, description=DESCRIPTION, prefix=PREFIX) -> np.ndarray:
    with engine.load_model(path, n_threads=THREADS, device="cpu") as model:
        prompt = [*engine.build_prompt(model, description), *(vocab.to_full(t) for t in prefix)]
        ctx = model.context(1, 256, len(prompt))
        last = engine._decode_prompt(model, ctx, prompt)
        return ctx.midi_logits(last).copy()


def test_the_split_files(pair):
    standard, head = pair["f32"]
    info = read_model_info(head)
    assert info.layout == LAYOUT_MIDI_HEAD and info.n_vocab == vocab.MIDI_VOCAB_SIZE
    assert info.companion == str(companion_path(head)) and info.system_prompt == vocab.SYSTEM_PROMPT
    full, main, text = (tensors(p) for p in (standard, head, companion_path(head)))
    rows = vocab.TEXT_VOCAB_SIZE
    assert np.array_equal(main["token_embd.weight"], full["token_embd.weight"][rows:])
    assert np.array_equal(text["token_embd.weight"], full["token_embd.weight"][:rows])
    assert list(text) == ["token_embd.weight"] and set(main) == set(full)
    assert all(np.array_equal(main[name], full[name]) for name in full if name != "token_embd.weight")
    assert (
        read_gguf_metadata(companion_path(head), arrays=["tokenizer.ggml.tokens"]).fields["tokenizer.ggml.tokens"]
        == read_gguf_metadata(standard, arrays=["tokenizer.ggml.tokens"]).fields["tokenizer.ggml.tokens"][:rows]
    )


def tensors(path) -> dict[str, np.ndarray]:
    """Raw bytes of every tensor, one row of bytes per row of the matrix (our fast header reader + numpy)."""
    meta = read_gguf_metadata(path)
    data = np.fromfile(path, dtype=np.uint8)
    out = {}
    for t in meta.tensors:
        byte_shape = gguf.quant_shape_to_byte_shape(tuple(reversed(t.shape)), gguf.GGMLQuantizationType(t.type))
        start = meta.data_offset + t.offset
        out[t.name] = data[start : start + int(np.prod(byte_shape))].reshape(byte_shape[0], -1)
    return out


def test_f32_logits_agree(pair):
    standard, head = pair["f32"]
    a, b = midi_logits(standard), midi_logits(head)
    assert a.shape == b.shape == (vocab.MIDI_VOCAB_SIZE,)
    assert np.max(np.abs(a - b)) / np.max(np.abs(a)) <= 1e-4


def test_quantized_logits_are_identical(pair):
    # Same weights, same kernels, same batch shapes: not just the same top-1 but the same bits.
    standard, head = pair["q8_0"]
    for prefix in ([], PREFIX):
        a, b = midi_logits(standard, prefix=prefix), midi_logits(head, prefix=prefix)
        assert int(np.argmax(a)) == int(np.argmax(b)) and np.array_equal(a, b)


@pytest.mark.parametrize("quant", ["f32", "q8_0"])
def test_same_seed_same_tokens(pair, quant):
    runs = []
    for path in pair[quant]:
        with engine.load_model(path, n_threads=THREADS, device="cpu") as model:
            gen = engine.generate_tokens(model, engine.build_prompt(model, DESCRIPTION), n=3, seed=9, max_new_tokens=45)
            runs.append(gen.run().tokens)
    assert runs[0] == runs[1]


def test_convert_from_a_checkpoint_and_info(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    code, stdout, stderr = run_cli(["convert", str(tiny_checkpoint), "-o", str(out), "-q", "q8_0",
                                    "--layout", "midi-head"], capsys)  # fmt: skip
    assert code == 0, stderr
    assert stdout.startswith(f"wrote {out}: q8_0, midi-head layout, ") and "(+ m.text.gguf, " in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "m.text.gguf"]  # the standard intermediate is gone
    code, stdout, _ = run_cli(["info", str(out)], capsys)
    assert code == 0 and "midi-head (text companion: " in stdout
    code, _, stderr = run_cli(["convert", str(tiny_checkpoint), "-o", str(out), "--layout", "midi-head"], capsys)
    assert code == 2 and "already exists" in stderr


def test_bad_midi_head_files(pair, tmp_path, capsys):
    _, head = pair["f32"]
    lonely = tmp_path / "lonely.gguf"
    lonely.write_bytes(head.read_bytes())
    with pytest.raises(UserError, match="needs its text companion"):
        read_model_info(lonely)
    companion_path(lonely).write_bytes(companion_path(head).read_bytes()[:100_000])
    with pytest.raises(UserError, match="truncated"):
        engine.load_model(lonely, n_threads=THREADS, device="cpu")
    code, _, stderr = run_cli(["convert", str(head), "-o", str(tmp_path / "again.gguf"), "--layout", "midi-head"],
                              capsys)  # fmt: skip
    assert code == 2 and "not a standard-layout" in stderr
    code, _, stderr = run_cli(["convert", str(pair["f32"][0]), "-o", str(tmp_path / "x.gguf")], capsys)
    assert code == 2 and "already a GGUF" in stderr


def test_companion_truncated_while_loaded(pair, tmp_path):
    _, head = pair["q8_0"]
    model_copy, companion_copy = tmp_path / "m.gguf", tmp_path / "m.text.gguf"
    model_copy.write_bytes(head.read_bytes())
    companion_copy.write_bytes(companion_path(head).read_bytes())
    with engine.load_model(model_copy, n_threads=THREADS, device="cpu") as model:
        prompt = engine.build_prompt(model, DESCRIPTION)
        os.truncate(companion_copy, 200_000)
        with pytest.raises(UserError, match="changed on disk while in use"):
            engine.generate_tokens(model, prompt, n=1, seed=1, max_new_tokens=3).run()


def _swap_companion(model: os.PathLike, companion: os.PathLike, folder) -> os.PathLike:
    """A copy of `model` with `companion` beside it under the companion's expected name."""
    folder.mkdir()
    target = folder / "m.gguf"
    target.write_bytes(Path(model).read_bytes())
    companion_path(target).write_bytes(Path(companion).read_bytes())
    return target


def test_companion_of_another_model_is_refused_before_llama_cpp(pair, tmp_path, monkeypatch):
    # Issue 14: a companion copied from another conversion crashed llama.cpp (other width) or gave other music.
    _, f32_head = pair["f32"]
    _, q8_head = pair["q8_0"]
    swapped = _swap_companion(f32_head, companion_path(q8_head), tmp_path / "same-width")
    loads = []
    monkeypatch.setattr(engine.llama_cpp, "llama_model_load_from_file", lambda *a: loads.append(a))
    with pytest.raises(UserError, match="text companion of another model"):
        engine.load_model(swapped, n_threads=THREADS, device="cpu")
    assert loads == []  # refused before any C call


def test_companion_of_another_width_is_refused(tiny_gguf, pair, tmp_path, monkeypatch, capsys):
    # Files split before the pairing key existed (here: keys made equal) are still checked by width.
    from midillm_lite.convert import layout

    monkeypatch.setattr(layout, "_split_hash", lambda reader: "same", raising=False)
    narrow, wide = tmp_path / "narrow.gguf", tmp_path / "wide.gguf"
    layout.split_midi_head(pair["f32"][0], narrow)
    layout.split_midi_head(tiny_gguf("f32", hidden=128, ffn=256), wide)
    for model, companion in ((narrow, companion_path(wide)), (wide, companion_path(narrow))):
        swapped = _swap_companion(model, companion, tmp_path / model.stem)
        code, _, stderr = run_cli(["gen", "piano", "-m", str(swapped), "-n", "1", "--max-tokens", "3",
                                   "-o", str(tmp_path / "out"), "--threads", "1"], capsys)  # fmt: skip
        assert code == 2 and "-wide text embeddings but" in stderr and stderr.count("\n") == 1, stderr
