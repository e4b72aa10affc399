"""Training the demo network (torch, `pip install -e .[train]`); `make demo-model` runs it after `make demo-data`.

Batches group examples of similar length (right padding is harmless under a
causal mask); the loss is the cross-entropy of the MIDI event tokens only
(controls of anticipation-mode windows are inputs), each over its slot's
candidates, arrival times unmasked (see `model.slot_losses`), plus, with
`--teacher`, a KL term that keeps the autoregressive windows' predictions
near a frozen earlier model's (`model.distill_kl`); the held-out curve is
the strict-mask figure the card reports. bf16 autocast is used where the CPU
computes bf16 natively (AVX-512 BF16 or AMX; elsewhere fp32). The loss curve
and the held-out curve are written to `history.json`; the weights to `model.pt`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from midillm_lite.amt import vocab

from . import own_samples as own_samples_file
from .data import OUT as DATA
from .data import base_mode, read_examples, stage_windows
from .model import (
    Batch,
    CompactVocab,
    DemoLlama,
    Shape,
    distill_kl,
    make_batch,
    scored_events,
    scored_logits,
    slot_ce,
    slot_losses,  # fmt: skip
)

log = logging.getLogger("demo.train")
OUT = DATA.parent / "train"
OWN_BATCH = 6  # own samples per step beside each data batch (about 4,600 MIDI tokens at 768 per sample)


@dataclass
class Dataset:
    prompts: list[np.ndarray]
    events: list[np.ndarray]
    held_out: np.ndarray

    @classmethod
    def load(cls, folder: Path) -> Dataset:
        z = np.load(folder / "dataset.npz")

        def split(ids: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
            return [ids[a:b].astype(np.int64) for a, b in itertools.pairwise(offsets)]

        return cls(split(z["prompt_ids"], z["prompt_offsets"]), split(z["event_ids"], z["event_offsets"]),
                   z["held_out"].astype(bool))  # fmt: skip

    def indices(self, held_out: bool) -> list[int]:
        return [i for i in range(len(self.events)) if self.held_out[i] == held_out]

    def compact_vocab(self) -> CompactVocab:
        return CompactVocab(sorted({int(t) for p in self.prompts for t in p[:-1]}))

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.prompts[i], self.events[i]


def length_batches(data: Dataset, indices: list[int], tokens: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar-length examples, at most `tokens` padded tokens each, in shuffled order."""
    ordered = sorted(indices, key=lambda i: (len(data.prompts[i]) + len(data.events[i]), rng.random()))
    batches, current, longest = [], [], 0
    for i in ordered:
        length = len(data.prompts[i]) + len(data.events[i])
        if current and max(longest, length) * (len(current) + 1) > tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, length)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def bf16_native() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX") and _has_cpu_flag("avx512_bf16")


def _has_cpu_flag(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@torch.no_grad()
def evaluate(model: DemoLlama, data: Dataset, indices: list[int], tokens: int, bf16: bool) -> dict[str, float]:
    """Mean strict-slot cross-entropy (nats per MIDI token), overall and per slot."""
    model.eval()
    sums, counts = [0.0, 0.0, 0.0], [0, 0, 0]
    for batch_ids in length_batches(data, indices, tokens, random.Random(0)):
        batch = make_batch(model.compact, [data.example(i) for i in batch_ids])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            losses = slot_losses(model, batch)
        for slot in range(3):
            sums[slot] += float(losses[slot])
            counts[slot] += int((~batch.rest).sum())  # strict: REST padding is not scored
    model.train()
    return {
        "ce": sum(sums) / sum(counts),
        **{f"ce_{n}": s / c for n, s, c in zip(("time", "dur", "note"), sums, counts, strict=True)},
    }


def train(data_dir: Path, out: Path, *, shape: Shape, steps: int, batch_tokens: int, lr: float, seed: int,
          max_minutes: float, eval_every: int, threads: int, init: Path | None = None,
          modes: frozenset[str] | None = None, repeat: dict[str, int] | None = None, teacher: Path | None = None,
          teacher_weight: float = 1.0, own_samples: Path | None = None, own_weight: float = 1.0) -> dict:  # fmt: skip
    """`init`: go on from a saved model of the same shape and data (a later phase), or from a demo GGUF; `modes`:
    train only on the windows of these augmentations (demo/data.py's names; None: all); `repeat`: draw each window of
    these augmentations this many times per pass (a stage's mix of autoregressive and anticipated windows);
    `teacher` (a demo GGUF or model.pt, frozen): on the autoregressive windows, also pull the predictions towards
    the teacher's (KL, times `teacher_weight`), so that learning the controls does not unlearn what it does there;
    `own_samples` (`demo.own_samples`' file: the network's own music, made before this stage): each step also pulls
    the predictions on OWN_BATCH of them towards the teacher's (KL per token, times `own_weight`). The data windows
    are not where a network that has learnt controls goes wrong: its own free-running music is (stray instruments
    in a solo piece), and only a teacher asked there can correct it (on-policy distillation)."""
    torch.set_num_threads(threads)
    data = Dataset.load(data_dir)
    compact = data.compact_vocab()
    if own_samples is not None and teacher is None:
        raise ValueError("own_samples needs a teacher: they are distilled from it")
    model = DemoLlama(shape, compact, seed=seed)
    earlier: list[dict] = []  # the stages that made `init`, for the card and the loss plot
    base = init.name if init is not None and init.suffix == ".gguf" else None  # the card names the file
    if base is not None:  # a shipped demo model (what stages made it is not in the file)
        model = load_any(init, compact, seed)
    elif init is not None:
        model.load_state_dict(load_model(init).state_dict())
        if (made := init.parent / "history.json").exists():
            before = json.loads(made.read_text())
            earlier = [*before.pop("stages", []), before]
    bf16 = bf16_native()
    train_ids, test_ids = data.indices(False), data.indices(True)
    if modes is not None or repeat:
        kinds = [base_mode(r["mode"]) for r in read_examples(data_dir)]
        train_ids = stage_windows(train_ids, kinds, modes, repeat or {})
    probe = random.Random(seed).sample(test_ids, min(len(test_ids), 48))  # held-out subset for the curve
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith("embed")]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and not n.startswith("embed"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))  # fmt: skip
    warmup = max(1, steps // 25)
    history: dict = {"train": [], "held_out": [], "bf16": bf16, "shape": shape.to_dict(), "lr": lr,
                     "batch_tokens": batch_tokens, "modes": sorted(modes) if modes else None, "repeat": repeat or None,
                     "stages": earlier, "base": base, "teacher": teacher.name if teacher else None,
                     "teacher_weight": teacher_weight if teacher else None,
                     "own_samples": own_samples.name if own_samples else None,
                     "own_weight": own_weight if own_samples else None}  # fmt: skip
    frozen = None if teacher is None else load_any(teacher, compact, seed).eval().requires_grad_(False)
    own = [] if own_samples is None else own_samples_file.read(own_samples)
    rng = random.Random(seed)
    batches: list[list[int]] = []
    start = time.monotonic()
    seen_tokens = 0
    step = 0
    log.info("%d train / %d held-out examples, compact vocab %d rows, bf16=%s", len(train_ids), len(test_ids),
             compact.rows, bf16)  # fmt: skip
    history["held_out"].append({"step": 0, "tokens": 0, **evaluate(model, data, probe, batch_tokens, bf16)})
    while (progress := max(step / steps, (time.monotonic() - start) / (max_minutes * 60))) < 1:
        if not batches:
            batches = length_batches(data, train_ids, batch_tokens, rng)
        examples = [data.example(i) for i in batches.pop()]
        batch = make_batch(compact, examples)
        # Cosine decay over steps or wall time, whichever runs out first: on a busy machine the run still
        # ends inside its time budget with a fully decayed learning rate.
        scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = scored_logits(model, batch, strict=False)  # see slot_losses: learn where "now" is
            total = sum(slot_ce(logits, batch, strict=False))
            kl = torch.zeros(())
            if frozen is not None:
                kl = teacher_kl(logits, frozen, batch, autoregressive_rows(examples))
            own_kl = torch.zeros(())
            if own:
                drawn = make_batch(compact, rng.sample(own, min(OWN_BATCH, len(own))))
                every = torch.ones(len(drawn.rest), dtype=torch.bool)
                own_kl = teacher_kl(scored_logits(model, drawn, strict=False), frozen, drawn, every) / drawn.tokens
        loss = (total + teacher_weight * kl) / batch.tokens + own_weight * own_kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen_tokens += batch.tokens
        value = float(loss.detach())
        entry = {"step": step, "tokens": seen_tokens, "loss": value, "seconds": round(time.monotonic() - start, 1)}
        if frozen is not None:
            entry["kl"] = float(kl.detach()) / batch.tokens
        if own:
            entry["own_kl"] = float(own_kl.detach())
        history["train"].append(entry)
        if step % 10 == 0:
            log.info("step %d/%d loss %.3f  %.0f MIDI tok/s", step, steps, value,
                     seen_tokens / (time.monotonic() - start))  # fmt: skip
        if step % eval_every == 0:
            history["held_out"].append({"step": step, "tokens": seen_tokens,
                                        **evaluate(model, data, probe, batch_tokens, bf16)})  # fmt: skip
            log.info("held-out %s", history["held_out"][-1])
    history["held_out"].append({"step": step, "tokens": seen_tokens,
                                **evaluate(model, data, probe, batch_tokens, bf16)})  # fmt: skip
    history["steps"] = step
    history["minutes"] = round((time.monotonic() - start) / 60, 1)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state": model.state_dict(), "shape": shape.to_dict(), "text_ids": compact.text_ids,
                "seed": seed}, out / "model.pt")  # fmt: skip
    (out / "history.json").write_text(json.dumps(history))
    return history


def teacher_kl(logits: torch.Tensor, frozen: DemoLlama, batch: Batch, rows: torch.Tensor) -> torch.Tensor:
    """KL(teacher || network) summed over `rows`' scored tokens; the frozen teacher's logits carry no gradient."""
    with torch.no_grad():
        taught = scored_logits(frozen, batch, strict=False)
    return distill_kl(logits, taught, rows)


def autoregressive_rows(examples: list[tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
    """Per scored triplet of `make_batch(examples)`, in its order: whether its window is autoregressive."""
    flags = [np.full(int(scored_events(tokens).sum()), prompt[-1] == vocab.MIDI_AUTOREGRESS_ID)
             for prompt, tokens in examples]  # fmt: skip
    return torch.from_numpy(np.concatenate(flags))


def load_any(path: Path, compact: CompactVocab, seed: int) -> DemoLlama:
    """A demo GGUF (read back into the network) or a model.pt."""
    if path.suffix == ".gguf":
        from .export import read_gguf

        return read_gguf(path, compact, seed=seed)
    return load_model(path)


def load_model(path: Path) -> DemoLlama:
    saved = torch.load(path, weights_only=True)
    model = DemoLlama(Shape(**saved["shape"]), CompactVocab(saved["text_ids"]), seed=saved["seed"])
    model.load_state_dict(saved["state"])
    return model.eval()


def augmentation_names(text: str) -> frozenset[str]:
    """--modes: comma-separated names of demo/data.py's augmentations."""
    from .data import AUGMENTATIONS, AUTOREGRESSIVE

    known = {AUTOREGRESSIVE, *(name for name, _ in AUGMENTATIONS)}
    names = frozenset(name.strip() for name in text.split(","))
    if unknown := names - known:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return names


def mode_repeats(text: str) -> dict[str, int]:
    """--repeat: MODE=K pairs, comma-separated: each window of MODE is drawn K times per pass over the data."""
    repeat = {}
    for pair in text.split(","):
        name, _, count = pair.partition("=")
        augmentation_names(name)  # one clear line for an unknown name
        if not count.strip().isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"{pair.strip()!r}: expected MODE=K with K a whole number >= 1")
        repeat[name.strip()] = int(count)
    return repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--steps", type=int, default=1100)
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=40.0, help="time budget: the schedule ends by then")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()))
    parser.add_argument("--layers", type=int, default=Shape.layers)
    parser.add_argument("--hidden", type=int, default=Shape.hidden)
    parser.add_argument("--init", type=Path, help="start from this model.pt (same shape and data), or a demo GGUF such "
                        "as models/midillm-demo-q8_0.gguf, instead of random")  # fmt: skip
    parser.add_argument(
        "--modes",
        type=augmentation_names,
        help="train only on windows of these augmentations, e.g. autoregressive,span,instrument",
    )
    parser.add_argument(
        "--repeat",
        type=mode_repeats,
        help="draw the windows of these augmentations K times per pass, e.g. autoregressive=4",
    )
    parser.add_argument("--teacher", type=Path, help="a demo GGUF or model.pt whose autoregressive predictions the "
                        "stage keeps close to (KL on the autoregressive windows), e.g. the first release")  # fmt: skip
    parser.add_argument("--teacher-weight", type=float, default=1.0, help="the KL term's weight against the CE")
    parser.add_argument(
        "--own-samples",
        type=Path,
        help="demo.own_samples' file: also distil the teacher on the network's own music (needs --teacher)",
    )
    parser.add_argument("--own-weight", type=float, default=1.0, help="that KL term's weight (per token)")
    args = parser.parse_args()
    if args.own_samples is not None and args.teacher is None:  # one line here; train() refuses it too, for callers
        parser.error("--own-samples needs --teacher: the samples are distilled from it")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    shape = Shape(layers=args.layers, hidden=args.hidden)
    history = train(
        args.data, args.out, shape=shape, steps=args.steps, batch_tokens=args.batch_tokens, lr=args.lr,
        seed=args.seed, max_minutes=args.max_minutes, eval_every=args.eval_every, threads=args.threads, init=args.init,
        modes=args.modes, repeat=args.repeat, teacher=args.teacher, teacher_weight=args.teacher_weight,
        own_samples=args.own_samples, own_weight=args.own_weight,
    )  # fmt: skip
    print(f"trained {history['steps']} steps in {history['minutes']} min; wrote {args.out}")


if __name__ == "__main__":
    main()
