"""File handling shared by every stage: atomic output (complete under its final name, or absent) and file hashes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
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
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=parent)
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
