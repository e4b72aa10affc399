"""The demo data pipeline's torch- and music21-free parts: renderings, captions, windows, prompt ids, the split."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import LLAMA_THREADS
from hypothesis import given, settings
from hypothesis import strategies as st

from demo import captions
from demo.captions import ENSEMBLES, SOLO, PieceInfo, choose_rendering, tempo_word
from demo.data import MAX_NOTES, MIN_NOTES, CaptionTokenizer, is_held_out, render_notes, windows
from midillm_lite import engine
from midillm_lite.amt import vocab
from midillm_lite.amt.codec import Note, decode_tokens, encode_notes

PIECE = PieceInfo(collection="bach", genre="Baroque chorale", composer="J. S. Bach", title="bwv1.6", key="F major",
                  meter="4/4", bpm=120.0, voices=4)  # fmt: skip

notes_st = st.lists(
    st.builds(Note, st.integers(0, 40_000), st.integers(1, 2_000), st.integers(0, 5), st.integers(0, 127)),
    max_size=2_500,
).map(sorted)


@settings(max_examples=60, deadline=None)
@given(notes_st)
def test_windows_cover_the_notes_within_the_vocabulary(notes: list[Note]) -> None:
    parts = windows(notes)
    taken = 0
    for window in parts:
        assert 1 <= len(window) <= MAX_NOTES
        taken += len(window)
        if len(window) < MIN_NOTES:  # only the 100 s limit cuts a window short: the next note is past it
            assert notes[taken].onset - notes[taken - len(window)].onset >= vocab.MAX_TIME
        assert window[0].onset == 0
        assert all(0 <= n.onset < vocab.MAX_TIME for n in window)
        encoded = encode_notes(window)
        assert encoded.dropped_late == 0
        assert decode_tokens(encoded.tokens).repairs == {}
    # Windows are consecutive: only a tail shorter than MIN_NOTES is left out.
    assert len(notes) - sum(len(w) for w in parts) < MIN_NOTES


def test_windows_split_long_music_and_restart_time() -> None:
    notes = [Note(i * 20, 10, 0, 60) for i in range(1500)]  # 300 s at 5 notes a second
    parts = windows(notes)
    assert [len(w) for w in parts] == [500, 500, 500]  # each window stops short of 100 s
    assert parts[1][0] == Note(0, 10, 0, 60)


def test_render_maps_parts_to_the_ensemble_and_scales_time() -> None:
    quartet = next(e for e in ENSEMBLES if e.name == "string quartet")
    rendering = captions.Rendering(quartet, bpm=60.0, time_scale=2.0, caption="")
    notes = np.array([[0, 50, 0, 72], [100, 50, 3, 48], [100, 25, 2, 55]], dtype=np.int32)
    assert render_notes(notes, rendering) == [Note(0, 100, 40, 72), Note(200, 50, 41, 55), Note(200, 100, 42, 48)]


@pytest.mark.parametrize(("bpm", "word"), [(48, "slow"), (77.9, "slow"), (78, "moderate"), (120, "moderate"),
                                           (121, "fast"), (176, "fast")])  # fmt: skip
def test_tempo_words(bpm: float, word: str) -> None:
    assert tempo_word(bpm) == word


@settings(max_examples=200, deadline=None)
@given(voices=st.integers(1, 8), seed=st.integers(0, 2**32), original=st.booleans(), bpm=st.floats(30, 240))
def test_captions_name_the_rendering(voices: int, seed: int, original: bool, bpm: float) -> None:
    piece = PieceInfo(**{**PIECE.__dict__, "voices": voices, "bpm": bpm})
    rendering = choose_rendering(piece, random.Random(seed), original=original)
    text = rendering.caption
    assert tempo_word(rendering.bpm) in text
    words = rendering.ensemble.instruments(voices)
    assert rendering.ensemble.name in text.lower() or all(word in text.lower() for word in words)
    assert rendering.time_scale == pytest.approx(bpm / rendering.bpm)
    if voices == 1:
        assert rendering.ensemble in SOLO
    else:
        assert voices <= rendering.ensemble.max_voices
    if not original:
        low, high = captions.TEMPO_BANDS[tempo_word(rendering.bpm)]
        assert low <= rendering.bpm <= high


def test_held_out_split_is_by_piece_and_stable() -> None:
    ids = [f"bach/bwv{i}.mxl" for i in range(2000)]
    held = [i for i in ids if is_held_out(i)]
    assert 60 < len(held) < 140  # one in twenty
    assert held == [i for i in ids if is_held_out(i)]


@pytest.mark.slow
def test_training_prompts_are_the_ids_gen_feeds(tiny_gguf) -> None:
    """The captions' token ids must be exactly what `gen` builds from the same words, or training is wasted."""
    tokenizer = CaptionTokenizer()
    with engine.load_model(tiny_gguf(), n_threads=LLAMA_THREADS, device="cpu") as model:
        for text in ("A slow Baroque chorale by J. S. Bach in F# minor, played by a string quartet.",
                     "Fiddle tune for solo piano, fast tempo of 160 BPM.", "ünïcödé  spaces "):  # fmt: skip
            assert tokenizer.prompt(text) == engine.build_prompt(model, text)
