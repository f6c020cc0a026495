"""Atomic artifacts: write under a temporary name in the destination folder, fsync, then rename.

A writer holds an exclusive ``flock`` on its temporary while it writes; the kernel drops the lock when the writer
exits, however it exits. The next write of the same artifact removes the temporaries nobody holds (left by a writer
that was killed), so crashes do not accumulate hidden copies of checkpoints, indexes or tables.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not on Windows: leftovers are then judged by their age alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: A temporary created after this process started and younger than this may belong to a writer that created it an
#: instant ago and has not locked it yet: it is never removed.
STALE_GRACE_S = 60.0
#: Where locks are not supported (some network file systems), a temporary is stale only once this old.
STALE_UNLOCKABLE_S = 24 * 3600.0
_STARTED = time.time()


def _default_mode(full: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


_FILE_MODE = _default_mode(0o666)
_DIR_MODE = _default_mode(0o777)


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """``tempfile.mkdtemp`` with the process's normal folder mode: mkdtemp's 0700 would survive the rename into
    place and keep other users (a service's own account) out of the artifact."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, _DIR_MODE)
    return tmp


@contextmanager
def held(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on a file or folder (its inode: renaming it keeps the lock) until the block ends."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a cleaner tests it (microseconds)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
                    raise  # anything but "locks unsupported here", where leftovers are judged by age
        yield
    finally:
        os.close(fd)


def remove_stale(folder: str | Path, pattern: re.Pattern[str]) -> list[Path]:
    """Remove the temporaries in ``folder`` whose names match ``pattern`` and whose writer is gone.

    A temporary is stale when no process holds its lock (see :func:`held`) and it either predates this process or
    is older than :data:`STALE_GRACE_S`.

    Returns:
        What was removed.
    """
    removed = []
    try:
        with os.scandir(folder) as it:
            candidates = [Path(e.path) for e in it if pattern.fullmatch(e.name) and not e.is_symlink()]
    except OSError:
        return []
    freed = 0
    for path in candidates:
        size = _size(path)
        if not _is_stale(path):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if not path.exists():
            removed.append(path)
            freed += size
    if removed:
        log.info(
            "removed %d temporary file(s) left by interrupted writes in %s (%.1f MB): %s",
            len(removed),
            folder,
            freed / 1e6,
            ", ".join(p.name for p in removed[:5]),
        )
    return removed


def _is_stale(path: Path) -> bool:
    try:
        mtime = os.lstat(path).st_mtime
    except OSError:
        return False
    age = time.time() - mtime
    if mtime >= _STARTED and age < STALE_GRACE_S:
        return False
    if fcntl is None:
        return age > STALE_UNLOCKABLE_S
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # its writer is alive
        return False
    except OSError:  # locks unsupported here
        return age > STALE_UNLOCKABLE_S
    finally:
        os.close(fd)
    return True


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def remove_stale_temporaries_of(path: str | Path) -> list[Path]:
    """Remove what killed :func:`atomic_path` writes of ``path`` left beside it (for a file about to be deleted,
    whose next write would otherwise have done it)."""
    path = Path(path)
    return remove_stale(path.parent, _temp_file_pattern(path.name))


def _temp_file_pattern(name: str) -> re.Pattern[str]:
    """The names ``tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp")`` gives (8 random characters)."""
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.tmp")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was, so a reader never
    sees a half-written file under the final name. Temporaries of earlier writes of ``path`` whose writer was killed
    are removed first (:func:`remove_stale`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, _temp_file_pattern(path.name))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with held(tmp):  # while it is written: the next writer must not take it for a leftover
            yield tmp
            os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600; artifacts are ordinary files
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(data: bytes, path: str | Path) -> Path:
    """Write bytes atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(data: Any, path: str | Path) -> Path:
    """Write JSON (indented, keys sorted) atomically (see :func:`atomic_path`); the project's one JSON writer.

    Raises:
        ValueError: ``data`` holds NaN or an infinity, which strict JSON readers refuse (nothing is written).
    """
    try:
        text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"{path}: NaN or infinity cannot be written as JSON ({exc}); expected finite numbers") from exc
    return write_bytes_atomic((text + "\n").encode(), path)
