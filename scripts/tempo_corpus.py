#!/usr/bin/env python3
"""MIDI files of known tempo and meter for the tempo/meter benchmark: music21 corpus pieces played at chosen BPMs.

Runs under a Python that has music21 (not the runtime venv): each piece of the
chosen composers (or music21 corpus folders, such as ryansMammoth for jigs,
reels and waltzes) gets a MetronomeMark at a tempo drawn from a seeded RNG, and
is written as OUT/<name>_<bpm>.mid (one set_tempo; music21 writes the piece's
time signatures too). With --single-meter only pieces in one time signature are
kept. scripts/bench_tempo.py reads the tempo and meter back from the file and
compares the estimates with them.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from music21 import corpus, meter, tempo

BPM_RANGE = (50, 190)


def pieces(source: str) -> list[Path]:
    """A composer's pieces, else the files of the corpus folder of that name."""
    paths = corpus.getComposer(source) or [p for p in corpus.getPaths() if source in Path(str(p)).parts]
    return sorted(Path(str(p)) for p in paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--composers", default="bach,mozart,beethoven,haydn,schumann,joplin")
    parser.add_argument("--per-composer", type=int, default=15)
    parser.add_argument("--single-meter", action="store_true", help="keep only pieces in one time signature")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for composer in args.composers.split(","):
        paths = pieces(composer)
        kept = 0
        # Without --single-meter the draw is the original one (the same seed gives the same files).
        drawn = len(paths) if args.single_meter else min(args.per_composer, len(paths))
        for path in rng.sample(paths, drawn):
            if kept == args.per_composer:
                break
            try:
                score = corpus.parse(path)
            except Exception as exc:  # some corpus files need optional parsers
                print(f"skip {path.name}: {exc}")
                continue
            meters = {ts.ratioString for ts in score.recurse().getElementsByClass(meter.TimeSignature)}
            if args.single_meter and len(meters) != 1:
                continue
            bpm = rng.randint(*BPM_RANGE)
            for mark in score.recurse().getElementsByClass(tempo.MetronomeMark):
                mark.activeSite.remove(mark)
            score.insert(0, tempo.MetronomeMark(number=bpm))
            target = args.out / f"{composer}_{path.stem}_{bpm}.mid"
            try:
                score.write("midi", fp=str(target))
                kept += 1
            except Exception as exc:
                print(f"skip {path.name}: {exc}")


if __name__ == "__main__":
    main()
