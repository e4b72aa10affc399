#!/usr/bin/env python3
"""Tempo estimation measured on MIDI files of known tempo; prints the BENCHMARKS.md table. Nothing is asserted.

A file counts when it states exactly one tempo. Its notes (read as the encoder
reads them) go to `estimate_tempo`; the estimate is right when within 4% of the
stated tempo, and right up to a simple ratio when within 4% of 2x, 1/2x, 3/2x or
2/3x of it (octave errors a DAW user fixes with one click). Each file is also
measured played 0.75x and 1.33x as fast (the notes' times scaled), so a corpus
written at one tempo still tests several.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mido

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from midillm_lite.amt.codec import Note  # noqa: E402
from midillm_lite.amt.midi import read_midi  # noqa: E402
from midillm_lite.amt.tempo import estimate_tempo  # noqa: E402

TOLERANCE = 0.04
RATIOS = (2.0, 0.5, 1.5, 2 / 3)
SPEEDS = (1.0, 0.75, 4 / 3)
MAX_SECONDS = 100  # what AMT (and so the model) can address


def stated_bpm(path: Path) -> float | None:
    tempos = {m.tempo for track in mido.MidiFile(path).tracks for m in track if m.type == "set_tempo"}
    return mido.tempo2bpm(tempos.pop()) if len(tempos) == 1 else None


def verdict(estimate: float | None, truth: float) -> str:
    if estimate is None:
        return "none"
    if abs(estimate / truth - 1) <= TOLERANCE:
        return "exact"
    return "ratio" if any(abs(estimate / (truth * r) - 1) <= TOLERANCE for r in RATIOS) else "wrong"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    files = sorted({p.resolve() for f in args.folders for p in (f.glob("*.mid") if f.is_dir() else [f])})
    counts = {"exact": 0, "ratio": 0, "wrong": 0, "none": 0}
    seconds = []
    used = 0
    for path in files:
        truth = stated_bpm(path)
        if truth is None:
            continue
        used += 1
        notes = read_midi(path).notes
        for speed in SPEEDS:
            scaled = [Note(round(n.onset / speed), n.duration, n.instrument, n.pitch) for n in notes]
            onsets = [n.onset for n in scaled if n.onset < MAX_SECONDS * 100]
            started = time.perf_counter()
            estimate = estimate_tempo(onsets)
            seconds.append(time.perf_counter() - started)
            counts[verdict(estimate and estimate.bpm, truth * speed)] += 1
    total = sum(counts.values())
    print(f"{used} files x {len(SPEEDS)} speeds = {total} cases (first {MAX_SECONDS} s of each)")
    for key, value in counts.items():
        print(f"  {key:6s} {value:4d}  {100 * value / max(total, 1):5.1f}%")
    share = (counts["exact"] + counts["ratio"]) / max(total, 1)
    print(f"within 4% or a simple ratio: {100 * share:.1f}%; within 4%: {100 * counts['exact'] / max(total, 1):.1f}%")
    print(f"median estimate time: {sorted(seconds)[len(seconds) // 2] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
