"""Slot masks, note bookkeeping and nucleus sampling, without a model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from midillm_lite import sampling
from midillm_lite.amt import ops, vocab
from midillm_lite.errors import UserError
from midillm_lite.sampling import NoteState, SamplingParams, allowed_ranges, pick, sample_next

GREEDY = SamplingParams(temperature=0.0)


def mask_of(ranges) -> np.ndarray:
    """The boolean mask that `ranges` stand for, built the slow way for comparison."""
    mask = np.zeros(vocab.MIDI_VOCAB_SIZE, dtype=bool)
    for lo, hi in ranges:
        mask[lo:hi] = True
    return mask


def note(instrument: int, pitch: int = 60) -> int:
    return vocab.NOTE_OFFSET + instrument * vocab.MAX_PITCH + pitch


def state_after(*tokens: int) -> NoteState:
    return NoteState().extend(tokens)


def test_slot_ranges_follow_the_triplet_grammar() -> None:
    assert allowed_ranges(NoteState()) == ((vocab.TIME_OFFSET, vocab.DUR_OFFSET),)
    assert allowed_ranges(state_after(5)) == ((vocab.DUR_OFFSET, vocab.NOTE_OFFSET),)
    assert allowed_ranges(state_after(5, vocab.DUR_OFFSET + 10)) == ((vocab.NOTE_OFFSET, vocab.REST),)


def test_note_slot_excludes_rest_controls_and_specials() -> None:
    mask = mask_of(allowed_ranges(state_after(5, vocab.DUR_OFFSET)))
    assert mask[vocab.NOTE_OFFSET] and mask[vocab.REST - 1]
    assert not mask[vocab.REST] and not mask[vocab.CONTROL_OFFSET :].any() and not mask[: vocab.NOTE_OFFSET].any()


def test_rest_closes_a_note_slot_only_when_asked() -> None:
    """Anticipation lets REST fill the note slot (AMT's padding); never the time or duration slot."""
    note_slot = state_after(5, vocab.DUR_OFFSET)
    assert allowed_ranges(note_slot, rest=True) == ((vocab.NOTE_OFFSET, vocab.REST + 1),)
    assert allowed_ranges(NoteState(), rest=True) == allowed_ranges(NoteState())
    assert allowed_ranges(state_after(5), rest=True) == allowed_ranges(state_after(5))
    chosen = frozenset({0, 73})
    ranges = allowed_ranges(note_slot, True, chosen, rest=True)
    assert ranges[:-1] == allowed_ranges(note_slot, True, chosen) and ranges[-1] == (vocab.REST, vocab.REST + 1)
    row = np.zeros(vocab.MIDI_VOCAB_SIZE, dtype=np.float32)
    row[vocab.REST] = 100.0
    with_rest = SamplingParams(temperature=0, rest=True)
    assert sample_next(row, note_slot, with_rest, np.random.default_rng(0)) == vocab.REST
    assert sample_next(row, note_slot, GREEDY, np.random.default_rng(0)) != vocab.REST


def test_onsets_never_go_back() -> None:
    state = state_after(vocab.TIME_OFFSET + 700, vocab.DUR_OFFSET + 5, note(0))
    assert allowed_ranges(state) == ((vocab.TIME_OFFSET + 700, vocab.DUR_OFFSET),)
    row = np.zeros(vocab.MIDI_VOCAB_SIZE, dtype=np.float32)
    row[vocab.TIME_OFFSET + 3] = 100.0  # the model would like to go back in time
    assert sample_next(row, state, GREEDY, np.random.default_rng(0)) >= vocab.TIME_OFFSET + 700


def test_state_tracks_instruments_and_drums() -> None:
    state = state_after(0, vocab.DUR_OFFSET, note(3), 0, vocab.DUR_OFFSET, note(vocab.DRUM_INSTRUMENT, 36))
    assert state.instruments == {3} and state.drums and state.slot == sampling.SLOT_TIME and state.position == 6


def full_band_state() -> NoteState:
    """Fifteen melodic instruments in use, next slot an instrument-pitch."""
    tokens: list[int] = []
    for instrument in range(0, 2 * sampling.MAX_MELODIC_INSTRUMENTS, 2):
        tokens += [vocab.TIME_OFFSET, vocab.DUR_OFFSET, note(instrument)]
    return state_after(*tokens, vocab.TIME_OFFSET, vocab.DUR_OFFSET)


def test_sixteenth_melodic_instrument_is_masked_but_drums_stay() -> None:
    state = full_band_state()
    mask = mask_of(allowed_ranges(state))
    playing = {i for i in range(sampling.MAX_MELODIC_INSTRUMENTS * 2) if i % 2 == 0}
    for instrument in range(vocab.MAX_INSTR):
        lo, hi = ops.note_range(instrument)
        expected = instrument in playing or instrument == vocab.DRUM_INSTRUMENT
        assert mask[lo:hi].all() == expected and mask[lo:hi].any() == expected, instrument
    row = np.zeros(vocab.MIDI_VOCAB_SIZE, dtype=np.float32)
    row[note(1)] = 100.0  # a new instrument: refused
    assert ops.instrument_of(sample_next(row, state, GREEDY, np.random.default_rng(0))) in playing | {
        vocab.DRUM_INSTRUMENT
    }
    row[note(vocab.DRUM_INSTRUMENT, 38)] = 200.0
    assert sample_next(row, state, GREEDY, np.random.default_rng(0)) == note(vocab.DRUM_INSTRUMENT, 38)


def test_free_mode_allows_everything_below_separator_anywhere() -> None:
    for state in (NoteState(), state_after(9000), state_after(1, vocab.DUR_OFFSET), full_band_state()):
        assert allowed_ranges(state, strict=False) == ((0, vocab.SEPARATOR),)
    row = np.zeros(vocab.MIDI_VOCAB_SIZE, dtype=np.float32)
    row[vocab.SEPARATOR :] = 1e6
    row[vocab.REST] = 1.0
    assert sample_next(row, NoteState(), SamplingParams(temperature=0, strict=False), np.random.default_rng(0)) == (
        vocab.REST
    )


def test_greedy_takes_the_argmax() -> None:
    assert pick(np.array([0.1, 3.0, 2.9, -5.0]), GREEDY, np.random.default_rng(0)) == 1
    assert pick(np.array([0.1, 3.0, 2.9]), SamplingParams(temperature=-1), np.random.default_rng(0)) == 1


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = np.array([0.05, 0.5, 0.3, 0.15])
    weights = probs / probs.max()
    order, cumulative = sampling.nucleus(weights, 0.8)
    assert order.tolist() == [1, 2]  # 0.5 + 0.3 reaches 0.8
    order, _ = sampling.nucleus(weights, 0.81)
    assert order.tolist() == [1, 2, 3]
    order, _ = sampling.nucleus(weights, 0.01)
    assert order.tolist() == [1]  # never empty
    assert math.isclose(cumulative[-1], 0.8 / 0.5)


def test_nucleus_widens_past_the_first_partition() -> None:
    weights = np.ones(1000)
    order, _ = sampling.nucleus(weights, 0.5)
    assert order.size == 500 and len(set(order.tolist())) == 500


def test_top_p_sampling_only_draws_from_the_nucleus() -> None:
    logits = np.log(np.array([0.05, 0.5, 0.3, 0.15]))
    params = SamplingParams(temperature=1.0, top_p=0.79)  # clear of the 0.8 boundary: exp(log()) rounds
    rng = np.random.default_rng(1)
    draws = {pick(logits, params, rng) for _ in range(300)}
    assert draws == {1, 2}


def test_top_k_limits_candidates() -> None:
    logits = np.array([1.0, 5.0, 4.0, 3.0, 2.0])
    rng = np.random.default_rng(2)
    draws = {pick(logits, SamplingParams(top_p=1.0, top_k=2), rng) for _ in range(300)}
    assert draws == {1, 2}


def test_temperature_sharpens() -> None:
    logits = np.array([0.0, 1.0])
    rng = np.random.default_rng(3)
    cold = sum(pick(logits, SamplingParams(temperature=0.05, top_p=1.0), rng) for _ in range(200))
    assert cold == 200


def test_same_seed_same_tokens_and_sequence_streams_ignore_n() -> None:
    row = np.random.default_rng(0).standard_normal(vocab.MIDI_VOCAB_SIZE).astype(np.float32)

    def run(rng: np.random.Generator) -> list[int]:
        state, out = NoteState(), []
        for _ in range(30):
            out.append(sample_next(row, state, SamplingParams(), rng))
            state.update(out[-1])
        return out

    assert run(sampling.sequence_rngs(7, 1)[0]) == run(sampling.sequence_rngs(7, 4)[0])
    assert run(sampling.sequence_rngs(7, 2)[1]) != run(sampling.sequence_rngs(7, 2)[0])
    assert run(sampling.sequence_rngs(7, 1)[0]) != run(sampling.sequence_rngs(8, 1)[0])


@pytest.mark.parametrize(
    "params",
    [SamplingParams(temperature=math.nan), SamplingParams(temperature=math.inf), SamplingParams(top_p=0.0),
     SamplingParams(top_p=1.5), SamplingParams(top_p=math.nan), SamplingParams(top_k=-1)],
)  # fmt: skip
def test_bad_params_are_user_errors(params: SamplingParams) -> None:
    with pytest.raises(UserError):
        params.validate()


def test_default_params_are_the_references() -> None:
    params = SamplingParams().validate()
    assert (params.temperature, params.top_p, params.top_k, params.strict) == (1.0, 0.98, 0, True)


def test_nan_logits_never_win() -> None:
    logits = np.array([np.nan, 1.0, np.nan])
    assert pick(logits, SamplingParams(), np.random.default_rng(0)) == 1


finite_logits = st.floats(allow_nan=False, allow_infinity=False, width=32)
amt_ids = st.integers(0, vocab.MIDI_VOCAB_SIZE - 1)
strict_history = st.lists(st.tuples(st.integers(0, vocab.MAX_TIME - 1), st.integers(0, vocab.MAX_INSTR - 1)))


@st.composite
def note_states(draw) -> NoteState:
    """A state reached through well-formed triplets, then 0-2 tokens into the next one."""
    state = NoteState()
    for time, instrument in draw(strict_history):
        state.extend([vocab.TIME_OFFSET + time, vocab.DUR_OFFSET, note(instrument)])
    return state.extend(draw(st.lists(amt_ids, max_size=2)) if draw(st.booleans()) else [])


@settings(max_examples=60, deadline=None)
@given(
    row=arrays(np.float32, vocab.MIDI_VOCAB_SIZE, elements=finite_logits, fill=st.floats(-50, 50, width=32)),
    state=note_states(),
    temperature=st.sampled_from([0.0, 0.01, 1.0, 3.0]),
    top_p=st.sampled_from([0.01, 0.5, 0.98, 1.0]),
    top_k=st.sampled_from([0, 1, 5, 100_000]),
    strict=st.booleans(),
    seed=st.integers(0, 2**32),
)  # fmt: skip
def test_sampled_id_is_always_allowed(row, state, temperature, top_p, top_k, strict, seed) -> None:
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, strict=strict).validate()
    ranges = allowed_ranges(state, strict)
    amt_id = sample_next(row, state, params, np.random.default_rng(seed))
    assert sampling.is_allowed(amt_id, ranges)
    if strict and state.slot == sampling.SLOT_TIME:
        assert amt_id - vocab.TIME_OFFSET >= state.last_onset
