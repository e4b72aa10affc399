"""The demo model's evaluation: held-out CE against baselines, prompt following, quantization fidelity, infilling.

Everything the model card and BENCHMARKS.md report comes from here
(`make demo-model` runs it last): figures go to `build/demo/eval.json`,
plots (loss curve, piano rolls) next to the shipped model, and `card.py`
writes the text from that file. Generation uses the shipped GGUF through
the public `Generator` API, the path `midillm-lite gen` takes.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np

from midillm_lite.amt import gm, vocab
from midillm_lite.amt.codec import decode_tokens
from midillm_lite.sampling import MAX_SIMULTANEOUS_NOTES

from .data import MAX_NOTES
from .data import OUT as DATA
from .export import GGUF_DIR, SHIPPED
from .model import SLOT_RANGES, scored_events, slot_targets
from .train import OUT as TRAIN_OUT
from .train import Dataset

log = logging.getLogger("demo.evaluate")
EVAL_JSON = TRAIN_OUT.parent / "eval.json"
UNIGRAM_ALPHA = 0.5  # add-alpha smoothing of the unigram baseline

# (prompt, GM family its instrument words name); each gets SAMPLES generations.
INSTRUMENT_PROMPTS = (
    ("A gentle piece for solo piano.", gm.family(0)),
    ("A Classical string quartet movement for violin, viola and cello.", gm.family(40)),
    ("A slow European folk song for flute.", gm.family(73)),
    ("A Baroque chorale for church organ.", gm.family(19)),
    ("A fiddle tune played on acoustic guitar.", gm.family(24)),
    ("A Renaissance mass movement for a brass ensemble (trumpet, french horn, trombone and tuba).", gm.family(56)),
)
# (slow prompt, fast prompt): the same words but the tempo.
TEMPO_PAIRS = (
    ("A slow Baroque chorale for string quartet, at 56 BPM.", "A fast Baroque chorale for string quartet, at 160 BPM."),
    ("A slow fiddle tune for solo piano, at 60 BPM.", "A fast fiddle tune for solo piano, at 168 BPM."),
)
SAMPLES = 20
INFILL_PIECES = 24  # held-out windows whose middle third (at most 15 s) `--infill` re-writes
INFILL_SAMPLES = 4
EVAL_TOKENS = 768  # 256 notes a sample: enough to count instruments and density
DENSITY_WINDOW_S = 20  # note density is counted over the first 20 s of each sample
CEILING_TICKS = vocab.MAX_TIME - 100  # a sample whose last onset is in the final second ran out of time tokens
FAR_STEP_TICKS = 1000  # time mass more than 10 s past the latest onset: the data almost never steps that far
LATE_TICKS = 9000  # a window whose last onset is past 90 s used nearly all of the 100 s the time tokens address
# The prompt and time limit `make demo` uses (the Makefile's; a test keeps them equal).
DEMO_PROMPT = "A gentle piece for solo piano."
DEMO_SECONDS = 90.0
# (prompt, --seconds) at the default length, as `gen` runs: without a limit time can run out at 100 s;
# with `make demo`'s 90 s it cannot, so what stacks there is the model's own drift.
FULL_LENGTH_RUNS = (
    ("A gentle piece for solo piano.", None),
    ("A slow Baroque chorale for string quartet, at 56 BPM.", None),
    ("A gentle Baroque chorale for string quartet, at 72 BPM.", DEMO_SECONDS),  # the example; stacks most
    (DEMO_PROMPT, DEMO_SECONDS),
)


# --- cross-entropy -------------------------------------------------------------------------
def unigram_ce(data: Dataset, train_ids: list[int], test_ids: list[int]) -> dict[str, float]:
    """Per-slot unigram model from the training events, under the same strict masks (time renormalised)."""
    counts = [np.zeros(hi - lo) for lo, hi in SLOT_RANGES]
    for i in train_ids:
        tokens = data.events[i]  # anticipation-mode windows: their events, neither controls nor REST padding
        targets, _ = slot_targets(tokens, scored_events(tokens) & (tokens[2::3] != vocab.REST))
        for slot in range(3):
            counts[slot] += np.bincount(targets[slot], minlength=len(counts[slot]))
    smoothed = [c + UNIGRAM_ALPHA for c in counts]
    suffix = np.cumsum(smoothed[0][::-1])[::-1]  # mass of times >= floor
    sums, n = [0.0, 0.0, 0.0], [0, 0, 0]
    for i in test_ids:
        targets, floors = slot_targets(data.events[i])
        sums[0] += float(-(np.log(smoothed[0][targets[0]]) - np.log(suffix[floors])).sum())
        for slot in (1, 2):
            sums[slot] += float(-(np.log(smoothed[slot][targets[slot]]) - np.log(smoothed[slot].sum())).sum())
        for slot in range(3):
            n[slot] += len(targets[slot])
    return _ce_dict(sums, n)


def _ce_dict(sums: list[float], counts: list[int]) -> dict[str, float]:
    names = ("time", "dur", "note")
    return {"ce": sum(sums) / sum(counts), **{f"ce_{k}": s / c for k, s, c in zip(names, sums, counts, strict=True)}}


def network_ce(data: Dataset, test_ids: list[int], *, trained: bool) -> dict[str, float]:
    """Strict-slot CE of the trained network (float32, torch) or of the same network at its initialisation."""
    from .model import DemoLlama
    from .train import evaluate, load_model

    model = load_model(TRAIN_OUT / "model.pt")
    if not trained:
        model = DemoLlama(model.shape, model.compact, seed=model.seed).eval()
    return evaluate(model, data, test_ids, tokens=8192, bf16=False)


def time_keeping(data: Dataset, test_ids: list[int]) -> dict:
    """How far the trained model's strict arrival-time distribution steps ahead of the latest onset, against the
    data's own steps: a heavy far tail is what makes samples race to the 100 s ceiling."""
    import torch

    from .model import make_batch
    from .train import length_batches, load_model

    model = load_model(TRAIN_OUT / "model.pt")
    expected = actual = far = 0.0
    positions = 0
    with torch.no_grad():
        table = model.table()
        for ids in length_batches(data, test_ids, 8192, random.Random(0)):
            batch = make_batch(model.compact, [data.example(i) for i in ids])
            h = model.hidden_states(batch.rows, table).reshape(-1, model.shape.hidden)
            logits = model.slot_logits(h[batch.positions[0]], table, 0).float()
            step = torch.arange(logits.shape[1])[None, :] - batch.floors[:, None]  # ticks after the latest onset
            p = logits.masked_fill(step < 0, float("-inf")).softmax(-1)
            expected += float((p * step.clamp(min=0)).sum())
            far += float((p * (step > FAR_STEP_TICKS)).sum())
            actual += float((batch.targets[0] - batch.floors).sum())
            positions += len(batch.floors)
    return {"positions": positions, "model_mean_step": expected / positions, "data_mean_step": actual / positions,
            "far_mass": far / positions, "far_ticks": FAR_STEP_TICKS}  # fmt: skip


def data_reach(data: Dataset, train_ids: list[int]) -> dict:
    """How often the training windows themselves run to the end of the AMT time range: slow renderings of sparse
    tunes fill 100 s before 682 notes, so a sample reaching the ceiling can be what the data does."""
    # Every note of a window, events and controls alike (the decoder folds controls onto notes, skips REST).
    onsets = [[n.onset for n in decode_tokens(data.events[i].tolist()).notes] for i in train_ids]
    last = np.array([max(o) for o in onsets])
    # The most notes any window has at one onset: a sample stacking more has left what the data ever does.
    busiest = np.array([max(Counter(o).values()) for o in onsets])
    # The data's own density, to set a sample's against: notes before 90 s in the windows that last that long, and
    # how few windows hold a full generation's notes (the rest reach 100 s or the piece's end first).
    late = last >= LATE_TICKS
    early_notes = np.array([sum(t < LATE_TICKS for t in o) for o, keep in zip(onsets, late, strict=True) if keep])
    return {"windows": len(train_ids), "late_share": float(np.mean(late)), "late_ticks": LATE_TICKS,
            "busiest_p99": float(np.percentile(busiest, 99)), "busiest_max": int(busiest.max()),
            "late_notes_mean": float(early_notes.mean()) if len(early_notes) else 0.0,
            "full_share": float(np.mean([len(o) >= MAX_NOTES for o in onsets]))}  # fmt: skip


def permutation_p(a: list[float], b: list[float], rounds: int = 10_000, seed: int = 0) -> float:
    """Two-sided permutation test of a difference in means (no scipy here): the share of label shuffles whose
    difference is at least the observed one."""
    values = np.array([*a, *b], dtype=np.float64)
    observed = abs(np.mean(a) - np.mean(b))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(rounds):
        rng.shuffle(values)
        hits += abs(values[: len(a)].mean() - values[len(a) :].mean()) >= observed - 1e-12
    return (hits + 1) / (rounds + 1)


# --- llama.cpp logits: shipped-file CE and quantization KL ----------------------------------
def _llama(path: Path, n_ctx: int):
    import llama_cpp

    return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=512, logits_all=True, verbose=False, n_threads=2)


def _log_softmax(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    rows -= rows.max(axis=1, keepdims=True)
    return rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))


def quant_fidelity(data: Dataset, test_ids: list[int], quants: tuple[str, ...], n_seqs: int) -> dict:
    """Mean KL(F32 || quant) of full-vocabulary next-token distributions at MIDI positions, plus each file's
    strict-slot CE on the same positions (the shipped file's figure)."""
    longest = max(len(data.prompts[i]) + len(data.events[i]) for i in test_ids[:n_seqs])
    models = {q: _llama(GGUF_DIR / f"midillm-demo-{q}.gguf", longest + 8) for q in ("f32", *quants)}
    kl_sum = dict.fromkeys(quants, 0.0)
    ce_sum = dict.fromkeys(("f32", *quants), 0.0)
    positions = 0
    for i in test_ids[:n_seqs]:
        prompt, events = data.example(i)
        tokens = [*prompt.tolist(), *(vocab.TEXT_VOCAB_SIZE + events[:-1]).tolist()]
        first = len(prompt) - 1  # the logits row predicting the first event
        logp = {}
        for q, llm in models.items():
            llm.reset()
            llm.eval(tokens)
            logp[q] = _log_softmax(np.asarray(llm.scores[first : len(tokens)]))
            ce_sum[q] += _strict_ce(np.asarray(llm.scores[first : len(tokens)]), events)
        for q in quants:
            kl_sum[q] += float((np.exp(logp["f32"]) * (logp["f32"] - logp[q])).sum())
        positions += len(events)
    return {"sequences": min(n_seqs, len(test_ids)), "positions": positions,
            "kl": {q: kl_sum[q] / positions for q in quants},
            "ce": {q: ce_sum[q] / positions for q in ce_sum}}  # fmt: skip


def _strict_ce(scores: np.ndarray, events: np.ndarray) -> float:
    """Summed strict-slot CE from full-vocabulary logits rows (one row per event)."""
    total = 0.0
    floor = 0
    for row, (position, target) in zip(scores, enumerate(events.tolist()), strict=True):
        slot = position % 3
        lo, hi = SLOT_RANGES[slot]
        if slot == 0:
            lo = vocab.TIME_OFFSET + floor
        logits = row[vocab.TEXT_VOCAB_SIZE + lo : vocab.TEXT_VOCAB_SIZE + hi].astype(np.float64)
        top = logits.max()
        total += float(top + np.log(np.exp(logits - top).sum()) - logits[target - lo])
        if slot == 0:
            floor = max(floor, target - vocab.TIME_OFFSET)
    return total


# --- prompt following ------------------------------------------------------------------------
def _note_stats(tokens: list[int]) -> dict:
    """Instrument families, note density over the first DENSITY_WINDOW_S, whether time ran to the 100 s ceiling,
    the busiest onset (the reference's rejection rule) and the busiest one before the ceiling (`stack`: the
    model's own chord stacking, not the pile-up strict mode forces once time has run out)."""
    decoded = decode_tokens(tokens)
    notes = decoded.notes
    families = [gm.family(n.instrument) if n.instrument != vocab.DRUM_INSTRUMENT else -1 for n in notes]
    window = DENSITY_WINDOW_S * vocab.TIME_RESOLUTION
    onsets = Counter(n.onset for n in notes)
    return {"notes": len(notes), "families": families, "repairs": sum(decoded.repairs.values()),
            "density": sum(n.onset < window for n in notes) / DENSITY_WINDOW_S,
            "ceiling": bool(notes) and notes[-1].onset >= CEILING_TICKS,
            "busiest_onset": max(onsets.values(), default=0),
            "stack": max((k for t, k in onsets.items() if t < CEILING_TICKS), default=0)}  # fmt: skip


def prompt_following(model_path: Path, samples: int, max_tokens: int, stack_limit: int) -> dict:
    """Generations through the public API; `stack_limit` is the data's busiest onset: more notes than that at one
    onset counts as a stacked chord."""
    from midillm_lite import Generator

    rows, tempo_rows, rolls, full_rows = [], [], [], []
    short: list[dict] = []  # the stats of every max_tokens output, for the summary
    outputs = repairs = 0
    started = time.monotonic()

    def stacked(stats: list[dict]) -> int:
        return sum(s["stack"] > stack_limit for s in stats)

    with Generator(model_path) as gen:

        def sample(prompt: str, seed: int, tokens: int = max_tokens, seconds: float | None = None) -> list[dict]:
            nonlocal outputs, repairs
            result = gen.generate(prompt, n=samples, seed=seed, max_tokens=tokens, seconds=seconds)
            stats = [_note_stats(o.tokens) for o in result.outputs]
            outputs += len(stats)
            repairs += sum(s["repairs"] + o.summary.repaired for s, o in zip(stats, result.outputs, strict=True))
            rolls.append((prompt, result.outputs[0].tokens))
            return stats

        for seed, (prompt, family) in enumerate(INSTRUMENT_PROMPTS, start=1):
            stats = sample(prompt, seed)
            short += stats
            shares = [np.mean([f == family for f in s["families"]]) if s["notes"] else 0.0 for s in stats]
            rows.append({"prompt": prompt, "family": gm.FAMILY_NAMES[family],
                         "mean_share": float(np.mean(shares)), "majority": int(sum(x > 0.5 for x in shares)),
                         "stacked": stacked(stats), "samples": len(shares)})  # fmt: skip
        for seed, (slow, fast) in enumerate(TEMPO_PAIRS, start=100):
            s_slow, s_fast = sample(slow, seed), sample(fast, seed + 50)
            short += s_slow + s_fast
            d_slow, d_fast = [s["density"] for s in s_slow], [s["density"] for s in s_fast]
            wins = np.mean([f > s for f in d_fast for s in d_slow])  # P(fast sample denser than slow sample)
            tempo_rows.append({"slow": slow, "fast": fast, "slow_density": float(np.mean(d_slow)),
                               "fast_density": float(np.mean(d_fast)), "slow_sd": float(np.std(d_slow)),
                               "fast_sd": float(np.std(d_fast)), "p_fast_denser": float(wins),
                               "p_value": permutation_p(d_slow, d_fast),
                               "samples": len(d_slow)})  # fmt: skip
        for seed, (prompt, seconds) in enumerate(FULL_LENGTH_RUNS, start=200):
            stats = sample(prompt, seed, vocab.DEFAULT_MAX_TOKENS, seconds)
            full_rows.append({"prompt": prompt, "seconds": seconds, "samples": len(stats),
                              "ceiling": sum(s["ceiling"] for s in stats),
                              "stacked": stacked(stats),
                              "rejected": sum(s["busiest_onset"] > MAX_SIMULTANEOUS_NOTES for s in stats),
                              "notes": float(np.mean([s["notes"] for s in stats]))})  # fmt: skip
    return {
        "instrument": rows,
        "tempo": tempo_rows,
        "full_length": full_rows,
        "outputs": outputs,
        "repairs": repairs,
        "short_outputs": len(short),
        "ceiling": sum(s["ceiling"] for s in short),
        "stacked": stacked(short),
        "stack_limit": stack_limit,
        "seconds": round(time.monotonic() - started, 1),
        "rolls": rolls[:4],
    }


def anticipation_figures(args, data: Dataset, test_ids: list[int]) -> dict:
    """Infilling and accompaniment: the span's CE with and without its controls (torch, float32), and `--infill`
    outputs from the shipped file (demo/anticipation_eval.py)."""
    from .anticipation_eval import accompany_plan, captions_of, control_ce, infill_checks, infill_plan
    from .train import load_model

    model = load_model(TRAIN_OUT / "model.pt")
    return {
        "infill_ce": control_ce(model, data.prompts, data.events, test_ids, infill_plan),
        "accompany_ce": control_ce(model, data.prompts, data.events, test_ids, accompany_plan),
        "infill": infill_checks(args.model, captions_of(args.data), data.events, test_ids,
                                pieces=args.infill_pieces, samples=args.infill_samples),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--kl-sequences", type=int, default=8)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--max-tokens", type=int, default=EVAL_TOKENS)
    parser.add_argument("--model", type=Path, default=SHIPPED)
    parser.add_argument("--infill-pieces", type=int, default=INFILL_PIECES, help="held-out windows re-written")
    parser.add_argument("--infill-samples", type=int, default=INFILL_SAMPLES, help="outputs per window")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data = Dataset.load(args.data)
    train_ids, test_ids = data.indices(False), data.indices(True)
    report: dict = {"held_out_examples": len(test_ids),
                    "held_out_tokens": int(sum(len(data.events[i]) for i in test_ids))}  # fmt: skip
    report["ce"] = {"unigram": unigram_ce(data, train_ids, test_ids),
                    "untrained": network_ce(data, test_ids, trained=False),
                    "trained_f32": network_ce(data, test_ids, trained=True)}  # fmt: skip
    log.info("CE %s", report["ce"])
    report["time_keeping"] = time_keeping(data, test_ids)
    # Over the autoregressive windows: the anticipated copies are cut from them (the short ones to 10-25 s), and
    # counted in they would make late windows look rarer than the music the model learnt from has them.
    plain = [i for i in train_ids if data.prompts[i][-1] == vocab.MIDI_AUTOREGRESS_ID]
    report["data_reach"] = data_reach(data, plain)
    log.info("time keeping %s", report["time_keeping"])
    report["fidelity"] = quant_fidelity(data, test_ids, ("q8_0", "q4_k_m"), args.kl_sequences)
    # The same examples through torch: agreement with the F32 GGUF checks the export and conversion end to end.
    report["fidelity"]["ce"]["torch_f32"] = network_ce(data, test_ids[: args.kl_sequences], trained=True)["ce"]
    log.info("fidelity %s", report["fidelity"])
    report["anticipation"] = anticipation_figures(args, data, test_ids)
    log.info("anticipation %s", report["anticipation"])
    stack_limit = report["data_reach"]["busiest_max"]
    report["following"] = prompt_following(args.model, args.samples, args.max_tokens, stack_limit)
    report["following"]["max_tokens"] = args.max_tokens
    EVAL_JSON.write_text(json.dumps(report, indent=1))
    print(f"wrote {EVAL_JSON}")


if __name__ == "__main__":
    main()
