"""The demo's anticipation-mode training data against AMT's semantics, and a tiny train -> evaluate -> export run."""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from clirun import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_amt import ref_anticipate, ref_pad

from demo import data
from midillm_lite.amt import anticipation, ops, vocab
from midillm_lite.amt.codec import Note, decode_tokens, encode_notes

INSTRUMENTS = st.sampled_from([0, 40, 73, 128])
window_st = st.lists(
    st.builds(Note, st.integers(0, 9_999), st.integers(1, 999), INSTRUMENTS, st.integers(0, 127)),
    min_size=1,
    max_size=300,
).map(sorted)


def _window(seed: int, instruments: tuple[int, ...] = (0, 40), notes: int = 90) -> list[Note]:
    rng = random.Random(seed)
    onsets = np.cumsum([rng.choice([20, 25, 50, 150]) for _ in range(notes)])
    return sorted(Note(int(t), rng.choice([20, 50, 100]), rng.choice(instruments), rng.randrange(48, 80))
                  for t in onsets)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(window_st, st.data())
def test_anticipated_windows_are_amts_layout_and_hold_every_note(notes: list[Note], draw) -> None:
    """The tokens after ANTICIPATE are AMT's ops.pad + ops.anticipate of the window's events and controls (the
    tokenizer's order), and decode to exactly the window's notes."""
    mask = draw.draw(st.lists(st.booleans(), min_size=len(notes), max_size=len(notes)))
    tokens = data.anticipation_tokens(notes, mask)
    events = encode_notes([n for n, c in zip(notes, mask, strict=True) if not c]).tokens
    controls = [ops.as_control(t) for t in encode_notes([n for n, c in zip(notes, mask, strict=True) if c]).tokens]
    expected, left = ref_anticipate(ref_pad(events, max(n.onset for n in notes)), controls)
    assert tokens == (expected + left)[: data.MAX_TOKENS]
    if len(expected + left) <= data.MAX_TOKENS:
        assert Counter(decode_tokens(tokens).notes) == Counter(notes)


@settings(max_examples=40, deadline=None)
@given(window_st, st.integers(0, 2**32))
def test_span_copies_are_infill_requests(notes: list[Note], seed: int) -> None:
    """A span copy: the notes of 5 s from a note drawn from the window's last three quarters become controls, the
    window ends with them, and the tokens are AMT's pad + anticipate of the events up to the span's start, then the
    controls no event reached: what `gen --infill` lays out (`anticipation.layout`) and inserts while sampling."""
    kept, mask, start = data.span_controls(notes, random.Random(seed))
    assert start == min(n.onset for n, c in zip(kept, mask, strict=True) if c)
    assert any(n.onset == start for n in notes[int(len(notes) * data.SPAN_FROM) :])
    assert kept == [n for n in notes if n.onset < start + data.SPAN_TICKS]
    assert mask == [n.onset >= start for n in kept]
    events = encode_notes([n for n in kept if n.onset < start]).tokens
    controls = [ops.as_control(t) for t in encode_notes([n for n in kept if n.onset >= start]).tokens]
    expected, left = ref_anticipate(ref_pad(events, start), controls)
    tokens = data.anticipation_tokens(kept, mask, start)
    assert tokens == (expected + left)[: data.MAX_TOKENS]
    prompt, later = anticipation.layout(events, controls, start)
    assert tokens == (prompt + later)[: data.MAX_TOKENS]


@settings(max_examples=40, deadline=None)
@given(window_st, st.integers(0, 2**32))
def test_short_span_copies_are_infill_requests_with_a_short_history(notes: list[Note], seed: int) -> None:
    """A short span copy is a span copy of the same draw cut to SHORT_HISTORY ticks before its span and shifted to
    start at 0: the tokens `anticipation.layout` makes of it, like any infill request."""
    kept, _, start = data.span_controls(notes, random.Random(seed))
    cut, cut_mask, cut_start = data.short_span_controls(notes, random.Random(seed))
    origin = start - cut_start
    low, high = data.SHORT_HISTORY
    assert min(n.onset for n in cut) == 0 and 0 <= cut_start < high
    assert [Note(n.onset + origin, n.duration, n.instrument, n.pitch) for n in cut] == [
        n for n in kept if n.onset >= origin
    ]
    assert cut_mask == [n.onset >= cut_start for n in cut]
    assert not any(start - low <= n.onset < origin for n in kept)  # the cut is at least SHORT_HISTORY[0] back
    events = encode_notes([n for n in cut if n.onset < cut_start]).tokens
    controls = [ops.as_control(t) for t in encode_notes([n for n in cut if n.onset >= cut_start]).tokens]
    prompt, later = anticipation.layout(events, controls, cut_start)
    assert data.anticipation_tokens(cut, cut_mask, cut_start) == (prompt + later)[: data.MAX_TOKENS]


def test_a_span_draw_also_makes_short_copies() -> None:
    """A span draw makes the full span copy, then SHORT_SPANS short ones (trained as span); the others one copy."""
    rng = random.Random(3)
    notes = _window(4, notes=60)
    for _ in range(60):
        kinds = [kind for kind, _ in data.augment(notes, rng)]
        if kinds[0] in (data.SPAN, data.ONE_INSTRUMENT):
            assert kinds[1:] == [data.SHORT_SPAN] * data.SHORT_SPANS
        else:
            assert len(kinds) == 1
    assert data.base_mode(data.SHORT_SPAN) == data.SPAN


def test_instrument_controls_take_some_instruments_but_not_all() -> None:
    notes = _window(1, instruments=(0, 40, 73))
    for seed in range(30):
        mask = data.instrument_controls(notes, random.Random(seed))
        chosen = {n.instrument for n, c in zip(notes, mask, strict=True) if c}
        assert 1 <= len(chosen) <= 2
        assert all(c == (n.instrument in chosen) for n, c in zip(notes, mask, strict=True))
    assert data.instrument_controls(_window(1, instruments=(0,)), random.Random(0)) is None


def test_augmentation_shares_follow_the_stated_proportions() -> None:
    """Anticipated copies split as AUGMENTATIONS weighs them (a weight of 0: never drawn); a one-instrument window
    drawn for the instrument augmentation takes span controls (and trains as span)."""
    rng = random.Random(7)
    notes = _window(2, notes=40)
    kinds = Counter(data.augment(notes, rng)[0][0] for _ in range(900))
    total = sum(weight for _, weight in data.AUGMENTATIONS)
    for kind, weight in data.AUGMENTATIONS:
        assert abs(kinds[kind] / 900 - weight / total) < 0.06, kinds
    solo = Counter(data.augment(_window(3, instruments=(0,), notes=40), rng)[0][0] for _ in range(90))
    assert data.INSTRUMENT not in solo and solo[data.ONE_INSTRUMENT] > 0 and solo[data.SPAN] > 0
    assert (data.RANDOM in kinds) == (dict(data.AUGMENTATIONS)[data.RANDOM] > 0)
    assert data.base_mode(data.ONE_INSTRUMENT) == data.SPAN and data.base_mode(data.RANDOM) == data.RANDOM


def test_a_copy_with_every_note_a_control_is_not_made() -> None:
    """A window whose notes all start together has no event before its span: no copy."""
    notes = [Note(0, 10, 0, 60 + k) for k in range(8)]
    for seed in range(20):
        draws = random.Random(seed)
        draws.choices = lambda population, weights: [data.SPAN]  # type: ignore[method-assign]
        assert data.augment(notes, draws) == []


@settings(max_examples=50, deadline=None)
@given(kinds=st.lists(st.sampled_from(["autoregressive", "span", "instrument"]), max_size=30),
       k=st.integers(1, 5), only_two=st.booleans())  # fmt: skip
def test_a_stage_repeats_and_filters_windows_by_mode(kinds: list[str], k: int, only_two: bool) -> None:
    modes = frozenset({"autoregressive", "span"}) if only_two else None
    ids = list(range(len(kinds)))
    got = Counter(data.stage_windows(ids, kinds, modes, {"autoregressive": k}))
    for i, kind in enumerate(kinds):
        wanted = 0 if modes is not None and kind not in modes else k if kind == "autoregressive" else 1
        assert got[i] == wanted


def test_repeat_takes_mode_counts_and_refuses_the_rest() -> None:
    train = pytest.importorskip("demo.train", reason="the [train] extra (make demo-model installs it)")
    assert train.mode_repeats("autoregressive=3, span=2") == {"autoregressive": 3, "span": 2}
    for bad in ("autoregressive", "autoregressive=0", "span=x", "bogus=2", "span=-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            train.mode_repeats(bad)


def _tiny_data(folder: Path) -> tuple[list, list, list]:
    """14 windows, the last 4 held out; most training windows also get anticipated copies: (prompts, sequences,
    records) as saved."""
    rng = random.Random(0)
    prompts, sequences, records = [], [], []
    for k in range(14):
        notes = _window(k)
        held_out = k >= 10
        copies = [] if held_out or k % 5 == 4 else data.augment(notes, rng)
        for mode, tokens in copies or [(data.AUTOREGRESSIVE, None)]:
            end = vocab.MIDI_AUTOREGRESS_ID if tokens is None else vocab.MIDI_ANTICIPATE_ID
            prompts.append([128000, 791 + k % 3, 6710, end])
            sequences.append(encode_notes(notes).tokens if tokens is None else tokens)
            records.append({"split": "test" if held_out else "train", "mode": mode, "caption": "A piece."})
    assert sum(r["mode"] != data.AUTOREGRESSIVE for r in records) >= 4
    folder.mkdir()
    data._save(folder, prompts, sequences, records)
    return prompts, sequences, records


@pytest.mark.slow
def test_a_teacher_pulls_only_the_autoregressive_windows(tmp_path: Path) -> None:
    """`demo.train --teacher`: the KL term sees the autoregressive windows' triplets only, and is zero where the
    student is the teacher (the first step, started from the teacher itself: everything lines up)."""
    torch = pytest.importorskip("torch", reason="the [train] extra (make demo-model installs it)")
    from demo import train
    from demo.model import Shape, distill_kl, make_batch, scored_logits

    _tiny_data(tmp_path / "data")
    shape = Shape(hidden=32, layers=1, heads=2, kv_heads=2, ffn=64)
    kwargs = dict(shape=shape, steps=2, batch_tokens=4096, lr=3e-3, seed=0, max_minutes=5, eval_every=100, threads=1)
    train.train(tmp_path / "data", tmp_path / "first", **kwargs)
    teacher = tmp_path / "first" / "model.pt"
    history = train.train(tmp_path / "data", tmp_path / "second", init=teacher, teacher=teacher, **kwargs)
    assert history["teacher"] == "model.pt" and history["train"][0]["kl"] == pytest.approx(0, abs=1e-6)
    assert history["train"][1]["kl"] > 0  # one update later the student has moved
    from demo import card

    bullet = card.training_bullet(history)
    assert (
        "all windows at peak learning rate 0.003, its autoregressive predictions held to model.pt's (KL x 1) "
        "from there" in bullet
    ), bullet

    dataset = train.Dataset.load(tmp_path / "data")
    ids = dataset.indices(False)
    examples = [dataset.example(i) for i in ids]
    rows = train.autoregressive_rows(examples)
    autoregressive = [p[-1] == vocab.MIDI_AUTOREGRESS_ID for p, _ in examples]
    assert 0 < sum(autoregressive) < len(examples)
    scored = [int(((e[0::3] < vocab.CONTROL_OFFSET) | (e[0::3] >= vocab.CONTROL_END)).sum()) for _, e in examples]
    assert rows.tolist() == [a for a, n in zip(autoregressive, scored, strict=True) for _ in range(n)]
    model = train.load_model(teacher)
    with torch.no_grad():
        logits = scored_logits(model, make_batch(model.compact, examples), strict=False)
        shifted = [x.roll(1, dims=-1) for x in logits]
        assert float(distill_kl(logits, logits, rows)) == pytest.approx(0, abs=1e-3)
        assert float(distill_kl(shifted, logits, torch.zeros_like(rows))) == 0
        assert float(distill_kl(shifted, logits, rows)) > 1


@pytest.mark.slow
def test_a_tiny_anticipation_run_trains_measures_and_exports(tmp_path: Path, capsys) -> None:
    """Anticipation windows train, the with/without-controls CE runs, and the export converts to a GGUF whose
    logits over an ANTICIPATE sequence with controls match torch's (the control and mode rows made it out)."""
    torch = pytest.importorskip("torch", reason="the [train] extra (make demo-model installs it)")
    from demo import anticipation_eval, export, train
    from demo.model import Shape

    prompts, sequences, records = _tiny_data(tmp_path / "data")
    shape = Shape(hidden=32, layers=1, heads=2, kv_heads=2, ffn=64)
    history = train.train(tmp_path / "data", tmp_path / "train", shape=shape, steps=2, batch_tokens=4096, lr=3e-3,
                          seed=0, max_minutes=5, eval_every=100, threads=1)  # fmt: skip
    assert history["steps"] == 2 and all(np.isfinite(r["loss"]) for r in history["train"])
    model = train.load_model(tmp_path / "train" / "model.pt")
    dataset = train.Dataset.load(tmp_path / "data")
    held = dataset.indices(True)
    from demo import evaluate

    # The baselines and data figures read anticipation-mode training windows as their notes (controls, REST aside).
    assert 0 < evaluate.unigram_ce(dataset, dataset.indices(False), held)["ce"] < 12
    reach = evaluate.data_reach(dataset, dataset.indices(False))
    assert reach["busiest_max"] == max(max(Counter(n.onset for n in _window(k)).values()) for k in range(10))
    for planner in (anticipation_eval.infill_plan, anticipation_eval.accompany_plan):
        ce = anticipation_eval.control_ce(model, dataset.prompts, dataset.events, held, planner)
        assert ce["windows"] == 4 and ce["tokens"] > 0
        variants = (anticipation_eval.WITH, anticipation_eval.NO_CONTROLS, anticipation_eval.AUTOREGRESSIVE)
        assert all(0 < ce[name] < 12 for name in variants), ce
    steps = anticipation_eval.span_end_steps(model, dataset.prompts, dataset.events, held)
    assert steps["positions"] > 0 and steps["data"] > 0, steps
    assert all(0 <= steps[name] < vocab.MAX_TIME for name in (anticipation_eval.WITH, anticipation_eval.NO_CONTROLS))

    folder = export.write_hf_folder(model, tmp_path / "hf")
    gguf = tmp_path / "demo.gguf"
    code, _, stderr = run_cli(["convert", str(folder), "-q", "f32", "-o", str(gguf)], capsys)
    assert code == 0, stderr
    planned = anticipation_eval.infill_plan(anticipation_eval.window_notes(dataset.events[held[0]]))
    _, seq, _ = anticipation_eval.sequences(anticipation_eval.window_notes(dataset.events[held[0]]), planned)[
        anticipation_eval.WITH
    ]
    assert any(ops.is_control(t) for t in seq)
    ids = [*prompts[held[0]][:-1], vocab.MIDI_ANTICIPATE_ID, *(vocab.TEXT_VOCAB_SIZE + np.array(seq[:300]))]
    llm = evaluate._llama(gguf, len(ids) + 8)
    llm.eval(ids)
    scores = np.asarray(llm.scores[: len(ids)])
    with torch.no_grad():
        table = model.table()
        rows = torch.from_numpy(model.compact.rows_of(np.array(ids)))[None]
        hidden = model.hidden_states(rows, table)[0]
        full = (hidden @ table.T).numpy()  # logits over every compact row
    columns = model.compact.full_ids()
    np.testing.assert_allclose(scores[:, columns], full, rtol=0, atol=2e-3 * np.abs(full).max())
    # And back: the F32 file read as the network it was exported from (a later stage can start from a shipped GGUF).
    back = export.read_gguf(gguf, model.compact, seed=model.seed)
    with torch.no_grad():
        # the arrival-time rows up to the codes read_gguf leaves out (LSTSQ_RCOND): the CE below is the file's
        np.testing.assert_allclose(back.table().numpy(), table.numpy(), rtol=0, atol=1e-3)
        for name, value in model.state_dict().items():  # the time maps' images are in the table
            if not name.endswith("time.weight"):
                np.testing.assert_allclose(back.state_dict()[name].numpy(), value.numpy(), atol=1e-5, err_msg=name)
            else:  # fitted, not copied: no larger than the trained map (an exact fit of the first release's file
                # has entries near 7,000, which bf16 autocast turned into arrival-time CEs of hundreds of nats)
                assert back.state_dict()[name].norm() <= 1.001 * value.norm(), name
    bf16 = [train.evaluate(m, dataset, held, 4096, True)["ce"] for m in (model, back)]
    assert bf16[1] == pytest.approx(bf16[0], abs=0.02)  # training from a file under bf16 autocast sees its network
    from_file = train.train(tmp_path / "data", tmp_path / "from-gguf", shape=shape, steps=1, batch_tokens=4096,
                            lr=1e-3, seed=0, max_minutes=5, eval_every=100, threads=1, init=gguf)  # fmt: skip
    before = train.evaluate(model, dataset, held, 4096, False)["ce"]  # the probe is every held-out window here
    assert from_file["held_out"][0]["ce"] == pytest.approx(before, abs=1e-3)  # it started from the file's network

    # `--infill` through the public API on the held-out windows, and the card's text from what was measured.
    captions = ["A piece for piano and strings."] * len(records)
    checks = anticipation_eval.infill_checks(gguf, captions, dataset.events, held, pieces=2, samples=2)
    assert checks["pieces"] == 2 and checks["kept_notes"] > 0
    assert checks["kept_unchanged"] == checks["kept_notes"]  # by construction, whatever the model writes
    assert checks["generated_inside"] == checks["generated_notes"]  # strict mode: from the start, cut at the end
    pytest.importorskip("matplotlib")
    from demo import card

    figures = {"infill_ce": ce, "accompany_ce": ce, "infill": checks}
    text = "\n".join(card.anticipation_section(figures) + card.anticipation_bullets(
        {"anticipation": data.anticipation_stats(records, sequences, 0.8)}))  # fmt: skip
    assert from_file["base"] == "demo.gguf" and history["base"] is None
    assert card.training_bullet(from_file).startswith("- Continued from the network of demo.gguf (the first release's")
    assert card.total_minutes(from_file) == pytest.approx(card.training_minutes(from_file) + card.BASE_MINUTES)
    assert f"kept notes unchanged in the output file {checks['kept_notes']:,} of {checks['kept_notes']:,}" in text
    assert "80% of them also get one copy" in text
    short = sum(r["mode"] == data.SHORT_SPAN for r in records)
    assert short > 0 and f"and {short:,} short span copies, the same shape cut to 10-20 s of events" in text, text

    # A second stage from the first (demo.train --init model.pt): the card tells both and plots one curve.
    later = train.train(tmp_path / "data", tmp_path / "stage2", shape=shape, steps=1, batch_tokens=4096, lr=1e-3,
                        seed=0, max_minutes=5, eval_every=100, threads=1, init=tmp_path / "train" / "model.pt",
                        modes=frozenset({data.SPAN, data.AUTOREGRESSIVE}))  # fmt: skip
    assert [stage["steps"] for stage in card.stages(later)] == [2, 1] and later["modes"] == ["autoregressive", "span"]
    bullet = card.training_bullet(later)
    assert "2 steps" in bullet and "on all windows at peak learning rate 0.003, then 1 steps" in bullet, bullet
    assert "the autoregressive and span windows at peak learning rate 0.001 from there" in bullet, bullet
    card.loss_plot(later, 5.0, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 183_285), min_size=1, max_size=12),
                          st.lists(st.integers(0, 55_029), max_size=20)), min_size=1, max_size=6))  # fmt: skip
def test_own_samples_read_back_as_saved(samples: list[tuple[list[int], list[int]]]) -> None:
    """demo.own_samples' file: every sample with a whole triplet comes back exactly, in order; none is lost."""
    import tempfile

    from demo import own_samples

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "own.npz"
        own_samples.save(samples, path)
        back = own_samples.read(path)
        assert sorted(Path(folder).iterdir()) == [path]  # the temporary name was renamed
    kept = [(p, t) for p, t in samples if len(t) >= 3]
    assert [(p.tolist(), t.tolist()) for p, t in back] == kept


@pytest.mark.slow
def test_own_samples_are_distilled_from_the_teacher(tmp_path: Path, monkeypatch, capsys) -> None:
    """`demo.train --own-samples`: the KL on the network's own music is zero while the student is the teacher and
    grows once it moves; the history and the card say so; without a teacher it is refused."""
    pytest.importorskip("torch", reason="the [train] extra (make demo-model installs it)")
    from demo import card, own_samples, train
    from demo.model import Shape

    _tiny_data(tmp_path / "data")
    shape = Shape(hidden=32, layers=1, heads=2, kv_heads=2, ffn=64)
    kwargs = dict(shape=shape, steps=2, batch_tokens=4096, lr=3e-3, seed=0, max_minutes=5, eval_every=100, threads=1)
    train.train(tmp_path / "data", tmp_path / "first", **kwargs)
    teacher = tmp_path / "first" / "model.pt"
    dataset = train.Dataset.load(tmp_path / "data")
    mine = [
        (p.tolist(), e.tolist())
        for p, e in (dataset.example(i) for i in dataset.indices(False))
        if p[-1] == vocab.MIDI_AUTOREGRESS_ID
    ]  # stand-ins for sampled music: event triplets only
    own_samples.save(mine, tmp_path / "own.npz")
    with pytest.raises(ValueError, match="needs a teacher"):
        train.train(tmp_path / "data", tmp_path / "x", init=teacher, own_samples=tmp_path / "own.npz", **kwargs)
    monkeypatch.setattr("sys.argv", ["demo.train", "--own-samples", str(tmp_path / "own.npz")])
    with pytest.raises(SystemExit) as refused:  # the command line says it in one line, before anything loads
        train.main()
    assert refused.value.code == 2 and "--own-samples needs --teacher" in capsys.readouterr().err
    history = train.train(tmp_path / "data", tmp_path / "second", init=teacher, teacher=teacher,
                          own_samples=tmp_path / "own.npz", own_weight=0.5, **kwargs)  # fmt: skip
    assert history["own_samples"] == "own.npz" and history["own_weight"] == 0.5
    assert history["train"][0]["own_kl"] == pytest.approx(0, abs=1e-6) and history["train"][1]["own_kl"] > 0
    assert "and on the network's own music (own.npz, KL x 0.5 per token) from there" in card.training_bullet(history)


def test_data_reach_sets_the_datas_density_beside_a_samples(tmp_path: Path) -> None:
    """`demo.evaluate.data_reach`: the share of windows past 90 s, of windows holding a full generation's notes,
    and the notes before 90 s in the windows that last that long (the card sets `make demo`'s samples beside it)."""
    pytest.importorskip("torch", reason="demo.evaluate reads the data through demo.train (the [train] extra)")
    from demo import card, evaluate, train

    def spread(count: int, until: int) -> list[Note]:  # `count` notes evenly up to tick `until`
        return [Note(k * until // max(count - 1, 1), 50, 0, 60) for k in range(count)]

    windows = [spread(data.MAX_NOTES, 6_000), spread(201, 9_500), spread(50, 3_000)]  # 190 of the 201 before 90 s
    prompts = [[128000, 791, vocab.MIDI_AUTOREGRESS_ID]] * len(windows)
    records = [{"split": "train", "mode": data.AUTOREGRESSIVE, "caption": "A piece."} for _ in windows]
    data._save(tmp_path, prompts, [encode_notes(w).tokens for w in windows], records)
    dataset = train.Dataset.load(tmp_path)
    reach = evaluate.data_reach(dataset, dataset.indices(False))
    before = sum(n.onset < evaluate.LATE_TICKS for n in windows[1])
    assert reach["late_share"] == pytest.approx(1 / 3) and reach["full_share"] == pytest.approx(1 / 3)
    assert reach["late_notes_mean"] == before == 190
    demo_row = [{"prompt": card.DEMO_PROMPT, "seconds": 90.0, "notes": 204.0}]
    line = card.data_density(reach, demo_row)
    assert "only 33% hold 682 notes" in line and "have 190 notes before 90 s on average" in line
    assert "(a `make demo` sample: 204)" in line and card.data_density({"late_share": 0.3}, demo_row) == ""


def test_the_card_reflows_prose_that_opens_with_inline_code() -> None:
    """`demo.card.reflow`: a paragraph that starts with inline code is prose and is wrapped; fenced code, tables and
    headings stay as written."""
    pytest.importorskip("torch", reason="demo.card imports demo.train (the [train] extra)")
    from demo import card

    prose = "`--infill` on 24 windows: " + "kept notes unchanged " * 12
    fenced = "```sh\n" + "make demo " * 20 + "\n```"
    table = "| a | b |\n|---|---|\n| " + "x " * 80 + "| y |"
    out = card.reflow("\n\n".join(["# A heading " + "h " * 70, prose, fenced, table]))
    heading, wrapped, code, kept = out.split("\n\n")
    assert heading.startswith("# A heading") and "\n" not in heading
    assert wrapped.startswith("`--infill` on") and max(map(len, wrapped.split("\n"))) <= card.WIDTH
    assert wrapped.count("\n") >= 1 and " ".join(wrapped.split()) == " ".join(prose.split())
    assert code == fenced and kept == table
