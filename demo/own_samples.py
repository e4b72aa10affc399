"""A demo network's own music, for `demo.train --own-samples` (on-policy distillation).

Free-running, a network that has learnt AMT's controls goes wrong where no data window is: once its own music has
drifted (a stray note of another instrument in a solo piece), it is unsure, and the stray notes multiply. A teacher
asked on these samples says what it would have played there; the data windows never ask it. The samples are drawn
through the public API exactly as `gen` draws them (strict mode, default sampling), from training captions only, so
no evaluation prompt is trained on.
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

import numpy as np

from midillm_lite.fsutil import atomic_path

from .data import OUT as DATA
from .data import read_examples

log = logging.getLogger(__name__)

OUT = DATA.parent / "own-samples.npz"


def training_captions(data_dir: Path, count: int, seed: int) -> list[str]:
    """`count` distinct captions of training (not held-out) autoregressive windows, drawn with `seed`."""
    captions = sorted({r["caption"] for r in read_examples(data_dir)
                       if r["split"] == "train" and r["mode"] == "autoregressive"})  # fmt: skip
    return random.Random(seed).sample(captions, min(count, len(captions)))


def draw(model: Path, captions: list[str], *, per_caption: int, max_tokens: int) -> list[tuple[list[int], list[int]]]:
    """(prompt full ids, AMT tokens cut to whole triplets) of `per_caption` samples per caption; seeds 100, 101, ..."""
    from midillm_lite import Generator
    from midillm_lite.engine import build_prompt

    samples = []
    with Generator(model) as gen:
        for k, caption in enumerate(captions):
            prompt = build_prompt(gen.model, caption)
            for output in gen.generate(caption, n=per_caption, seed=100 + k, max_tokens=max_tokens).outputs:
                tokens = list(output.tokens)
                samples.append((prompt, tokens[: len(tokens) - len(tokens) % 3]))
            log.info("%d/%d %s", k + 1, len(captions), caption)
    return samples


def save(samples: list[tuple[list[int], list[int]]], path: Path) -> None:
    """One .npz (what `read` reads), written under a temporary name then renamed (its folder made if missing)."""
    prompts = np.array([i for p, _ in samples for i in p], dtype=np.int64)
    tokens = np.array([i for _, t in samples for i in t], dtype=np.int64)
    with atomic_path(path) as tmp, tmp.open("wb") as f:  # a file object: savez adds no .npz to the name
        np.savez(f, prompt_lengths=[len(p) for p, _ in samples], prompts=prompts,
                 token_lengths=[len(t) for _, t in samples], tokens=tokens)  # fmt: skip


def read(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(prompt full ids, AMT tokens) per sample of a `save`d file; samples with no whole triplet are left out."""
    z = np.load(path)
    prompts = np.split(z["prompts"], np.cumsum(z["prompt_lengths"])[:-1])
    tokens = np.split(z["tokens"], np.cumsum(z["token_lengths"])[:-1])
    return [(p.astype(np.int64), t.astype(np.int64)) for p, t in zip(prompts, tokens, strict=True) if len(t) >= 3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the demo GGUF whose music to draw (the stage's starting network)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--captions", type=int, default=16)
    parser.add_argument("--per-caption", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=768)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    captions = training_captions(args.data, args.captions, args.seed)
    samples = draw(args.model, captions, per_caption=args.per_caption, max_tokens=args.max_tokens)
    save(samples, args.out)
    print(f"wrote {len(samples)} samples of {len(captions)} captions to {args.out}")


if __name__ == "__main__":
    main()
