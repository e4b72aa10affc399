"""`midillm-lite convert` end to end through the CLI: summary line, --json, and the written file's description."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clirun import run_cli

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
