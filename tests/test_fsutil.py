"""Atomic writes: a file appears complete under its final name, or not at all."""

import errno

import pytest

from midillm_lite import fsutil
from midillm_lite.errors import UserError


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_writes_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.bin"
    fsutil.atomic_write_bytes(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert _leftovers(tmp_path) == []


def test_creates_missing_parent(tmp_path):
    target = tmp_path / "x" / "y" / "a.txt"
    fsutil.atomic_write_text(target, "hi")
    assert target.read_text() == "hi"


def test_refuses_to_overwrite_without_force(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(UserError, match="force=True"):
        fsutil.atomic_write_text(target, "new", force=False)
    assert target.read_text() == "old"
    fsutil.atomic_write_text(target, "new", force=True)
    assert target.read_text() == "new"


def test_refuses_a_folder_as_target(tmp_path):
    with pytest.raises(UserError, match="folder"):
        fsutil.check_writable_target(tmp_path, force=True)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("boom")])
def test_failure_inside_the_block_keeps_the_old_file(tmp_path, exc):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(type(exc)), fsutil.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise exc
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_disk_full_is_one_clear_error(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil.os, "fsync", full)
    with pytest.raises(UserError, match="no space left"):
        fsutil.atomic_write_text(target, "data")
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_unwritable_folder_is_one_clear_error(tmp_path, monkeypatch):
    # Injected rather than chmod'ed: the suite may run as root, which ignores permissions.
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", denied)
    with pytest.raises(UserError, match="cannot write in"):
        fsutil.atomic_write_text(tmp_path / "a.txt", "x")


def _dead_pid() -> int:
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)  # fmt: skip


def test_stale_parts_of_dead_runs_are_removed(tmp_path, capsys, caplog):
    # Issue 14: hidden .part files left by a killed convert were never cleaned up.
    import os
    import time

    from clirun import run_cli

    from midillm_lite.fsutil import STALE_PART_AGE_S, atomic_path, remove_stale_parts

    target = tmp_path / "m.gguf"
    with atomic_path(target) as tmp:  # the naming the cleanup relies on: the writer's pid
        assert tmp.name.startswith(f".m.gguf.{os.getpid()}.") and tmp.name.endswith(".part")
        tmp.write_bytes(b"x")
    dead = _dead_pid()
    stale = [tmp_path / f".m.gguf.{dead}.abc123.part", tmp_path / f".m.gguf.{dead}.abc123.part.intermediate.gguf"]
    live = tmp_path / f".m.gguf.{os.getpid()}.def456.part"  # a run still writing
    old_style, fresh_old_style = tmp_path / ".m.gguf.q1w2e3.part", tmp_path / ".m.gguf.r4t5y6.part"
    others = [tmp_path / ".other.gguf.1.abc.part", tmp_path / "m.gguf.notes"]
    for path in [*stale, live, old_style, fresh_old_style, *others]:
        path.write_bytes(b"partial")
    long_ago = time.time() - STALE_PART_AGE_S - 60
    os.utime(old_style, (long_ago, long_ago))
    assert sorted(remove_stale_parts(target)) == sorted([*stale, old_style])
    assert all(p.exists() for p in [target, live, fresh_old_style, *others])
    stale[0].write_bytes(b"partial")
    code, _, err = run_cli(["convert", str(tmp_path / "no-such-checkpoint"), "-o", str(target), "--force"], capsys)
    assert code == 2 and "neither a local folder" in err and not stale[0].exists()
    assert "removed 1 temporary file(s) left beside" in caplog.text  # the CLI shows warnings on stderr
