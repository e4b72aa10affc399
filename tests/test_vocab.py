"""The AMT vocabulary layout, checked against the numbers published with AMT and MIDI-LLM."""

import subprocess
import sys

import pytest

from midillm_lite.amt import vocab


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("DUR_OFFSET", 10_000),
        ("NOTE_OFFSET", 11_000),
        ("MAX_NOTE", 16_512),
        ("REST", 27_512),
        ("CONTROL_OFFSET", 27_513),
        ("ADUR_OFFSET", 37_513),
        ("ANOTE_OFFSET", 38_513),
        ("SEPARATOR", 55_025),
        ("AUTOREGRESS", 55_026),
        ("ANTICIPATE", 55_027),
        ("AMT_VOCAB_SIZE", 55_028),
        ("MIDI_VOCAB_SIZE", 55_030),
        ("TEXT_VOCAB_SIZE", 128_256),
        ("FULL_VOCAB_SIZE", 183_286),
        ("MIDI_AUTOREGRESS_ID", 183_282),
    ],
)
def test_published_numbers(name, expected):
    assert getattr(vocab, name) == expected


def test_control_block_mirrors_event_block():
    assert vocab.ADUR_OFFSET - vocab.ATIME_OFFSET == vocab.DUR_OFFSET - vocab.TIME_OFFSET
    assert vocab.ANOTE_OFFSET - vocab.ADUR_OFFSET == vocab.NOTE_OFFSET - vocab.DUR_OFFSET
    assert vocab.CONTROL_END - vocab.ANOTE_OFFSET == vocab.REST - vocab.NOTE_OFFSET


@pytest.mark.parametrize("amt_id", [0, 1, vocab.REST, vocab.AUTOREGRESS, vocab.MIDI_VOCAB_SIZE - 1])
def test_full_and_amt_ids_round_trip(amt_id):
    assert vocab.to_amt(vocab.to_full(amt_id)) == amt_id
    assert vocab.to_amt(amt_id) == amt_id


def test_system_prompt_ends_with_the_space_before_the_description():
    assert vocab.SYSTEM_PROMPT.endswith("description: ")


def test_module_prints_its_table():
    out = subprocess.run(
        [sys.executable, "-m", "midillm_lite.amt.vocab"], capture_output=True, text=True, check=True
    ).stdout
    assert "autoregress" in out and "55026" in out and "183282" in out
