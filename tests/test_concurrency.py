"""Two `gen` processes writing into one output root at the same moment, with the same prompt, never clobber."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import mido
import pytest

from midillm_lite.outputs import new_output_dir

PROMPT = "two players at once"


def test_same_second_same_prompt_gets_distinct_folders(tmp_path: Path) -> None:
    now = time.time()
    folders = [new_output_dir(PROMPT, root=tmp_path, now=now) for _ in range(5)]
    assert len(set(folders)) == 5 and all(f.is_dir() for f in folders)
    assert [f.name for f in folders][1:] == [f"{folders[0].name}-{i}" for i in range(2, 6)]


@pytest.mark.slow
def test_two_processes_one_root(tiny_gguf, tmp_path: Path) -> None:
    """Both use the default root (./midillm-out) of one working folder; same prompt, started together."""
    root = tmp_path / "midillm-out"
    args = [sys.executable, "-m", "midillm_lite", "gen", PROMPT, "-m", str(tiny_gguf()), "-n", "2",
            "--max-tokens", "30", "--threads", "1", "--quiet", "--json"]  # fmt: skip
    procs = [subprocess.Popen([*args, "--seed", str(seed)], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]  # fmt: skip
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    folders = [tmp_path / json.loads(out)["folder"] for out, _ in results]
    assert folders[0] != folders[1] and sorted(root.iterdir()) == sorted(folders)
    for folder, seed in zip(folders, (1, 2), strict=True):
        stats = json.loads((folder / "generation_stats.json").read_text())
        assert stats["sampling"]["seed"] == seed  # each folder holds its own run, whole
        for midi in folder.rglob("gen_*.mid"):
            mido.MidiFile(midi)
        assert len(list(folder.rglob("gen_*.mid"))) == 2


def _claim(args: tuple[str, float]) -> str:
    root, now = args
    return new_output_dir(PROMPT, root=Path(root), now=now).name


def test_racing_processes_claim_distinct_folders(tmp_path: Path) -> None:
    """Eight processes asking for the same second's folder at once: mkdir is the lock, so all differ."""
    now = time.time()
    # spawn, not fork: earlier tests leave threads in this process, and a child forked while one of them held a lock
    # waits for it forever (seen once: the suite hung here).
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        names = pool.map(_claim, [(str(tmp_path), now)] * 8)
    assert len(set(names)) == 8 and sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
