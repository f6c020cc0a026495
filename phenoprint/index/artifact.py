"""Atomic artifact directories: write a temporary sibling, fsync, manifest last, then swap it in."""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phenoprint.atomic import held, make_temp_dir, remove_stale, write_json_atomic

MANIFEST_NAME = "manifest.json"


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_artifact_dir(
    out: str | Path, write_files: Callable[[Path], None], manifest: Callable[[Path], dict[str, Any]]
) -> Path:
    """Create or replace the directory ``out`` so that readers only ever see a complete artifact.

    ``write_files(tmp)`` fills a temporary sibling directory; every file is then fsynced, the manifest
    (``manifest(tmp)``, which may inspect the files) is written last, and the directory is renamed into place.
    An existing ``out`` is first renamed aside and deleted only after the new one carries the name, so a crash at
    any point leaves either the old artifact or the new one under ``out`` (or, between the two renames, the old
    one under ``.<name>.old-*``), never a half-written one. The hidden folders a crash leaves are removed by the
    next write of ``out`` (:func:`phenoprint.atomic.remove_stale`); the folder gets the process's normal mode.

    Returns:
        ``out`` as a Path.
    """
    out = Path(out)
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale(parent, re.compile(rf"\.{re.escape(out.name)}\.(tmp|old)-[a-z0-9_]{{8}}"))
    tmp = make_temp_dir(parent, prefix=f".{out.name}.tmp-")
    try:
        with held(tmp):  # a concurrent writer of the same artifact must not take it for a crash's leftover
            write_files(tmp)
            for f in tmp.iterdir():
                if f.is_file():
                    _fsync_file(f)
            write_json_atomic(manifest(tmp), tmp / MANIFEST_NAME)
            _fsync_dir(tmp)
            if out.exists():
                _swap(out, tmp)
            else:
                os.rename(tmp, out)
                _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap(out: Path, tmp: Path) -> None:
    """Rename ``out`` aside (held, so that no other writer removes it meanwhile), ``tmp`` into place, then delete
    the old version."""
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    with held(out):
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        _fsync_dir(out.parent)
        shutil.rmtree(old, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
