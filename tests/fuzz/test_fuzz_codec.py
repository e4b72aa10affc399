"""Fuzz the token decoder: any list of integers -> notes and a valid MIDI file, never an exception."""

from __future__ import annotations

import io

import mido
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from midillm_lite.amt import vocab
from midillm_lite.amt.codec import decode_tokens
from midillm_lite.amt.midi import midi_bytes
from midillm_lite.amt.transcode import tokens_to_midi

# Ids at and around every block boundary of the AMT layout, in AMT and in full-vocabulary numbering.
_EDGES = [
    vocab.TIME_OFFSET, vocab.DUR_OFFSET, vocab.NOTE_OFFSET, vocab.REST, vocab.CONTROL_OFFSET, vocab.ADUR_OFFSET,
    vocab.ANOTE_OFFSET, vocab.CONTROL_END, vocab.SEPARATOR, vocab.AUTOREGRESS, vocab.ANTICIPATE, vocab.AMT_VOCAB_SIZE,
    vocab.MIDI_VOCAB_SIZE,
]  # fmt: skip
BOUNDARIES = sorted({e + d + base for e in _EDGES for d in (-1, 0, 1) for base in (0, vocab.TEXT_VOCAB_SIZE)})


def _triplet() -> st.SearchStrategy[list[int]]:
    """A well-formed note triplet, so that long runs of music (segments, many instruments) are reached."""
    return st.tuples(
        st.integers(vocab.TIME_OFFSET, vocab.DUR_OFFSET - 1),
        st.integers(vocab.DUR_OFFSET, vocab.NOTE_OFFSET - 1),
        st.integers(vocab.NOTE_OFFSET, vocab.REST),
    ).map(list)


TOKEN = st.one_of(
    st.integers(),  # any Python int: negative, huge, beyond 64 bits
    st.integers(-1, vocab.FULL_VOCAB_SIZE + 1),
    st.sampled_from(BOUNDARIES),
    st.just(vocab.SEPARATOR),
)
SEQUENCE = st.lists(st.one_of(TOKEN.map(lambda t: [t]), _triplet()), max_size=400).map(
    lambda chunks: [t for chunk in chunks for t in chunk]
)


@fuzz_settings()
@given(SEQUENCE)
def test_any_integers_decode_to_a_valid_midi_file(tokens: list[int]) -> None:
    decoded = decode_tokens(tokens)
    midi, summary = tokens_to_midi(tokens)
    assert summary.notes == len(decoded.notes)
    data = midi_bytes(midi)
    back = mido.MidiFile(file=io.BytesIO(data))  # the file we write parses again
    assert back.type == 1
    note_ons = sum(1 for track in back.tracks for m in track if m.type == "note_on")
    assert note_ons == len(decoded.notes)
    assert all(0 <= n.pitch < vocab.MAX_PITCH and n.duration >= 0 and n.onset >= 0 for n in decoded.notes)


@fuzz_settings()
@given(st.lists(st.integers(-(2**70), 2**70), max_size=50))
def test_decoder_accepts_integers_of_any_size(tokens: list[int]) -> None:
    decoded = decode_tokens(tokens)
    assert len(decoded.notes) * vocab.TOKENS_PER_NOTE <= len(tokens)
