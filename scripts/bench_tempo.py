#!/usr/bin/env python3
"""Tempo and meter estimation measured on MIDI files of known tempo and meter; prints the BENCHMARKS.md tables.

Nothing is asserted. A file counts for tempo when it states exactly one tempo.
Its notes (read as the encoder reads them) go to `estimate_tempo`; the estimate
is right when within 4% of the stated tempo, and right up to a simple ratio when
within 4% of 2x, 1/2x, 3/2x or 2/3x of it (octave errors a DAW user fixes with
one click). Each file is also measured played 0.75x and 1.33x as fast (the
notes' times scaled), so a corpus written at one tempo still tests several.

A file counts for meter when it also states exactly one time signature of a
family the estimator chooses between: 2/4, 4/4, 2/2 (duple: written as 4/4),
3/4, 6/8. The meter is resolved as `gen` resolves it, with no meter in the
prompt: once at the stated tempo (as with `--tempo`), once at the estimated one
(the whole of `--tempo auto --meter auto`). Verdicts: right; bars right (3/4 for
6/8 or back: the same bar lines, another grouping); wrong; default (the evidence
was weak and the file keeps 4/4, source `default`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import mido

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from midillm_lite.amt.codec import Note  # noqa: E402
from midillm_lite.amt.grid import SOURCE_DEFAULT, SOURCE_FLAG, GridRequest  # noqa: E402
from midillm_lite.amt.midi import read_midi  # noqa: E402
from midillm_lite.amt.tempo import estimate_tempo  # noqa: E402

TOLERANCE = 0.04
RATIOS = (2.0, 0.5, 1.5, 2 / 3)
SPEEDS = (1.0, 0.75, 4 / 3)
MAX_SECONDS = 100  # what AMT (and so the model) can address
METER_FAMILY = {(2, 4): "4/4", (4, 4): "4/4", (2, 2): "4/4", (3, 4): "3/4", (6, 8): "6/8"}
THREE_QUARTER_BARS = {"3/4", "6/8"}
METER_VERDICTS = ("right", "bars right", "wrong", "default")


def stated(path: Path, kind: str) -> list:
    return [m for track in mido.MidiFile(path).tracks for m in track if m.type == kind]


def stated_bpm(path: Path) -> float | None:
    tempos = {m.tempo for m in stated(path, "set_tempo")}
    return mido.tempo2bpm(tempos.pop()) if len(tempos) == 1 else None


def stated_meter(path: Path) -> str | None:
    """The meter family of a file in one time signature, if the estimator chooses between its family and others."""
    meters = {(m.numerator, m.denominator) for m in stated(path, "time_signature")}
    return METER_FAMILY.get(meters.pop()) if len(meters) == 1 else None


def verdict(estimate: float | None, truth: float) -> str:
    if estimate is None:
        return "none"
    if abs(estimate / truth - 1) <= TOLERANCE:
        return "exact"
    return "ratio" if any(abs(estimate / (truth * r) - 1) <= TOLERANCE for r in RATIOS) else "wrong"


def meter_found(request: GridRequest, notes: list[Note]) -> str:
    """The meter a file would be written in, or 'default' when the estimate was too weak to use."""
    grid = request.resolve([n.onset for n in notes], [n.duration for n in notes])
    return "default" if grid.meter_source == SOURCE_DEFAULT else f"{grid.meter[0]}/{grid.meter[1]}"


def meter_verdict(truth: str, found: str) -> str:
    if found in ("default", truth):
        return "right" if found == truth else found
    return "bars right" if {found, truth} <= THREE_QUARTER_BARS else "wrong"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    files = sorted({p.resolve() for f in args.folders for p in (f.glob("*.mid") if f.is_dir() else [f])})
    counts = {"exact": 0, "ratio": 0, "wrong": 0, "none": 0}
    meters: dict[str, Counter] = {"stated tempo": Counter(), "estimated tempo": Counter()}
    seconds = []
    used = 0
    for path in files:
        truth = stated_bpm(path)
        if truth is None:
            continue
        used += 1
        meter = stated_meter(path)
        notes = read_midi(path).notes
        for speed in SPEEDS:
            scaled = [Note(round(n.onset / speed), n.duration, n.instrument, n.pitch) for n in notes]
            scaled = [n for n in scaled if n.onset < MAX_SECONDS * 100]
            started = time.perf_counter()
            estimate = estimate_tempo([n.onset for n in scaled])
            seconds.append(time.perf_counter() - started)
            counts[verdict(estimate and estimate.bpm, truth * speed)] += 1
            if meter is not None:
                given = GridRequest(bpm=truth * speed, tempo_source=SOURCE_FLAG)
                meters["stated tempo"][meter, meter_found(given, scaled)] += 1
                meters["estimated tempo"][meter, meter_found(GridRequest(), scaled)] += 1
    total = sum(counts.values())
    print(f"{used} files x {len(SPEEDS)} speeds = {total} cases (first {MAX_SECONDS} s of each)")
    for key, value in counts.items():
        print(f"  {key:6s} {value:4d}  {100 * value / max(total, 1):5.1f}%")
    share = (counts["exact"] + counts["ratio"]) / max(total, 1)
    print(f"within 4% or a simple ratio: {100 * share:.1f}%; within 4%: {100 * counts['exact'] / max(total, 1):.1f}%")
    print(f"median estimate time: {sorted(seconds)[len(seconds) // 2] * 1000:.0f} ms")
    for tempo, table in meters.items():
        print_meter_table(tempo, table)


def print_meter_table(tempo: str, table: Counter) -> None:
    """One row per stated meter family and a total: cases per verdict, with shares; then what was found for what."""
    families = sorted({family for family, _ in table})
    verdicts = Counter()
    for (truth, found), n in table.items():
        verdicts[truth, meter_verdict(truth, found)] += n
    print(f"\nmeter at the {tempo}:")
    print("| stated | cases | " + " | ".join(METER_VERDICTS) + " |")
    print("|---|---:|" + "---:|" * len(METER_VERDICTS))
    for family in [*families, "all"]:
        row = {v: sum(n for (f, v2), n in verdicts.items() if v2 == v and family in (f, "all")) for v in METER_VERDICTS}
        cases = sum(row.values())
        cells = " | ".join(f"{row[v]} ({100 * row[v] / max(cases, 1):.0f}%)" for v in METER_VERDICTS)
        print(f"| {family} | {cases} | {cells} |")
    found = sorted({f for _, f in table})
    print("stated -> found: " + "; ".join(
        f"{t}: " + ", ".join(f"{f} {table[t, f]}" for f in found if table[t, f]) for t in families))  # fmt: skip


if __name__ == "__main__":
    main()
