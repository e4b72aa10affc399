"""Thread defaults, performance-core counting, llama.cpp's wait policy and the busy-machine hint."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from clirun import run_cli
from conftest import LLAMA_THREADS
from hypothesis import given, settings
from hypothesis import strategies as st

from midillm_lite import llamacpp
from midillm_lite.cli.gen_cmds import contention_hint
from midillm_lite.engine import CONTENDED_CPU_SHARE, MIN_JUDGED_DECODE_S, Timings, cpu_contended


# --- counting cores ------------------------------------------------------------------------
def fake_sysfs(root: Path, cpus: dict[int, tuple[int, int, int | None]]) -> Path:
    """cpu -> (package, core, capacity or None) as /sys/devices/system/cpu under root."""
    for cpu, (package, core, capacity) in cpus.items():
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")
        if capacity is not None:
            (root / f"cpu{cpu}" / "cpu_capacity").write_text(f"{capacity}\n")
    return root


def test_smt_siblings_count_once(tmp_path):
    sysfs = fake_sysfs(tmp_path, {0: (0, 0, None), 1: (0, 0, None), 2: (0, 1, None), 3: (0, 1, None)})
    assert llamacpp.linux_cores({0, 1, 2, 3}, sysfs, tmp_path / "none") == 2
    assert llamacpp.linux_cores({0, 1}, sysfs, tmp_path / "none") == 1  # affinity limits what counts


def test_big_little_counts_only_the_big_cores(tmp_path):
    cpus = {cpu: (0, cpu, 1024 if cpu < 2 else 446) for cpu in range(6)}
    assert llamacpp.linux_cores(set(cpus), fake_sysfs(tmp_path, cpus), tmp_path / "none") == 2


def test_intel_hybrid_counts_the_p_cores(tmp_path):
    # 2 P-cores with SMT (cpu0-3) and 4 E-cores (cpu4-7), as /sys/devices/cpu_core/cpus lists them.
    cpus = {0: (0, 0, None), 1: (0, 0, None), 2: (0, 4, None), 3: (0, 4, None)}
    cpus |= {4 + i: (0, 8 + i, None) for i in range(4)}
    hybrid = tmp_path / "cpu_core_cpus"
    hybrid.write_text("0-3\n")
    assert llamacpp.linux_cores(set(range(8)), fake_sysfs(tmp_path / "cpu", cpus), hybrid) == 2


def test_missing_topology_counts_cpus(tmp_path):
    assert llamacpp.linux_cores({0, 1, 2}, tmp_path, tmp_path / "none") == 3


@settings(deadline=None)  # a shared machine: no timing
@given(st.sets(st.integers(0, 300), min_size=1))
def test_cpu_list_round_trip(cpus):
    ranges, ordered = [], sorted(cpus)
    start = prev = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        ranges.append(f"{start}-{prev}" if prev > start else str(start))
        if cpu is not None:
            start = prev = cpu
    assert llamacpp.parse_cpu_list(",".join(ranges) + "\n") == cpus


@pytest.mark.parametrize("text", ["", "a", "3-1", "1,,2", "-1"])
def test_bad_cpu_lists_are_errors(text):
    with pytest.raises(ValueError):
        llamacpp.parse_cpu_list(text)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ({"hw.perflevel0.physicalcpu": "4", "hw.physicalcpu": "10"}, 4),  # Apple Silicon: P-cores only
        ({"hw.physicalcpu": "8"}, 8),  # Intel Mac: no perflevels
        ({"hw.perflevel0.physicalcpu": "junk", "hw.physicalcpu": "6"}, 6),
        ({}, 0),
    ],
)
def test_macos_performance_cores(answers, expected):
    assert llamacpp._macos_cores(answers.get) == expected


def test_physical_cores_on_macos_uses_sysctl(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(llamacpp, "_sysctl", {"hw.perflevel0.physicalcpu": "6"}.get)
    assert llamacpp.physical_cores() == 6


def core_record(efficiency_class: int, relationship: int = llamacpp.WIN_RELATION_PROCESSOR_CORE) -> bytes:
    """A SYSTEM_LOGICAL_PROCESSOR_INFORMATION_EX record for one core (one GROUP_AFFINITY), 48 bytes."""
    body = struct.pack("<BB20sH", 0, efficiency_class, b"", 1) + struct.pack("<QH6x", 0b11, 0)
    return struct.pack("<II", relationship, 8 + len(body)) + body


def test_windows_hybrid_counts_the_highest_efficiency_class():
    records = b"".join([core_record(1)] * 6 + [core_record(0)] * 8 + [core_record(7, relationship=2)])
    assert llamacpp.windows_cores(records) == 6


def test_windows_uniform_cores_all_count():
    assert llamacpp.windows_cores(b"".join([core_record(0)] * 4)) == 4
    assert llamacpp.windows_cores(b"") == 0
    assert llamacpp.windows_cores(struct.pack("<II", 0, 0) + b"\0" * 8) == 0  # a zero-size record ends the walk


def test_physical_cores_on_windows(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(llamacpp, "_windows_cores", lambda: 12)
    assert llamacpp.physical_cores() == 12


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 2), (4, 4), (5, 4), (8, 7), (16, 15)])
def test_default_threads_leaves_a_core_free_above_four(cores, threads):
    assert llamacpp.default_threads(cores) == threads


def test_physical_cores_is_within_the_cpus():
    assert 1 <= llamacpp.physical_cores() <= (llamacpp.os.cpu_count() or 1)


# --- llama.cpp's wait policy ---------------------------------------------------------------
@pytest.mark.parametrize(("users", "seen"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_llama_cpp_loads_with_a_passive_wait_policy_unless_the_user_chose(tmp_path, monkeypatch, users, seen):
    (tmp_path / "llama_cpp.py").write_text("import os\npolicy_at_load = os.environ.get('OMP_WAIT_POLICY')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "llama_cpp", raising=False)
    if users is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", users)
    loaded = llamacpp._import_llama_cpp()
    assert loaded.policy_at_load == seen
    assert llamacpp.os.environ.get("OMP_WAIT_POLICY") == users  # children inherit nothing new


# --- the busy-machine hint -----------------------------------------------------------------
def timings(decode_s: float, decode_cpu_s: float) -> Timings:
    return Timings(decode_s=decode_s, decode_cpu_s=decode_cpu_s, steps_s=decode_s * 1.1, steps=100)


def test_cpu_share_and_contention():
    assert timings(10.0, 18.0).cpu_share(2) == pytest.approx(0.9)
    assert not cpu_contended(timings(10.0, 18.0).cpu_share(2))
    assert cpu_contended(timings(10.0, 6.0).cpu_share(2))  # 30% of two threads' time
    assert timings(MIN_JUDGED_DECODE_S / 2, 0.0).cpu_share(2) is None  # too short to judge
    assert not cpu_contended(None)
    assert not cpu_contended(CONTENDED_CPU_SHARE)


def fake_result(share: float | None, threads: int) -> SimpleNamespace:
    return SimpleNamespace(cpu_share=share, cpu_contended=cpu_contended(share), threads=threads)


def test_hint_names_threads_only_when_contended():
    hint = contention_hint(fake_result(0.3, 4))
    assert hint is not None and hint.startswith("hint: ") and "\n" not in hint
    assert "--threads" in hint and "30%" in hint
    assert "--threads" not in contention_hint(fake_result(0.3, 1))
    assert contention_hint(fake_result(0.9, 4)) is None
    assert contention_hint(fake_result(None, 4)) is None


@pytest.mark.slow
def test_stats_record_threads_and_cpu_share(tiny_gguf, tmp_path, capsys):
    model = tiny_gguf()
    code, _, err = run_cli(["gen", "a piano piece", "-m", str(model), "-n", "2", "--max-tokens", "30", "--seed", "1",
                            "--threads", str(LLAMA_THREADS), "-o", str(tmp_path / "o"), "--quiet"], capsys)  # fmt: skip
    assert code == 0, err
    stats = json.loads((tmp_path / "o" / "generation_stats.json").read_text())
    assert stats["threads"] == LLAMA_THREADS
    assert stats["timings"]["decode_cpu_s"] > 0
    assert "cpu_share" in stats["timings"] and isinstance(stats["cpu_contended"], bool)
