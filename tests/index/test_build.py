"""Building a per-experiment index: what goes in, and each experiment centred with its own statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoprint.data.table import EmbeddingTable
from phenoprint.errors import EmbeddingTableError, UnknownExperimentError
from phenoprint.index import build as build_module
from phenoprint.index import storage
from phenoprint.index.build import build_experiment_index
from phenoprint.index.centering import apply_centering, fit_centering
from phenoprint.index.config import IndexConfig
from phenoprint.index.experiment import ExperimentIndex


def _rows(table: EmbeddingTable, experiment: str) -> np.ndarray:
    return table.experiment_mask(experiment)


def test_entries_are_own_controls_plus_labelled_wells_of_the_same_cell_type(huvec_index: ExperimentIndex) -> None:
    e = huvec_index.entries
    own = e[e.experiment == "HUVEC-01"]
    assert len(own) == 4 * 4  # 4 plates x (3 positive controls + 1 untreated)
    assert set(own.kind) == {"control"}
    assert set(own.well_type) == {"positive_control", "negative_control"}
    others = e[e.experiment != "HUVEC-01"]
    assert set(others.experiment) == {"HUVEC-02", "HUVEC-03", "HUVEC-04"}
    assert set(others.kind) == {"training"}
    assert len(others) == 3 * 4 * 10
    assert list(e.columns) == list(storage.ENTRY_COLUMNS)
    m = huvec_index.manifest
    assert m["counts"] == {
        "entries": 136,
        "controls": 16,
        "training": 120,
        "sirnas": 28,
        "source_experiments": 3,
        "reference_wells": 16,
    }
    assert m["cell_type"] == "HUVEC"
    assert m["dim"] == 16
    assert m["fingerprint"] == "synthetic"
    assert m["centering"]["method"] == "tvn"
    assert huvec_index.plate_groups is not None
    assert sorted(len(g) for g in huvec_index.plate_groups.groups.values()) == [6, 6, 6, 6]


def test_scope_all_adds_the_other_cell_types(small_table: EmbeddingTable) -> None:
    index = build_experiment_index(small_table, "HUVEC-01", IndexConfig(scope="all"))
    assert len(index) == 136 + 3 * 40
    assert set(index.entries.cell_type) == {"HUVEC", "RPE"}


def test_every_experiment_is_centred_with_its_own_statistics(
    small_table: EmbeddingTable, huvec_index: ExperimentIndex
) -> None:
    for exp in ("HUVEC-01", "HUVEC-03"):
        rows = _rows(small_table, exp)
        x = small_table.features[rows]
        stats = fit_centering(x, small_table.control_mask()[rows], "tvn")
        want = apply_centering(x, stats)
        if exp == "HUVEC-01":
            np.testing.assert_allclose(huvec_index.center(x), want, atol=1e-6)
        entry_rows = np.flatnonzero(huvec_index.entries.experiment.to_numpy() == exp)
        wells = huvec_index.entries.well.to_numpy()[entry_rows]
        plates = huvec_index.entries.plate.to_numpy()[entry_rows]
        meta = small_table.meta[rows].reset_index(drop=True)
        key = {(p, w): i for i, (p, w) in enumerate(zip(meta.Metadata_plate, meta.Metadata_well, strict=True))}
        order = [key[(p, w)] for p, w in zip(plates, wells, strict=True)]
        np.testing.assert_allclose(huvec_index.vectors[entry_rows], want[order], atol=1e-6)


def test_a_new_batch_needs_only_its_control_labels(small_table: EmbeddingTable, huvec_index: ExperimentIndex) -> None:
    """Onboarding: the target's treatments have no label; the index is the same as with labels."""
    meta = small_table.meta.copy()
    unlabelled = (meta.Metadata_experiment == "HUVEC-01") & (meta.Metadata_well_type == "treatment")
    meta.loc[unlabelled, "Metadata_sirna_id"] = pd.NA
    table = EmbeddingTable(meta, small_table.features.copy(), small_table.feature_names, small_table.fingerprint)
    index = build_experiment_index(table, "HUVEC-01", IndexConfig(center="tvn", mode="centroid"))
    pd.testing.assert_frame_equal(index.entries, huvec_index.entries)
    np.testing.assert_array_equal(index.vectors, huvec_index.vectors)
    x = small_table.features[_rows(small_table, "HUVEC-01")]
    np.testing.assert_array_equal(index.center(x), huvec_index.center(x))


def test_a_crash_while_building_changes_nothing_on_disk(
    small_table: EmbeddingTable, huvec_index: ExperimentIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = huvec_index.save(tmp_path / "idx")

    def crash(*args, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(build_module.faiss_backend, "make_index", crash)
    with pytest.raises(MemoryError):
        build_experiment_index(small_table, "HUVEC-02", IndexConfig(center="tvn", mode="centroid")).save(out)
    monkeypatch.undo()
    assert ExperimentIndex.load(out).experiment == "HUVEC-01"


def test_refusals(small_table: EmbeddingTable) -> None:
    with pytest.raises(UnknownExperimentError, match="unknown experiment 'HUVEC-99'"):
        build_experiment_index(small_table, "HUVEC-99", IndexConfig(center="tvn", mode="centroid"))
    with pytest.raises(EmbeddingTableError, match="model 'synthetic' but fingerprint 'x'"):
        build_experiment_index(small_table, "HUVEC-01", IndexConfig(center="tvn", mode="centroid"), fingerprint="x")
    no_controls = small_table.subset(~small_table.control_mask())
    with pytest.raises(EmbeddingTableError, match=r"has 0 control wells.*use --center-on all"):
        build_experiment_index(no_controls, "HUVEC-01", IndexConfig(center="tvn", mode="centroid"))
    index = build_experiment_index(no_controls, "HUVEC-01", IndexConfig(reference="all"))
    assert index.manifest["counts"]["controls"] == 0
    assert index.open_set.source == "training_entries"
    with pytest.raises(ValueError, match="x_raw must have shape"):
        index.center(np.zeros((2, 3)))


def test_site_tables_are_indexed_as_wells(small_table: EmbeddingTable) -> None:
    rows = small_table.experiment_mask("RPE-01") | small_table.experiment_mask("RPE-02")
    wells = small_table.subset(rows)
    frame = wells.to_frame()
    sites = pd.concat([frame.assign(Metadata_site=1), frame.assign(Metadata_site=2)], ignore_index=True)
    table = EmbeddingTable.from_frame(sites, fingerprint="synthetic")
    index = build_experiment_index(table, "RPE-01", IndexConfig(center="center", mode="centroid"))
    assert len(index) == 16 + 40
    ref = build_experiment_index(wells, "RPE-01", IndexConfig(center="center", mode="centroid"))
    np.testing.assert_allclose(np.sort(index.vectors, axis=0), np.sort(ref.vectors, axis=0), atol=1e-6)


def test_a_zca_index_keeps_the_epsilon_it_was_built_with(small_table: EmbeddingTable, tmp_path: Path) -> None:
    plain = build_experiment_index(small_table, "HUVEC-01", IndexConfig(center="zca", mode="knn"))
    loose = build_experiment_index(small_table, "HUVEC-01", IndexConfig(center="zca", mode="knn", epsilon=1.0))
    assert loose.manifest["centering"]["epsilon"] == 1.0
    assert loose.centering["HUVEC-01"].epsilon == 1.0
    assert plain.centering["HUVEC-01"].epsilon == 1e-6
    assert not np.allclose(plain.vectors, loose.vectors, atol=1e-3)  # a larger ε whitens less
    loose.save(tmp_path / "loose")
    back = ExperimentIndex.load(tmp_path / "loose")
    assert (back.config.epsilon, back.centering["HUVEC-01"].epsilon) == (1.0, 1.0)
    x = small_table.features[_rows(small_table, "HUVEC-01")]
    np.testing.assert_allclose(back.center(x), loose.center(x), atol=1e-6)


def _shuffle_controls_per_feature(table: EmbeddingTable, experiment: str) -> EmbeddingTable:
    """The experiment's control wells with each feature's values sorted among them: every feature's median, MAD
    and spread on its controls stay (its per-batch step is unchanged), their covariance does not."""
    x = table.features.copy()
    rows = np.flatnonzero(table.experiment_mask(experiment) & table.control_mask())
    x[rows] = np.sort(x[rows], axis=0)
    return EmbeddingTable(table.meta.copy(), x, table.feature_names, table.fingerprint, dict(table.info))


def test_with_pool_training_the_whitening_of_an_index_is_fitted_without_its_target(small_table: EmbeddingTable) -> None:
    """Onboarding with ``--pool training``: the sphering is fitted on the training experiments' controls; the target's
    own controls only give its per-batch step, so the other experiments' entries do not move when those controls
    change. With the default (``--pool all``) they are pooled too, and the entries are those of the whole fit."""
    config = IndexConfig(center="zca", mode="knn", pool="training")
    before = build_experiment_index(small_table, "HUVEC-01", config)
    after = build_experiment_index(_shuffle_controls_per_feature(small_table, "HUVEC-01"), "HUVEC-01", config)
    training = before.entries.kind.to_numpy() == "training"
    assert training.any()
    np.testing.assert_allclose(after.vectors[training], before.vectors[training], atol=1e-6)
    # what the pool holds: the same index with the target's controls pooled too would differ
    from phenoprint.index.table_centering import center_table, fit_table_centering

    in_scope = small_table.subset(build_module.scope_mask(small_table, "HUVEC-01", "same_cell_type"))
    stats = fit_table_centering(in_scope, "zca", "controls", pca_dim=None, ridge=0.1, per_plate=False)
    pooled_all = center_table(in_scope, stats, per_plate=False)
    exp, plate, well = (in_scope.meta[c].to_numpy() for c in ("Metadata_experiment", "Metadata_plate", "Metadata_well"))
    at = {(e, int(p), w): i for i, (e, p, w) in enumerate(zip(exp, plate, well, strict=True))}
    e = before.entries
    order = [at[(x, int(p), w)] for x, p, w in zip(e.experiment, e.plate, e.well, strict=True)]
    assert not np.allclose(pooled_all[order][training], before.vectors[training], atol=1e-3)
    default = build_experiment_index(small_table, "HUVEC-01", IndexConfig(center="zca", mode="knn"))
    np.testing.assert_allclose(default.vectors[training], pooled_all[order][training], atol=1e-5)
