"""Atomic artifact directories: complete or absent under the final name, whatever fails."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from phenoprint.index import artifact
from phenoprint.index.artifact import write_artifact_dir


def _writer(text: str):
    def write(tmp: Path) -> None:
        (tmp / "data.txt").write_text(text)

    return write


def _manifest(tmp: Path) -> dict:
    return {"files": sorted(p.name for p in tmp.iterdir())}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_new_directory_gets_its_files_and_the_manifest_last(tmp_path: Path) -> None:
    out = write_artifact_dir(tmp_path / "a", _writer("one"), _manifest)
    assert (out / "data.txt").read_text() == "one"
    assert json.loads((out / "manifest.json").read_text()) == {"files": ["data.txt"]}
    assert _leftovers(tmp_path) == []


def test_an_existing_directory_is_replaced_whole(tmp_path: Path) -> None:
    write_artifact_dir(tmp_path / "a", _writer("one"), _manifest)
    (tmp_path / "a" / "stale.txt").write_text("from the old one")
    write_artifact_dir(tmp_path / "a", _writer("two"), _manifest)
    assert (tmp_path / "a" / "data.txt").read_text() == "two"
    assert not (tmp_path / "a" / "stale.txt").exists()
    assert _leftovers(tmp_path) == []


def test_a_crash_while_writing_files_leaves_the_old_directory(tmp_path: Path) -> None:
    write_artifact_dir(tmp_path / "a", _writer("one"), _manifest)

    def crash(tmp: Path) -> None:
        (tmp / "data.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_artifact_dir(tmp_path / "a", crash, _manifest)
    assert (tmp_path / "a" / "data.txt").read_text() == "one"
    assert _leftovers(tmp_path) == []


def test_a_crash_before_the_first_write_leaves_nothing(tmp_path: Path) -> None:
    def crash(tmp: Path) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_artifact_dir(tmp_path / "a", crash, _manifest)
    assert not (tmp_path / "a").exists()
    assert _leftovers(tmp_path) == []


def test_a_failed_swap_puts_the_old_directory_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_artifact_dir(tmp_path / "a", _writer("one"), _manifest)
    real_rename = os.rename
    calls = []

    def flaky_rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new directory moving in
            raise OSError("rename failed")
        return real_rename(src, dst)

    monkeypatch.setattr(artifact.os, "rename", flaky_rename)
    with pytest.raises(OSError, match="rename failed"):
        write_artifact_dir(tmp_path / "a", _writer("two"), _manifest)
    monkeypatch.undo()
    assert (tmp_path / "a" / "data.txt").read_text() == "one"
    assert (tmp_path / "a" / "manifest.json").is_file()
    assert _leftovers(tmp_path) == []


def _crash_leftover(parent: Path, name: str, *, folder: bool = True, age_s: float = 3600.0) -> Path:
    """What a writer killed mid-write leaves: a hidden temporary, nobody holding it, from before this process."""
    path = parent / name
    if folder:
        path.mkdir()
        (path / "index.faiss").write_bytes(b"\0" * 1000)
    else:
        path.write_bytes(b"\0" * 1000)
    old = os.stat(path).st_mtime - age_s
    os.utime(path, (old, old))
    return path


def test_leftovers_of_a_crashed_save_are_removed_at_the_next_save_of_that_artifact(tmp_path: Path) -> None:
    write_artifact_dir(tmp_path / "a", _writer("one"), _manifest)
    _crash_leftover(tmp_path, ".a.tmp-k3x9q2zz")  # killed while writing
    _crash_leftover(tmp_path, ".a.old-1a2b3c4d")  # killed between its two renames
    other = _crash_leftover(tmp_path, ".b.tmp-k3x9q2zz")  # another artifact's: its own next save cleans it
    write_artifact_dir(tmp_path / "a", _writer("two"), _manifest)
    assert _leftovers(tmp_path) == [other.name]
    assert (tmp_path / "a" / "data.txt").read_text() == "two"


def test_a_temporary_whose_writer_is_alive_is_kept(tmp_path: Path) -> None:
    """A concurrent writer holds a lock on its temporary folder: only the lock's absence makes a leftover stale."""
    import fcntl

    busy = _crash_leftover(tmp_path, ".a.tmp-busybusy")
    fd = os.open(busy, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        write_artifact_dir(tmp_path / "a", _writer("one"), _manifest)
        assert busy.is_dir()
    finally:
        os.close(fd)
    write_artifact_dir(tmp_path / "a", _writer("two"), _manifest)
    assert not busy.exists()


def test_artifact_folders_get_the_process_umask_not_0700(tmp_path: Path) -> None:
    """mkdtemp creates 0700: another user (the Docker image's non-root one) could not read an index."""
    umask = os.umask(0o022)
    try:
        out = write_artifact_dir(tmp_path / "a", _writer("one"), _manifest)
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o755
