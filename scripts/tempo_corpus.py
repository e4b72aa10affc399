#!/usr/bin/env python3
"""MIDI files of known tempo for the tempo-estimation benchmark: music21 corpus pieces played at chosen BPMs.

Runs under a Python that has music21 (not the runtime venv): each piece of the
chosen composers gets a MetronomeMark at a tempo drawn from a seeded RNG, and is
written as OUT/<name>_<bpm>.mid (one set_tempo). scripts/bench_tempo.py reads
the tempo back from the file and compares the estimate with it.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from music21 import corpus, tempo

BPM_RANGE = (50, 190)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--composers", default="bach,mozart,beethoven,haydn,schumann,joplin")
    parser.add_argument("--per-composer", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for composer in args.composers.split(","):
        paths = sorted(corpus.getComposer(composer))
        for path in rng.sample(paths, min(args.per_composer, len(paths))):
            try:
                score = corpus.parse(path)
            except Exception as exc:  # some corpus files need optional parsers
                print(f"skip {path.name}: {exc}")
                continue
            bpm = rng.randint(*BPM_RANGE)
            for mark in score.recurse().getElementsByClass(tempo.MetronomeMark):
                mark.activeSite.remove(mark)
            score.insert(0, tempo.MetronomeMark(number=bpm))
            target = args.out / f"{composer}_{Path(str(path)).stem}_{bpm}.mid"
            try:
                score.write("midi", fp=str(target))
            except Exception as exc:
                print(f"skip {path.name}: {exc}")


if __name__ == "__main__":
    main()
