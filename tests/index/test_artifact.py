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


def test_write_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        artifact.write_json(tmp_path / "x.json", {"x": float("nan")})
