"""The per-experiment index: save and load, centring queries (per plate too), centroids and control ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoprint.data.table import EmbeddingTable
from phenoprint.index import experiment as experiment_module
from phenoprint.index import storage
from phenoprint.index.build import build_experiment_index
from phenoprint.index.centering import apply_centering, fit_centering
from phenoprint.index.config import IndexConfig
from phenoprint.index.experiment import ExperimentIndex
from tests.index.conftest import reference_centroids


def test_save_and_load_round_trip(huvec_index: ExperimentIndex, tmp_path: Path) -> None:
    out = huvec_index.save(tmp_path / "idx")
    assert sorted(p.name for p in out.iterdir()) == [
        "centering.npz",
        "entries.parquet",
        "index.faiss",
        "manifest.json",
        "plate_groups.json",
    ]
    back = ExperimentIndex.load(out, expected_fingerprint="synthetic", expected_dim=16)
    pd.testing.assert_frame_equal(back.entries, huvec_index.entries)
    np.testing.assert_array_equal(back.vectors, huvec_index.vectors)
    np.testing.assert_array_equal(back.centroids, huvec_index.centroids)
    assert back.config == huvec_index.config
    assert back.open_set == huvec_index.open_set
    assert back.plate_groups is not None
    assert huvec_index.plate_groups is not None
    assert back.plate_groups.groups == huvec_index.plate_groups.groups
    q = back.vectors[:5]
    a, b = back.search(q, 7), huvec_index.search(q, 7)
    np.testing.assert_array_equal(a.ids, b.ids)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == storage.FORMAT_VERSION
    assert manifest["config"] == IndexConfig(center="tvn", mode="centroid").to_json()
    assert set(manifest["files"]) == {"centering.npz", "entries.parquet", "index.faiss", "plate_groups.json"}
    assert manifest["created"].endswith("+00:00")


def test_a_crash_during_save_leaves_the_previous_index_intact(
    small_table: EmbeddingTable, huvec_index: ExperimentIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = huvec_index.save(tmp_path / "idx")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = build_experiment_index(small_table, "HUVEC-02", IndexConfig(center="center", mode="centroid"))

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(experiment_module, "save_centering", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        other.save(out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert ExperimentIndex.load(out).experiment == "HUVEC-01"
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]
    other.save(out)  # and a save that completes replaces it
    assert ExperimentIndex.load(out).experiment == "HUVEC-02"
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_build_save_and_load(small_table: EmbeddingTable, tmp_path: Path, kind: str) -> None:
    index = build_experiment_index(small_table, "RPE-01", IndexConfig(kind=kind, nprobe=4, ef_search=64))
    back = ExperimentIndex.load(index.save(tmp_path / kind))
    np.testing.assert_array_equal(back.vectors, index.vectors)
    assert back.manifest["index"]["kind"] == kind
    assert back.search(back.vectors[:3], 1).ids[:, 0].tolist() == [0, 1, 2]


def test_per_plate_centering_needs_the_plates(small_table: EmbeddingTable) -> None:
    index = build_experiment_index(
        small_table, "HUVEC-02", IndexConfig(center="center", mode="centroid", per_plate=True)
    )
    assert sorted(index.centering) == [f"HUVEC-02/{p}" for p in range(1, 5)]
    rows = small_table.experiment_mask("HUVEC-02")
    x = small_table.features[rows]
    plates = small_table.meta.Metadata_plate.to_numpy()[rows]
    with pytest.raises(ValueError, match="centred per plate: pass plates"):
        index.center(x)
    got = index.center(x, plates)
    on3 = plates == 3
    stats = fit_centering(x[on3], small_table.control_mask()[rows][on3], "center")
    np.testing.assert_allclose(got[on3], apply_centering(x[on3], stats), atol=1e-6)
    with pytest.raises(ValueError, match="no centering statistics for HUVEC-02/9"):
        index.center(x[:1], np.array([9]))


def test_control_ids_come_from_the_well_type(huvec_index: ExperimentIndex) -> None:
    assert huvec_index.control_ids == frozenset({24, 25, 26, 27})


def test_centroids_are_the_unit_mean_of_each_sirnas_entries(index: ExperimentIndex) -> None:
    ids, want = reference_centroids(index)
    assert index.sirna_ids.tolist() == ids
    np.testing.assert_allclose(index.centroids, want, atol=1e-6)
    np.testing.assert_allclose(index.centroid(ids[2]), want[2], atol=1e-6)
    with pytest.raises(KeyError, match="siRNA 99999"):
        index.centroid(99999)
