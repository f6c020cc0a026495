"""Atomic files: complete or absent under the final name; leftovers of killed writers removed at the next write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from phenoprint.atomic import atomic_path, write_bytes_atomic, write_json_atomic


def _leftover(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(b"\0" * 1000)
    os.utime(path, (1e9, 1e9))  # from before this process, and nobody holds it
    return path


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    write_bytes_atomic(b"old", tmp_path / "x.parquet")

    def fail() -> None:
        with atomic_path(tmp_path / "x.parquet") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        fail()
    assert (tmp_path / "x.parquet").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.parquet"]


def test_temporaries_of_killed_writes_are_removed_at_the_next_write_of_the_same_file(tmp_path: Path) -> None:
    stale = _leftover(tmp_path, ".emb.parquet.k2j4h5g6.tmp")  # what SIGKILL during write_embeddings leaves
    other = _leftover(tmp_path, ".other.parquet.k2j4h5g6.tmp")
    write_bytes_atomic(b"new", tmp_path / "emb.parquet")
    assert not stale.exists()
    assert other.exists()  # another file's: removed when that file is written
    assert (tmp_path / "emb.parquet").read_bytes() == b"new"


def test_a_temporary_still_being_written_is_kept(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "emb.parquet") as tmp:
        tmp.write_bytes(b"first")
        os.utime(tmp, (1e9, 1e9))  # old, but its writer (this block) holds it
        write_bytes_atomic(b"second", tmp_path / "emb.parquet")
        assert tmp.exists()
    assert (tmp_path / "emb.parquet").read_bytes() == b"first"


def test_the_json_writer_refuses_nan_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    with pytest.raises(ValueError, match=r"x\.json: NaN or infinity cannot be written as JSON"):
        write_json_atomic({"x": float("nan")}, target)
    assert list(tmp_path.iterdir()) == []
