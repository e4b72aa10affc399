"""The GGUF tokenizer: AMT token names, token types, and llama.cpp tokenizing exactly like Hugging Face's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
from midillm_lite.convert import amt_token_name
from midillm_lite.convert.tokenizer import build_vocabulary

from devkit.checkpoints import llama3_tokenizer_json, midi_token_text
from midillm_lite.amt import vocab
from midillm_lite.errors import UserError
from midillm_lite.modelinfo import read_gguf_metadata

PROMPTS = [
    "A cheerful piano melody in C major, 120 bpm.",
    "jazz   trio:  piano,double-bass & drums!!! (swing)",
    "Numbers 1234567 and 3.14159, 42nd street; 1/2-time",
    "Café crème, naïve façade — Ünïcödé accents",
    "日本の伝統音楽、琴と尺八。中文描述：悲伤的小提琴",
    "emoji 🎹🎻🥁 and 👍🏽 mixed",
    "line one\nline two\n\n\ttabbed\r\nwindows",
    "    leading spaces and trailing   ",
    "don't won't it's I'M we'LL you'VE",
    "<|begin_of_text|> and <|eot_id|> written in the text",
    "",
]


def test_amt_names_cover_every_midi_id_once() -> None:
    names = [amt_token_name(i) for i in range(vocab.MIDI_VOCAB_SIZE)]
    assert len(set(names)) == vocab.MIDI_VOCAB_SIZE
    assert names[123] == "<|amt_time_123|>"
    assert names[vocab.DUR_OFFSET + 40] == "<|amt_dur_40|>"
    assert names[vocab.NOTE_OFFSET + 25 * vocab.MAX_PITCH + 64] == "<|amt_note_i25_p64|>"
    assert names[vocab.NOTE_OFFSET + vocab.DRUM_INSTRUMENT * vocab.MAX_PITCH + 36] == "<|amt_note_i128_p36|>"
    assert names[vocab.REST] == "<|amt_rest|>"
    assert names[vocab.ATIME_OFFSET + 7] == "<|amt_ctrl_time_7|>"
    assert names[vocab.ADUR_OFFSET + 9] == "<|amt_ctrl_dur_9|>"
    assert names[vocab.ANOTE_OFFSET + 1] == "<|amt_ctrl_note_i0_p1|>"
    assert names[vocab.SEPARATOR] == "<|amt_separator|>"
    assert names[vocab.AUTOREGRESS] == "<|amt_autoregress|>"
    assert names[vocab.ANTICIPATE] == "<|amt_anticipate|>"
    assert names[vocab.MIDI_VOCAB_SIZE - 1] == "<|amt_reserved_1|>"
    with pytest.raises(ValueError):
        amt_token_name(vocab.MIDI_VOCAB_SIZE)


@pytest.mark.parametrize("midi_tokens", [True, False])
def test_vocabulary_types_and_names(midi_tokens: bool) -> None:
    words = build_vocabulary(json.loads(llama3_tokenizer_json(midi_tokens)), {}, vocab_size=vocab.FULL_VOCAB_SIZE,
                             bos_id=128000, eos_ids=(128001, 128009))  # fmt: skip
    assert len(words.tokens) == len(words.types) == vocab.FULL_VOCAB_SIZE
    assert (words.bos_id, words.eos_id, words.eot_id, words.add_bos) == (128000, 128001, 128009, True)
    assert words.types[128000] == words.types[128255] == gguf.TokenType.CONTROL
    assert words.types[1000] == gguf.TokenType.NORMAL
    assert words.types[vocab.MIDI_AUTOREGRESS_ID] == gguf.TokenType.USER_DEFINED
    autoregress = words.tokens[vocab.MIDI_AUTOREGRESS_ID]
    assert autoregress == (midi_token_text(vocab.MIDI_AUTOREGRESS_ID) if midi_tokens else "<|amt_autoregress|>")
    assert words.midi_named == (0 if midi_tokens else vocab.MIDI_VOCAB_SIZE)
    assert len(words.merges) == 280_147


def test_wrong_vocab_size_is_explained() -> None:
    with pytest.raises(UserError, match=r"vocab_size 128256.*183286"):
        build_vocabulary(json.loads(llama3_tokenizer_json(False)), {}, vocab_size=128_256, bos_id=1, eos_ids=())


def test_non_bpe_tokenizer_is_refused() -> None:
    with pytest.raises(UserError, match="'Unigram'"):
        build_vocabulary({"model": {"type": "Unigram", "vocab": {}}}, {}, vocab_size=vocab.FULL_VOCAB_SIZE,
                         bos_id=None, eos_ids=())  # fmt: skip


@pytest.mark.parametrize("midi_tokens", [True, False], ids=["midi-in-tokenizer", "midi-named-by-converter"])
def test_gguf_token_names(tiny_gguf, midi_tokens: bool) -> None:
    path = tiny_gguf("f32", midi_tokens_in_tokenizer=midi_tokens)
    fields = read_gguf_metadata(path, arrays={gguf.Keys.Tokenizer.LIST}).fields
    tokens = fields[gguf.Keys.Tokenizer.LIST]
    name = midi_token_text if midi_tokens else (lambda i: amt_token_name(vocab.to_amt(i)))
    for token_id in (vocab.TEXT_VOCAB_SIZE, vocab.to_full(vocab.NOTE_OFFSET + 60), vocab.MIDI_AUTOREGRESS_ID):
        assert tokens[token_id] == name(token_id)
    assert tokens[128009] == "<|eot_id|>"
    assert fields[gguf.Keys.Tokenizer.MODEL] == "gpt2"
    assert fields[gguf.Keys.Tokenizer.PRE] == "llama-bpe"
    assert fields[gguf.Keys.Tokenizer.EOT_ID] == 128009


@pytest.mark.slow
@pytest.mark.parametrize("midi_tokens", [True, False], ids=["midi-in-tokenizer", "midi-named-by-converter"])
def test_llama_cpp_tokenizes_like_hugging_face(tiny_gguf, checkpoint_factory, midi_tokens: bool) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from llama_cpp import Llama

    folder: Path = checkpoint_factory(midi_tokens_in_tokenizer=midi_tokens)
    reference = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    llm = Llama(model_path=str(tiny_gguf("f32", midi_tokens_in_tokenizer=midi_tokens)), vocab_only=True,
                verbose=False)  # fmt: skip
    prompts = [*PROMPTS, vocab.SYSTEM_PROMPT + "A cheerful piano melody "]
    if midi_tokens:  # added (non-special) tokens are matched inside text by both tokenizers
        prompts.append(f"notes {midi_token_text(vocab.MIDI_AUTOREGRESS_ID)}{midi_token_text(128300)} end")
    for prompt in prompts:
        # Hugging Face's encode prepends BOS (post-processor) and matches added tokens in the text, special ones
        # included; llama.cpp does the same with add_bos and special=True.
        expected = reference.encode(prompt).ids
        assert llm.tokenize(prompt.encode(), add_bos=True, special=True) == expected, prompt
        assert llm.detokenize(expected[1:], special=True).decode() == prompt
