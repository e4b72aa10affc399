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
