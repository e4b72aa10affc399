"""The demo model's infilling and accompaniment figures: held-out CE of a span with its controls and without them,
and `--infill` outputs on held-out pieces (kept notes, new notes inside the span, onset density).

The sequences are the runtime's own: `amt.anticipation.plan` lays out the prompt's tokens and `ControlSchedule`
inserts the controls among the span's notes as `gen` inserts them while sampling; the span's notes stand in for the
sampled ones, padded with REST as AMT's sampler (and the training data) pad them. Two baselines score the same
notes: ANTICIPATE with the controls left out, and plain autoregressive continuation (AUTOREGRESS, the history, the
span: what `gen --continue` sees). REST triplets are inputs, never scored.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from midillm_lite.amt import anticipation, ops, vocab
from midillm_lite.amt.codec import Note, decode_tokens, encode_notes, shift_notes
from midillm_lite.amt.midi import midi_to_notes, notes_to_midi, read_midi, save_midi
from midillm_lite.sampling import NoteState

INFILL_MAX_TICKS = 15 * vocab.TIME_RESOLUTION  # the span: a third of the window, at most 15 s (make demo-infill's)
MIN_SPAN_NOTES = 3
WITH, NO_CONTROLS, AUTOREGRESSIVE = "with_controls", "anticipate_no_controls", "autoregressive"


def window_notes(events: np.ndarray) -> list[Note]:
    return decode_tokens(events.tolist()).notes


def infill_span(notes: list[Note]) -> tuple[int, int] | None:
    """[start, end) ticks: from a third of the window's last onset, to two thirds (at most 15 s); None when the
    span, the history or the controls after it would hold too few notes to measure."""
    last = max(n.onset for n in notes)
    start = last // 3
    end = min(2 * last // 3, start + INFILL_MAX_TICKS)
    inside = sum(start <= n.onset < end for n in notes)
    if inside < MIN_SPAN_NOTES or not any(n.onset < start for n in notes) or not any(n.onset >= end for n in notes):
        return None
    return start, end


def melody_instrument(notes: list[Note]) -> int | None:
    """The instrument with the highest mean pitch (the tune to accompany); None with one instrument."""
    pitches: dict[int, list[int]] = {}
    for n in notes:
        pitches.setdefault(n.instrument, []).append(n.pitch)
    if len(pitches) < 2:
        return None
    return max(pitches, key=lambda i: np.mean(pitches[i]))


Planned = tuple[anticipation.Anticipation, list[bool] | None]  # the request, and which notes it keeps in the span


def sequences(notes: list[Note], planned: Planned) -> dict[str, tuple[bool, list[int], np.ndarray]]:
    """Per variant: (anticipate?, AMT ids after the mode token, which triplets are scored: the span's notes)."""
    plan, keep = planned
    span = anticipation.split_notes(notes, plan.start, plan.end, keep).rewritten
    span_tokens = encode_notes(shift_notes(sorted(span, key=lambda n: n.onset), plan.window_start)).tokens
    history: list[int] = []
    for i in range(0, len(plan.prefix), 3):
        triplet = plan.prefix[i : i + 3]
        if not ops.is_control(triplet[0]) and triplet[2] != vocab.REST:
            history += triplet
    padded = anticipation.pad(history, plan.start_relative)  # the prefix's events
    # The span as AMT's sampler writes it: REST wherever a second passes without a note (inputs, not scored).
    span_padded = anticipation.pad(padded + span_tokens, 0)[len(padded) :]
    span_scored = [t != vocab.REST for t in span_padded[2::3]]
    seq, scored = list(plan.prefix), [False] * (len(plan.prefix) // 3)
    schedule = plan.schedule(1)
    state = NoteState(last_onset=plan.start_relative)  # as generate._anticipation_state
    for i, token in enumerate(span_padded):
        seq.append(token)
        state.update(token)
        if i % 3 == 2:
            scored.append(span_scored[i // 3])
            inserted = schedule(0, seq, state)
            seq += inserted
            state.extend(inserted)
            scored += [False] * (len(inserted) // 3)
    n_span = len(span_tokens) // 3
    return {
        WITH: (True, seq, np.array(scored)),
        NO_CONTROLS: (True, padded + span_padded, np.array([False] * (len(padded) // 3) + span_scored)),
        AUTOREGRESSIVE: (False, history + span_tokens, np.array([False] * (len(history) // 3) + [True] * n_span)),
    }


def infill_plan(notes: list[Note]) -> Planned | None:
    span = infill_span(notes)
    return None if span is None else (anticipation.plan(notes, *span), None)


def accompany_plan(notes: list[Note]) -> Planned | None:
    """The melody kept over the whole window (at most MAX_SPAN), the other parts rewritten."""
    melody = melody_instrument(notes)
    if melody is None:
        return None
    end = min(max(n.onset for n in notes) + 1, anticipation.MAX_SPAN)
    keep = anticipation.instrument_mask(notes, frozenset({melody}))
    return anticipation.plan(notes, 0, end, keep=keep, mode=anticipation.MODE_ACCOMPANY), keep


def variant_batches(model, prompts: list[np.ndarray], events: list[np.ndarray], ids: list[int], planner):
    """Per held-out window `planner` can lay out: (plan, {variant: one-example batch scoring the span's notes})."""
    from .model import make_batch

    for i in ids:
        notes = window_notes(events[i])
        if (planned := planner(notes)) is None:
            continue
        batches = {}
        for name, (anticipate, seq, scored) in sequences(notes, planned).items():
            prompt = prompts[i].copy()
            prompt[-1] = vocab.MIDI_ANTICIPATE_ID if anticipate else vocab.MIDI_AUTOREGRESS_ID
            batches[name] = make_batch(model.compact, [(prompt, np.array(seq, dtype=np.int64))], [scored])
        yield planned[0], batches


def control_ce(model, prompts: list[np.ndarray], events: list[np.ndarray], ids: list[int], planner) -> dict:
    """Strict-slot CE (nats per token) of the span's notes in each variant, over the held-out windows `planner`
    can lay out (same notes, same prompt words in every variant)."""
    import torch

    from .model import slot_losses

    slots: dict[str, np.ndarray] = {}  # per variant: summed CE of the time, duration and instrument-pitch slots
    tokens = windows = 0
    with torch.no_grad():
        for _, batches in variant_batches(model, prompts, events, ids, planner):
            windows += 1
            for name, batch in batches.items():
                slots[name] = slots.get(name, 0) + np.array([float(loss) for loss in slot_losses(model, batch)])
            tokens += batch.tokens  # the same span notes in every variant
    per_slot = {name: [round(float(x), 4) for x in v * 3 / max(tokens, 1)] for name, v in slots.items()}
    means = {name: float(v.sum()) / max(tokens, 1) for name, v in slots.items()}
    return {"windows": windows, "tokens": tokens, **means, "per_slot": per_slot}


def span_end_steps(model, prompts: list[np.ndarray], events: list[np.ndarray], ids: list[int]) -> dict:
    """In the infill span's last DELTA (where the controls arrive), the model's expected arrival-time step past the
    latest onset under the strict mask, per anticipation variant, and the data's: a model that reads the controls as
    "a gap comes" steps further than the data (the diagnostic behind demo/data.py's span copies)."""
    import torch

    expected: dict[str, list[float]] = {WITH: [], NO_CONTROLS: []}
    true: list[float] = []
    with torch.no_grad():
        table = model.table()
        for plan, batches in variant_batches(model, prompts, events, ids, infill_plan):
            for name in expected:
                batch = batches[name]
                keep = ~batch.rest
                h = model.hidden_states(batch.rows, table).reshape(-1, model.shape.hidden)
                logits = model.slot_logits(h[batch.positions[0][keep]], table, 0).float()
                ticks, floors, targets = torch.arange(logits.shape[1]), batch.floors[keep], batch.targets[0][keep]
                probs = logits.masked_fill(ticks[None] < floors[:, None], float("-inf")).softmax(-1)
                late = targets >= plan.end_relative - vocab.DELTA
                expected[name] += (probs @ ticks.float() - floors)[late].tolist()
                if name == WITH:
                    true += (targets - floors)[late].tolist()
    return {"positions": len(true), "data": float(np.mean(true)), **{k: float(np.mean(v)) for k, v in expected.items()}}


def infill_checks(model_path: Path, captions: list[str], events: list[np.ndarray], ids: list[int], *,
                  pieces: int, samples: int) -> dict:  # fmt: skip
    """`--infill` through the public API on held-out windows written as MIDI files: every kept note unchanged in the
    output file, every generated note inside the span, and the span's onset density against the original's."""
    from midillm_lite import Generator

    kept = kept_same = generated = inside = new_notes = original_notes = 0
    span_seconds = 0.0
    started = time.monotonic()
    rows = []
    with Generator(model_path) as gen, tempfile.TemporaryDirectory() as tmp:
        for i in ids:
            notes = window_notes(events[i])
            span = infill_span(notes)
            if span is None:
                continue
            path = Path(tmp) / f"held_out_{i}.mid"
            save_midi(notes_to_midi(notes).midi, path)
            start, end = span
            plan = anticipation.prepare_infill(path, from_seconds=start / vocab.TIME_RESOLUTION,
                                               to_seconds=end / vocab.TIME_RESOLUTION)  # fmt: skip
            source = read_midi(path).notes  # the file's notes as `gen --infill` reads them
            outside = Counter(n for n in source if not start <= n.onset < end)
            original = sum(start <= n.onset < end for n in source)
            result = gen.generate(captions[i], n=samples, seed=i, anticipation=plan)
            for out in result.outputs:
                written = midi_to_notes(out.midi).notes
                kept += sum(outside.values())
                kept_same += sum((Counter(n for n in written if not start <= n.onset < end) & outside).values())
                sampled = decode_tokens([t for t in out.tokens if not ops.is_control(t)]).notes
                generated += len(sampled)
                inside += sum(start <= n.onset + plan.window_start < end for n in sampled)
                new_notes += out.new_notes or 0
                original_notes += original
                span_seconds += (end - start) / vocab.TIME_RESOLUTION
            rows.append({"window": i, "span": [start / vocab.TIME_RESOLUTION, end / vocab.TIME_RESOLUTION]})
            if len(rows) == pieces:
                break
    return {"pieces": len(rows), "samples": samples, "kept_notes": kept, "kept_unchanged": kept_same,
            "generated_notes": generated, "generated_inside": inside,
            "new_density": new_notes / max(span_seconds, 1e-9),
            "original_density": original_notes / max(span_seconds, 1e-9),
            "seconds": round(time.monotonic() - started, 1), "spans": rows}  # fmt: skip


def captions_of(data_dir: Path) -> list[str]:
    """The caption of every dataset row."""
    from .data import read_examples

    return [record["caption"] for record in read_examples(data_dir)]


def main() -> None:
    """The held-out CE, the span CE figures and the infill span's end steps of any training checkpoint (a stage's,
    say): `python -m demo.anticipation_eval build/demo/train/model.pt`."""
    import argparse
    import json

    from .train import DATA, Dataset, evaluate, load_model

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a demo.train model.pt")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    model, data = load_model(args.checkpoint), Dataset.load(args.data)
    test_ids = data.indices(True)
    print("held_out_ce", json.dumps(evaluate(model, data, test_ids, tokens=8192, bf16=False)), flush=True)
    for name, planner in (("infill_ce", infill_plan), ("accompany_ce", accompany_plan)):
        print(name, json.dumps(control_ce(model, data.prompts, data.events, test_ids, planner)), flush=True)
    print("infill_span_end_step_ticks", json.dumps(span_end_steps(model, data.prompts, data.events, test_ids)))


if __name__ == "__main__":
    main()
