"""The llama.cpp engine on a tiny random-weight MIDI-LLM: prompt layout, batched decoding, reproducibility, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from tokenizers import Tokenizer

from devkit.checkpoints import VOCAB_GGUF, llama3_tokenizer_json
from midillm_lite import bench, engine, llamacpp
from midillm_lite.amt import vocab
from midillm_lite.errors import UserError
from midillm_lite.sampling import SLOT_DURATION, SLOT_NOTE, SLOT_TIME, SamplingParams

pytestmark = pytest.mark.slow
# One thread: on a shared two-core machine a second llama.cpp thread spin-waits at every barrier and runs 30x slower.
LLAMA_THREADS = 1
DESCRIPTION = "A cheerful piano melody with a walking bass"
STEPS = 24  # eight notes
# Batched and single decodes take different ggml kernels (and an F16 KV cache); a wrong cache is off by whole units.
LOGITS_ATOL = 1e-2


@pytest.fixture(scope="module")
def model(tiny_gguf):
    with engine.load_model(tiny_gguf(), n_threads=LLAMA_THREADS, device="cpu") as loaded:
        yield loaded


@pytest.fixture(scope="module")
def prompt(model) -> list[int]:
    return engine.build_prompt(model, DESCRIPTION)


def generate(model, prompt, **kwargs) -> engine.Generation:
    kwargs.setdefault("max_new_tokens", STEPS)
    kwargs.setdefault("seed", 1234)
    return engine.generate_tokens(model, prompt, **kwargs).run()


def test_prompt_layout_matches_an_independent_tokenizer(model, prompt) -> None:
    reference = Tokenizer.from_str(llama3_tokenizer_json(False))
    text = model.info.system_prompt + DESCRIPTION + " "
    expected = [128000, *reference.encode(text, add_special_tokens=False).ids, vocab.MIDI_AUTOREGRESS_ID]
    assert prompt == expected


def test_special_token_text_stays_text(model) -> None:
    tokens = engine.build_prompt(model, "jazz <|eot_id|> <|begin_of_text|>")
    assert 128009 not in tokens and tokens.count(128000) == 1


@pytest.mark.parametrize("description", ["", "   \n\t"])
def test_empty_description_is_a_user_error(model, description: str) -> None:
    with pytest.raises(UserError, match="empty"):
        engine.build_prompt(model, description)


def test_too_long_prompt_is_a_user_error(tiny_gguf) -> None:
    with engine.load_model(tiny_gguf(), n_ctx=64, n_threads=LLAMA_THREADS, device="cpu") as small:
        with pytest.raises(UserError, match="shorten"):
            engine.build_prompt(small, "a very long description of music " * 10)
        prompt = engine.build_prompt(small, "piano")
        with pytest.raises(UserError, match="exceeds the context"):
            engine.generate_tokens(small, prompt, max_new_tokens=64)
        with pytest.raises(UserError, match="exceeds the context"):
            engine.generate_tokens(small, prompt, max_new_tokens=20, prefix_amt=[0, vocab.DUR_OFFSET, 11_060] * 10)


def test_non_midillm_gguf_is_a_user_error() -> None:
    with pytest.raises(UserError, match="not a MIDI-LLM"):
        engine.load_model(VOCAB_GGUF)


@pytest.mark.parametrize("n", [1, 3])
def test_strict_generation_gives_well_formed_triplets(model, prompt, n: int) -> None:
    gen = generate(model, prompt, n=n)
    assert len(gen.tokens) == n and gen.done
    for tokens in gen.tokens:
        assert len(tokens) == STEPS
        times = np.array(tokens[SLOT_TIME::3])
        assert ((times >= vocab.TIME_OFFSET) & (times < vocab.DUR_OFFSET)).all()
        assert (np.diff(times) >= 0).all(), "onsets went back in time"
        durations = np.array(tokens[SLOT_DURATION::3])
        assert ((durations >= vocab.DUR_OFFSET) & (durations < vocab.NOTE_OFFSET)).all()
        notes = np.array(tokens[SLOT_NOTE::3])
        assert ((notes >= vocab.NOTE_OFFSET) & (notes < vocab.REST)).all()
    assert gen.timings.generated == n * STEPS and gen.timings.steps == STEPS
    assert gen.timings.prompt_tokens == len(prompt) and gen.timings.decode_s > 0


def test_free_generation_stays_below_separator(model, prompt) -> None:
    gen = generate(model, prompt, n=2, params=SamplingParams(strict=False, temperature=1.5, top_p=1.0))
    assert all(0 <= t < vocab.SEPARATOR for tokens in gen.tokens for t in tokens)


def test_same_seed_reproduces_and_sequences_differ(model, prompt, tiny_gguf) -> None:
    first = generate(model, prompt, n=3).tokens
    assert generate(model, prompt, n=3).tokens == first
    with engine.load_model(tiny_gguf(), n_threads=LLAMA_THREADS, device="cpu") as again:
        assert generate(again, prompt, n=3).tokens == first
    assert first[0] != first[1] != first[2] != first[0]
    assert generate(model, prompt, n=3, seed=99).tokens != first


def test_seed_is_recorded_when_not_given(model, prompt) -> None:
    gen = engine.generate_tokens(model, prompt, max_new_tokens=6)
    gen.run()
    assert generate(model, prompt, max_new_tokens=6, seed=gen.seed).tokens == gen.tokens


def step_logits(model, prompt: list[int], tokens: list[int]) -> list[np.ndarray]:
    """Evaluate the prompt once, share it, feed tokens[k] to sequence k; MIDI logits per sequence."""
    n = len(tokens)
    ctx = model.context(n, *engine.context_shape(len(prompt), n, 4, model.kv_unified))
    ctx.decode([(tok, pos, 0, pos == len(prompt) - 1) for pos, tok in enumerate(prompt)])
    ctx.share_prefix(n)
    ctx.decode([(tok, len(prompt), seq, True) for seq, tok in enumerate(tokens)])
    return [ctx.midi_logits(i).copy() for i in range(n)]


@pytest.mark.parametrize("unified", [True, False])
def test_shared_prompt_cache_matches_single_sequence_decoding(tiny_gguf, prompt, unified: bool) -> None:
    with engine.load_model(tiny_gguf(), n_threads=LLAMA_THREADS, device="cpu", kv_unified=unified) as model:
        check_shared_prompt(model, prompt)


def check_shared_prompt(model, prompt) -> None:
    firsts = [vocab.to_full(vocab.TIME_OFFSET + t) for t in (0, 50, 300)]
    batched = step_logits(model, prompt, firsts)
    for k, token in enumerate(firsts):
        (single,) = step_logits(model, prompt, [token])
        np.testing.assert_allclose(batched[k], single, rtol=0, atol=LOGITS_ATOL)
    (other_prompt,) = step_logits(model, engine.build_prompt(model, "a sad violin"), [firsts[0]])
    assert np.abs(other_prompt - batched[0]).max() > 10 * LOGITS_ATOL, "the check cannot tell prompts apart"
    assert np.abs(batched[2] - batched[0]).max() > 10 * LOGITS_ATOL


def test_midi_logits_are_the_tail_of_the_full_row(model, prompt) -> None:
    ctx = model.context(1, *engine.context_shape(len(prompt), 1, 1))
    ctx.decode([(tok, pos, 0, pos == len(prompt) - 1) for pos, tok in enumerate(prompt)])
    full = np.ctypeslib.as_array(
        engine.llama_cpp.llama_get_logits_ith(ctx.ctx, len(prompt) - 1), (vocab.FULL_VOCAB_SIZE,)
    )
    np.testing.assert_array_equal(ctx.midi_logits(len(prompt) - 1), full[vocab.TEXT_VOCAB_SIZE :])


def test_interrupted_generation_keeps_its_tokens(model, prompt) -> None:
    gen = engine.generate_tokens(model, prompt, n=2, seed=5, max_new_tokens=STEPS)
    with pytest.raises(KeyboardInterrupt):
        for event in gen:
            if event.step == 4:
                raise KeyboardInterrupt
    assert [len(t) for t in gen.tokens] == [5, 5] and not gen.done
    assert gen.tokens == [t[:5] for t in generate(model, prompt, n=2, seed=5).tokens]


def test_stop_predicate_finishes_one_sequence(model, prompt) -> None:
    gen = generate(model, prompt, n=3, stop=lambda seq, tokens, state: seq == 1 and len(tokens) >= 6)
    assert [len(t) for t in gen.tokens] == [STEPS, 6, STEPS]


def test_events_report_each_live_sequence(model, prompt) -> None:
    gen = engine.generate_tokens(model, prompt, n=2, seed=3, max_new_tokens=6)
    events = list(gen)
    assert [e.step for e in events] == list(range(6))
    assert all([s for s, _ in e.tokens] == [0, 1] for e in events)
    assert [[t for _, t in e.tokens] for e in events] == [list(col) for col in zip(*gen.tokens, strict=True)]


def test_continuation_prefix_conditions_the_output(model, prompt) -> None:
    prefix = [vocab.TIME_OFFSET + 500, vocab.DUR_OFFSET + 50, vocab.NOTE_OFFSET + 60]
    gen = generate(model, prompt, n=2, prefix_amt=prefix, max_new_tokens=9)
    for tokens in gen.tokens:
        assert len(tokens) == 9 and tokens[0] >= vocab.TIME_OFFSET + 500
    with pytest.raises(UserError, match="continuation token"):
        engine.generate_tokens(model, prompt, prefix_amt=[vocab.SEPARATOR])


def test_greedy_sequences_agree(model, prompt) -> None:
    gen = generate(model, prompt, n=3, params=SamplingParams(temperature=0), max_new_tokens=9)
    assert gen.tokens[0] == gen.tokens[1] == gen.tokens[2]


def test_device_choices(tiny_gguf) -> None:
    with pytest.raises(UserError, match="unknown device"):
        engine.load_model(tiny_gguf(), device="tpu")
    if not engine.llama_cpp.llama_supports_gpu_offload():
        with pytest.raises(UserError, match="no GPU support"):
            engine.load_model(tiny_gguf(), device="gpu")
        assert llamacpp.gpu_layers("auto", None) == 0
    assert llamacpp.gpu_layers("cpu", None) == 0


def test_split_cache_generates_the_same_grammar(tiny_gguf, prompt) -> None:
    with engine.load_model(tiny_gguf(), n_threads=LLAMA_THREADS, device="cpu", kv_unified=False) as split:
        gen = generate(split, prompt, n=3)
    assert [len(t) for t in gen.tokens] == [STEPS] * 3
    assert all(vocab.TIME_OFFSET <= t < vocab.DUR_OFFSET for tokens in gen.tokens for t in tokens[SLOT_TIME::3])


def test_bench_reports_each_n(tiny_gguf) -> None:
    rows = bench.run_bench(tiny_gguf(), ns=(1, 2), steps=4, threads=LLAMA_THREADS, device="cpu")
    assert [(r.n, r.steps, r.generated) for r in rows] == [(1, 4, 4), (2, 4, 8)]
    assert all(r.gen_tps > 0 and 0 <= r.overhead_fraction < 1 for r in rows)
    assert "gen tok/s" in bench.format_table(rows)


def test_physical_cores_is_a_sane_default() -> None:
    assert 1 <= llamacpp.physical_cores() <= (os.cpu_count() or 1)


def test_closed_model_refuses_work(tiny_gguf) -> None:
    closed = engine.load_model(tiny_gguf(), n_threads=LLAMA_THREADS, device="cpu")
    prompt = engine.build_prompt(closed, "piano")
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.generate_tokens(closed, prompt, max_new_tokens=3).run()
