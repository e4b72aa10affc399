"""Soak, short: one Generator running generations back to back must not leak file descriptors or memory.

scripts/soak.py is the measurement (200 runs for RELIABILITY.md); this runs it briefly in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).parents[1] / "scripts" / "soak.py"
RUNS = 10
RSS_GROWTH_MIB = 16  # allocator noise is a few MiB; a leak of one context or model per run is tens


@pytest.mark.slow
def test_generations_in_a_row_leak_nothing(tiny_gguf) -> None:
    args = [sys.executable, str(SOAK), "--model", str(tiny_gguf()), "--runs", str(RUNS), "--max-tokens", "30"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows, summary = report["rows"], report["summary"]
    # Every run generates; a strict output may end before 30 tokens when its music reaches AMT's last arrival time
    # (99.99 s, issue 14), which a random tiny model's time jumps can do within a few notes.
    assert len(rows) == RUNS and all(0 < r["tokens"] <= 30 for r in rows)
    assert {r["fds"] for r in rows} == {summary["fds_first_run"]}  # not one descriptor more, run after run
    assert summary["fds_after_close"] <= summary["fds_before_load"]
    assert summary["rss_mib_last_run"] - summary["rss_mib_first_run"] < RSS_GROWTH_MIB
    assert summary["rss_mib_after_close"] < summary["rss_mib_after_load"]  # close() gives the model back
