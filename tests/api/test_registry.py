"""The index registry: versions swapped in whole, half-written folders never read, bad versions refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from phenoprint.api import registry as registry_module
from phenoprint.api.registry import IndexRegistry
from phenoprint.errors import UnknownExperimentError
from phenoprint.index.experiment import ExperimentIndex
from tests.api.conftest import PER_PLATE, TARGET, Artifacts
from tests.index.conftest import rehash_manifest


@pytest.fixture
def root(artifacts: Artifacts, tmp_path: Path) -> Path:
    """A private copy of the index folder (the tests below write into it)."""
    out = tmp_path / "indexes"
    shutil.copytree(artifacts.indexes, out)
    return out


def _fingerprint(root: Path) -> str:
    return json.loads((root / TARGET / "manifest.json").read_text())["fingerprint"]


def _resave(root: Path, name: str, marker: str) -> None:
    """Write a new version of an index directory the way scripts/build_index.py does (ExperimentIndex.save)."""
    index = ExperimentIndex.load(root / name)
    index.manifest = {**index.manifest, "created": marker}
    index.save(root / name)


def test_a_scan_loads_every_index_and_a_second_scan_keeps_them(root: Path) -> None:
    registry = IndexRegistry(root, _fingerprint(root), 16)
    first = registry.refresh()
    assert sorted(first.loaded) == [TARGET, PER_PLATE]
    snapshot = registry.snapshot()
    second = registry.refresh()
    assert not second.changed
    assert sorted(second.kept) == [TARGET, PER_PLATE]
    assert registry.snapshot()[TARGET] is snapshot[TARGET]
    with pytest.raises(UnknownExperimentError, match="known: HUVEC-02, RPE-01"):
        registry.get("U2OS-01")


def test_a_replaced_index_is_swapped_in_and_old_snapshots_are_untouched(root: Path) -> None:
    registry = IndexRegistry(root, _fingerprint(root), 16)
    registry.refresh()
    before = registry.snapshot()
    _resave(root, TARGET, "second version")
    report = registry.refresh()
    assert report.loaded == (TARGET,)
    assert registry.get(TARGET).index.manifest["created"] == "second version"
    assert before[TARGET].index.manifest["created"] != "second version"
    assert registry.get(PER_PLATE) is before[PER_PLATE]


def test_half_written_and_hidden_folders_are_never_read(root: Path) -> None:
    registry = IndexRegistry(root, _fingerprint(root), 16)
    registry.refresh()
    partial = root / f".{TARGET}.tmp-abc123"
    shutil.copytree(root / TARGET, partial)
    (partial / "manifest.json").unlink()  # save() writes the manifest last
    (root / ".HUVEC-09").mkdir()
    report = registry.refresh()
    assert not report.changed
    assert sorted(registry.snapshot()) == [TARGET, PER_PLATE]


def test_between_the_two_renames_of_a_save_the_old_version_stays_served(root: Path, monkeypatch) -> None:
    registry = IndexRegistry(root, _fingerprint(root), 16)
    registry.refresh()
    served = registry.get(TARGET)
    os.rename(root / TARGET, root / f".{TARGET}.old-1234abcd")  # save(): old version renamed aside …
    report = registry.refresh()  # … and the new one not yet renamed into place
    assert report.removed == ()
    assert registry.get(TARGET) is served
    monkeypatch.setattr(registry_module, "REPLACE_GRACE_S", 0.0)  # a save that crashed between its renames
    assert registry.refresh().removed == (TARGET,)


def test_new_folders_are_picked_up_and_removed_ones_dropped(root: Path, tmp_path: Path) -> None:
    registry = IndexRegistry(root, _fingerprint(root), 16)
    registry.refresh()
    shutil.move(root / TARGET, tmp_path / TARGET)
    report = registry.refresh()
    assert report.removed == (TARGET,)
    assert sorted(registry.snapshot()) == [PER_PLATE]
    shutil.move(tmp_path / TARGET, root / TARGET)
    report = registry.refresh()
    assert report.loaded == (TARGET,)
    assert sorted(registry.snapshot()) == [TARGET, PER_PLATE]


def test_a_folder_named_after_another_experiment_is_refused(root: Path) -> None:
    registry = IndexRegistry(root, _fingerprint(root), 16)
    shutil.copytree(root / TARGET, root / "HUVEC-03")
    report = registry.refresh()
    assert "holds the index of experiment HUVEC-02" in report.failed["HUVEC-03"]
    assert sorted(registry.snapshot()) == [TARGET, PER_PLATE]


def test_a_bad_new_version_is_refused_once_and_the_old_one_kept(root: Path, caplog) -> None:
    registry = IndexRegistry(root, _fingerprint(root), 16)
    registry.refresh()
    served = registry.get(TARGET)
    manifest = root / TARGET / "manifest.json"
    data = json.loads(manifest.read_text())
    tmp = manifest.with_name("manifest.json.new")
    tmp.write_text(json.dumps({**data, "format_version": 99}))
    os.replace(tmp, manifest)  # a new inode: a new version
    report = registry.refresh()
    assert TARGET in report.failed
    assert "format version 99" in registry.refused[TARGET]
    assert registry.get(TARGET) is served
    caplog.clear()
    registry.refresh()
    assert not [r for r in caplog.records if "refused" in r.getMessage()]  # logged once per version


def test_indexes_of_another_model_are_refused(root: Path) -> None:
    registry = IndexRegistry(root, "another-model", 16)
    report = registry.refresh()
    assert not registry.snapshot()
    assert "another-model" in report.failed[TARGET]


def test_a_missing_root_keeps_what_is_served(root: Path) -> None:
    registry = IndexRegistry(root, _fingerprint(root), 16)
    registry.refresh()
    shutil.rmtree(root)
    registry.refresh()
    assert sorted(registry.snapshot()) == [TARGET, PER_PLATE]


def test_one_bad_folder_is_refused_with_its_reason_and_every_other_index_keeps_reloading(root: Path) -> None:
    """Text siRNA ids (written consistently, hashes and all) used to make every scan throw: nothing else reloaded."""
    import pandas as pd

    entries = root / PER_PLATE / "entries.parquet"
    pd.read_parquet(entries).astype({"sirna_id": str}).assign(sirna_id="siRNA-x").to_parquet(entries, index=False)
    rehash_manifest(root / PER_PLATE)
    registry = IndexRegistry(root, _fingerprint(root), 16)
    report = registry.refresh()
    assert sorted(registry.snapshot()) == [TARGET]
    assert "sirna_id" in report.failed[PER_PLATE]
    assert "sirna_id" in registry.refused[PER_PLATE]
    _resave(root, TARGET, "second version")
    report = registry.refresh()
    assert report.loaded == (TARGET,)
    assert registry.get(TARGET).index.manifest["created"] == "second version"
    assert PER_PLATE in registry.refused


def test_an_error_of_any_kind_while_loading_refuses_that_folder_only(root: Path, monkeypatch) -> None:
    """Whatever a damaged folder raises (here a check that fails with a TypeError), the scan goes on."""

    def check(loaded) -> None:
        if loaded.experiment == PER_PLATE:
            raise TypeError("unexpected")

    registry = IndexRegistry(root, _fingerprint(root), 16, check=check)
    report = registry.refresh()
    assert sorted(registry.snapshot()) == [TARGET]
    assert "TypeError: unexpected" in report.failed[PER_PLATE]


def test_the_service_starts_and_serves_beside_a_bad_folder(root: Path, settings) -> None:
    """A bad folder at startup used to make the server exit with code 3."""
    import pandas as pd
    from fastapi.testclient import TestClient

    from phenoprint.api.app import create_app

    entries = root / PER_PLATE / "entries.parquet"
    pd.read_parquet(entries).assign(sirna_id="siRNA-x").to_parquet(entries, index=False)
    rehash_manifest(root / PER_PLATE)
    with TestClient(create_app(settings.model_copy(update={"indexes": root}))) as client:
        listing = client.get("/experiments").json()
        assert [e["experiment"] for e in listing["experiments"]] == [TARGET]
        assert "sirna_id" in listing["refused"][PER_PLATE]


def test_a_folder_the_service_may_not_read_is_refused_at_warning_level_with_its_path(
    root: Path, monkeypatch, caplog
) -> None:
    """It used to be skipped with a debug line, as if it were not an index at all."""
    real_stat = os.stat
    denied = root / PER_PLATE / "manifest.json"

    def stat(path, *args, **kwargs):
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(registry_module.os, "stat", stat)
    registry = IndexRegistry(root, _fingerprint(root), 16)
    with caplog.at_level("WARNING", logger="phenoprint.api.registry"):
        report = registry.refresh()
    assert sorted(registry.snapshot()) == [TARGET]
    assert "permission denied" in report.failed[PER_PLATE]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(root / PER_PLATE) in m and "permission denied" in m for m in warnings)
    caplog.clear()
    registry.refresh()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # once, not every scan
    monkeypatch.undo()
    assert registry.refresh().loaded == (PER_PLATE,)
