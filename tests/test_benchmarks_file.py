"""BENCHMARKS.md's section writer (scripts/bench_convert.update_benchmarks), which every bench and the demo card use."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import bench_convert

BEFORE = "# Benchmarks\n\n## A\n\nold a\n\n## B\n\nold b\n"


@pytest.mark.parametrize("ending", ["", "\n", "\n\n\n"])
def test_a_replaced_section_keeps_one_blank_line_before_the_next(tmp_path: Path, monkeypatch, ending: str) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(BEFORE)
    monkeypatch.setattr(bench_convert, "BENCHMARKS", path)
    bench_convert.update_benchmarks("## A\n\nnew a" + ending, title="## A")
    assert path.read_text() == "# Benchmarks\n\n## A\n\nnew a\n\n## B\n\nold b\n"
    bench_convert.update_benchmarks("## B\n\nnew b" + ending, title="## B")  # the last section
    bench_convert.update_benchmarks("## C\n\nc" + ending, title="## C")  # a new one, appended
    assert path.read_text() == "# Benchmarks\n\n## A\n\nnew a\n\n## B\n\nnew b\n\n## C\n\nc\n"
    assert not list(tmp_path.glob("*.tmp"))
