#!/usr/bin/env python3
"""Audio render speed (x real time) and peak memory for a 100 s, 16-instrument piece; prints BENCHMARKS.md's table.

Each synthesizer/soundfont pair runs in a fresh process (its peak RSS is its own): soundfont load, synthesis,
processing (trim, -18 LUFS, limiter) and MP3 encoding are timed apart. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mido

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECONDS = 100
CHANNELS = 16
DRUM_CHANNEL = 9
FLUIDR3 = "/usr/share/sounds/sf2/FluidR3_GM.sf2"


def piece() -> mido.MidiFile:
    """16 channels for 100 s: 15 GM programs (8 apart) each playing a two-note chord every half second, and a drum
    hit every quarter second on channel 10 (about 6,400 notes; up to ~32 voices sounding at once)."""
    midi = mido.MidiFile(type=0, ticks_per_beat=480)  # 120 BPM: 960 ticks a second
    events = [(0, mido.Message("program_change", channel=c, program=8 * c % 128)) for c in range(CHANNELS)]
    for c in range(CHANNELS):
        step = 0.25 if c == DRUM_CHANNEL else 0.5
        for i in range(int(SECONDS / step)):
            start = i * step
            keys = [36 + (i % 4) * 2] if c == DRUM_CHANNEL else [40 + 2 * c + i % 7, 47 + 2 * c + i % 5]
            for key in keys:
                events.append((round(start * 960), mido.Message("note_on", channel=c, note=key, velocity=72)))
                events.append((round((start + step * 0.9) * 960), mido.Message("note_off", channel=c, note=key)))
    track = mido.MidiTrack()
    now = 0
    for tick, message in sorted(events, key=lambda e: (e[0], e[1].type == "note_on")):
        track.append(message.copy(time=tick - now))
        now = tick
    midi.tracks.append(track)
    return midi


def worker(synth: str, soundfont: str, midi_path: str, out: str) -> dict:
    from midillm_lite.amt.midi import load_midi_file
    from midillm_lite.audio import AudioSettings, prepare
    from midillm_lite.audio.encode import write_audio
    from midillm_lite.audio.process import normalize, trim_silence
    from midillm_lite.audio.synth import SAMPLE_RATE, open_synth, render_messages, timed_messages

    t0 = time.perf_counter()
    renderer = prepare(AudioSettings("mp3", soundfont, synth=synth))
    player = open_synth(renderer.synth, renderer.soundfont)
    t1 = time.perf_counter()
    raw = render_messages(player, timed_messages(load_midi_file(midi_path)))
    t2 = time.perf_counter()
    samples, level = normalize(trim_silence(raw), SAMPLE_RATE)
    t3 = time.perf_counter()
    write_audio(Path(out), samples, SAMPLE_RATE, "mp3")
    t4 = time.perf_counter()
    return {
        "synth": renderer.synth.describe(), "soundfont": Path(soundfont).name, "load_s": t1 - t0,
        "synth_s": t2 - t1, "process_s": t3 - t2, "encode_s": t4 - t3, "total_s": t4 - t0,
        "audio_s": len(raw) / SAMPLE_RATE, "lufs": level,
        "mp3_kbps": os.path.getsize(out) * 8 / 1000 / (len(samples) / SAMPLE_RATE),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=4, metavar=("SYNTH", "SOUNDFONT", "MIDI", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    from midillm_lite.audio.soundfont import package_soundfont
    from midillm_lite.audio.synth import FLUIDSYNTH, TINYSOUNDFONT, _available

    pairs = [(s, sf) for s in (FLUIDSYNTH, TINYSOUNDFONT) if _available(s)
             for sf in (FLUIDR3, str(package_soundfont())) if Path(sf).is_file()]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        midi_path = Path(tmp) / "piece.mid"
        piece().save(midi_path)
        rows = []
        for synth, soundfont in pairs:
            done = subprocess.run([sys.executable, __file__, "--worker", synth, soundfont, str(midi_path),
                                   str(Path(tmp) / "out.mp3")], capture_output=True, text=True, check=True)  # fmt: skip
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{time.strftime('%Y-%m-%d')}, {machine()}; {SECONDS} s, 16 instruments, rendered to MP3\n")
    print("| synthesizer | soundfont | load s | synthesis s | process s | encode s | total s | x real time | "
          "peak RSS MB | MP3 kbps |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['synth']} | {r['soundfont']} | {r['load_s']:.2f} | {r['synth_s']:.1f} | {r['process_s']:.1f} | "
              f"{r['encode_s']:.1f} | {r['total_s']:.1f} | {SECONDS / r['total_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{r['mp3_kbps']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
