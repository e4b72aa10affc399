"""`midillm-lite convert` end to end through the CLI: summary line, --json, and the written file's description."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import run_cli
from hypothesis import given
from hypothesis import strategies as st

from midillm_lite.modelinfo import read_model_info


def test_convert_prints_a_summary(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.gguf"
    code, stdout, stderr = run_cli(["convert", str(tiny_checkpoint), "-o", str(out), "--quant", "q8_0"], capsys)
    assert code == 0, stderr
    assert stdout.startswith(f"wrote {out}: q8_0, ") and " MiB, 21 tensors, " in stdout
    assert read_model_info(out).quant == "q8_0"
    code, stdout, stderr = run_cli(["convert", str(tiny_checkpoint), "-o", str(out), "-q", "f16", "--force",
                                    "--json"], capsys)  # fmt: skip
    result = json.loads(stdout)
    assert code == 0 and result["quant"] == "f16" and result["file_size"] == out.stat().st_size
    assert result["source_revision"] == "local" and result["midi_tokens_named"] == 0


def test_convert_refuses_unknown_quant_as_usage_error(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    code, _, stderr = run_cli(["convert", str(tiny_checkpoint), "-o", str(tmp_path / "m.gguf"), "-q", "q2"], capsys)
    assert code != 0 and "q2" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "m.gguf").exists()


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_progress_callback_counts_source_bytes(tiny_checkpoint: Path, tmp_path: Path, quant: str) -> None:
    from midillm_lite.convert import convert
    from midillm_lite.convert.source import read_shards

    calls: list[tuple[str, int, int]] = []
    convert(tiny_checkpoint, tmp_path / "m.gguf", quant=quant, threads=2, progress=lambda *a: calls.append(a))
    converting = [(done, total) for phase, done, total in calls if phase == "convert"]
    total = sum(slot.nbytes for slot in read_shards(tiny_checkpoint).values())
    assert all(t == total for _, t in converting)
    assert [d for d, _ in converting] == sorted(d for d, _ in converting) and converting[-1][0] == total
    phases = list(dict.fromkeys(phase for phase, _, _ in calls))
    assert phases == (["convert", "quantize"] if quant == "q4_k_m" else ["convert"])


def test_k_quant_phase_reports_each_tensor_from_llama_cpp(tiny_checkpoint: Path, tmp_path: Path) -> None:
    # The K-quant phase is one llama.cpp call; its per-tensor log lines are the progress, not a 0/1 jump.
    from midillm_lite.convert import convert

    calls: list[tuple[str, int, int]] = []
    convert(tiny_checkpoint, tmp_path / "m.gguf", quant="q4_k_m", threads=2, progress=lambda *a: calls.append(a))
    quantizing = [(done, total) for phase, done, total in calls if phase == "quantize"]
    n_tensors = quantizing[0][1]
    assert n_tensors > 2 and all(total == n_tensors for _, total in quantizing)
    done = [d for d, _ in quantizing]
    assert done == sorted(done) and set(done) == set(range(n_tensors + 1))  # every tensor in turn, then all


@given(st.text(max_size=80))
def test_tensor_listener_ignores_any_other_line(line: str) -> None:
    from midillm_lite.convert.kquant import tensor_progress_listener

    seen: list[tuple[int, int]] = []
    tensor_progress_listener(lambda done, total: seen.append((done, total)))(line)
    assert all(0 <= done < total for done, total in seen)


def test_tensor_listener_reads_llama_cpp_lines() -> None:
    from midillm_lite.convert.kquant import tensor_progress_listener

    seen: list[tuple[int, int]] = []
    listen = tensor_progress_listener(lambda done, total: seen.append((done, total)))
    for line in ["[  12/ 147] blk.0.attn_k.weight - [256, 128, 1, 1], type = bf16,", "size = 0.06 MiB",
                 "[   0/   0] nothing", "llama_model_quantize_impl: model size = 37.84 MiB"]:  # fmt: skip
        listen(line)
    assert seen == [(11, 147)]


def test_convert_prints_plain_progress_lines_off_a_terminal(tiny_checkpoint: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "midillm_lite", "convert", str(tiny_checkpoint), "-o", str(tmp_path / "m.gguf"),
         "-q", "q4_k_m", "-t", "2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert any(line.startswith("convert: ") and "MiB" in line for line in lines), run.stderr
    assert any(re.fullmatch(r"quantize: (\d+) of \1 tensors \(100%\), done in \d+s", line) for line in lines)


def test_plain_convert_lines_say_amount_share_and_time_left(monkeypatch) -> None:
    from midillm_lite.cli import convert_cmds
    from midillm_lite.cli.convert_cmds import PlainProgress, convert_progress_text

    assert convert_progress_text("quantize", 12, 48, 30.0) == "12 of 48 tensors (25%), 1m30s left"
    assert convert_progress_text("convert", 1 << 20, 4 << 20, 2.0) == "1.0 of 4.0 MiB (25%), 6s left"
    assert convert_progress_text("quantize", 0, 48, 0.0) == "0 of 48 tensors (0%)"
    now = [0.0]
    plain = PlainProgress(clock=lambda: now[0])
    lines: list[str] = []
    monkeypatch.setattr(convert_cmds.typer, "echo", lambda text, err=False: lines.append(text))
    for t, done in ((0.0, 0), (1.0, 1), (11.0, 2), (12.0, 48)):
        now[0] = t
        plain("quantize", done, 48)
    assert [line.split(" (")[0] for line in lines] == ["quantize: 0 of 48 tensors", "quantize: 2 of 48 tensors",
                                                        "quantize: 48 of 48 tensors"]  # fmt: skip
