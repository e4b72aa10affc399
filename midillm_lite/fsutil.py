"""File handling shared by every stage: atomic output (complete under its final name, or absent) and file hashes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import Opt, UserError


def check_writable_target(path: Path, *, force: bool) -> None:
    """Refuse to overwrite an existing file unless forced, and name the fix."""
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file name")
    # lexists: a symbolic link to nothing is still a name someone made; replacing it needs the same consent.
    if os.path.lexists(path) and not force:
        what = "already exists" if path.exists() else "is a symbolic link to nothing"
        raise UserError(f"{path} {what}; use ", Opt("force", True), " to overwrite it or choose another name")


@contextlib.contextmanager
def atomic_path(path: Path, *, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name sits in the same folder so the rename is atomic on one
    filesystem. On any failure (including KeyboardInterrupt) it is removed.
    """
    path = Path(path)
    if not force:
        check_writable_target(path, force=False)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        # The pid in the name lets a later run tell a dead run's leftover from a file still being written.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=PART_SUFFIX, dir=parent)
    except OSError as exc:
        raise UserError(f"cannot write in {parent}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600; a finished file gets what open() would give it
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise UserError(f"no space left on the device while writing {path}; nothing was written") from exc
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


PART_SUFFIX = ".part"
STALE_PART_AGE_S = 24 * 3600  # a temporary file from before names held a pid is only removed once this old


def remove_stale_parts(path: Path) -> list[Path]:
    """Remove the temporary files of `path` (atomic_path's, and anything built on their names) left by runs
    that were killed; those of a live process, or too recent to judge, are kept. Returns what was removed."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}."
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        fields = entry.name[len(prefix) :].split(".") if entry.name.startswith(prefix) else []
        if len(fields) >= 3 and fields[0].isdigit() and fields[2] == PART_SUFFIX[1:]:
            stale = not process_alive(int(fields[0]))
        elif len(fields) >= 2 and fields[1] == PART_SUFFIX[1:]:
            stale = _age(entry) > STALE_PART_AGE_S
        else:
            continue
        if stale and entry.is_file():
            with contextlib.suppress(OSError):
                entry.unlink()
                removed.append(entry)
    return removed


def _age(entry: Path) -> float:
    try:
        return time.time() - entry.stat().st_mtime
    except OSError:
        return 0.0


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False
    return True


def _default_mode() -> int:
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


HASH_CHUNK = 1 << 20  # bytes read at a time: hashing a 2 GB model must not hold it in memory


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content, read a chunk at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes, *, force: bool = True) -> None:
    """Write `data` to `path` atomically (fsync'd before the rename)."""
    with atomic_path(path, force=force) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: Path, text: str, *, force: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), force=force)
