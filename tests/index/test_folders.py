"""What a folder given as ``--indexes`` holds, and what to pass instead when it is a mistake."""

from __future__ import annotations

import json
from pathlib import Path

from phenoprint.index.folders import INDEX_ARTIFACT, inspect_index_folder
from phenoprint.index.storage import ARTIFACT_KIND


def _index(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"artifact": INDEX_ARTIFACT, "experiment": path.name}))
    return path


def test_a_folder_of_indexes_and_a_single_index(tmp_path: Path) -> None:
    a, b = _index(tmp_path / "root" / "HUVEC-01"), _index(tmp_path / "root" / "RPE-01")
    (tmp_path / "root" / ".HUVEC-01.tmp-x").mkdir()  # a save in progress is never an index
    root = inspect_index_folder(tmp_path / "root")
    assert (root.kind, root.indexes, root.ok) == ("root", (a, b), True)
    single = inspect_index_folder(a)
    assert (single.kind, single.indexes, single.ok) == ("index", (a,), True)


def test_mistakes_say_what_to_pass(tmp_path: Path) -> None:
    _index(tmp_path / "demo" / "indexes" / "HUVEC-04")
    missing = inspect_index_folder(tmp_path / "demo" / "indexs")
    assert missing.kind == "missing"
    assert "does not exist" in str(missing.problem)
    nested = inspect_index_folder(tmp_path / "demo")
    assert nested.kind == "other"
    assert f"pass --indexes {tmp_path / 'demo' / 'indexes'}" in str(nested.problem)
    tables = tmp_path / "embeddings"
    tables.mkdir()
    (tables / "reference.parquet").write_bytes(b"PAR1")
    parquet = inspect_index_folder(tables)
    assert "holds 1 Parquet file(s) (embedding tables such as reference.parquet), not index directories" in str(
        parquet.problem
    )
    assert "scripts/build_index.py --out" in str(parquet.problem)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    assert "is a model run (pass it as --model)" in str(inspect_index_folder(run).problem)
    (tmp_path / "file").write_text("x")
    assert inspect_index_folder(tmp_path / "file").kind == "file"


def test_the_demo_folder_is_not_taken_for_a_folder_of_indexes(tmp_path: Path) -> None:
    """The demo folder holds packs, whose manifest.json is not an index's, and the indexes one level down."""
    assert INDEX_ARTIFACT == ARTIFACT_KIND
    demo = tmp_path / "demo"
    _index(demo / "indexes" / "HUVEC-04")
    (demo / "data.pack").mkdir(parents=True)
    (demo / "data.pack" / "manifest.json").write_text(json.dumps({"format_version": 1, "shape": [1, 6, 8, 8]}))
    folder = inspect_index_folder(demo)
    assert folder.kind == "other"
    assert f"pass --indexes {demo / 'indexes'}" in str(folder.problem)


def test_an_empty_folder_is_not_a_mistake(tmp_path: Path) -> None:
    """A service may start before the first index is written (it rescans the folder)."""
    empty = inspect_index_folder(tmp_path)
    assert (empty.kind, empty.ok, empty.indexes) == ("empty", True, ())
