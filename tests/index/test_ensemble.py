"""``--center ensemble``: the mean cosine over every centering, stored view by view and applied to queries as built;
``auto`` on profiles (no model fingerprint) resolves to it with cosine 1-NN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phenoprint.data.table import EmbeddingTable
from phenoprint.errors import IndexFormatError
from phenoprint.index.build import build_experiment_index, scope_mask
from phenoprint.index.centering import CENTER_METHODS
from phenoprint.index.choose import choose_config
from phenoprint.index.classify import classify
from phenoprint.index.config import IndexConfig
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.index.table_centering import (
    WHITENING,
    center_table,
    ensemble_views,
    fit_table_centering,
    split_views,
)

TARGET = "HUVEC-01"


def _profiles(table: EmbeddingTable) -> EmbeddingTable:
    """The table as profiles no model was trained on (no fingerprint)."""
    return EmbeddingTable(table.meta, table.features, table.feature_names)


def test_the_ensemble_cosine_is_the_mean_of_every_views_cosine(small_table: EmbeddingTable) -> None:
    stats = fit_table_centering(small_table, "ensemble", "controls", pca_dim=None, ridge=0.1, per_plate=True)
    views = ensemble_views("controls")
    assert list(split_views(stats)) == list(views)  # every view, in order
    x = center_table(small_table, stats, True)
    assert x.shape == (len(small_table), len(views) * small_table.dim)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    # re-derived: each view centred on its own, the cosine of two wells averaged over the views
    rng = np.random.default_rng(0)
    i, j = rng.choice(len(small_table), size=(2, 50))
    expected = np.zeros(50)
    for method, per_plate in views:
        st = fit_table_centering(small_table, method, "controls", pca_dim=None, ridge=0.1, per_plate=per_plate)
        v = center_table(small_table, st, per_plate)
        expected += (v[i] * v[j]).sum(axis=1) / len(views)
    np.testing.assert_allclose((x[i] * x[j]).sum(axis=1), expected, rtol=1e-4, atol=1e-5)


def test_on_all_wells_the_ensemble_leaves_the_whitening_centerings_out() -> None:
    on_controls = ensemble_views("controls")
    on_all = ensemble_views("all")
    assert {m for m, _ in on_controls} == set(CENTER_METHODS)
    assert {m for m, _ in on_all} == set(CENTER_METHODS) - WHITENING
    assert len(on_controls) == 2 * len(CENTER_METHODS) - 1  # per experiment and per plate; none once


def test_an_ensemble_index_centres_queries_as_it_was_built_and_survives_a_round_trip(
    small_table: EmbeddingTable, tmp_path: Path
) -> None:
    config = IndexConfig(center="ensemble", mode="knn", n_neighbors=1)
    assert config.per_plate  # its per-plate views need each well's plate
    index = build_experiment_index(small_table, TARGET, config)
    views = len(ensemble_views("controls"))
    assert (index.dim, index.vector_dim) == (small_table.dim, views * small_table.dim)
    loaded = ExperimentIndex.load(index.save(tmp_path / "i"))
    target = small_table.experiment_mask(TARGET)
    raw = small_table.features[target]
    plates = small_table.meta.loc[target, "Metadata_plate"].to_numpy()
    # the pooled views' whitening: fitted on every experiment in scope (the default, --pool all)
    scoped = small_table.subset(scope_mask(small_table, TARGET, config.scope))
    stats = fit_table_centering(scoped, "ensemble", "controls", pca_dim=None, ridge=0.1, per_plate=True)
    built = center_table(scoped, stats, True)[scoped.experiment_mask(TARGET)]
    np.testing.assert_allclose(loaded.center(raw, plates), built, rtol=1e-5, atol=1e-6)
    assert loaded.plates == index.plates
    assert len(loaded.plates) > 1
    a = classify(loaded.center(raw, plates), loaded, k=3, mode="knn")
    b = classify(index.center(raw, plates), index, k=3, mode="knn")
    np.testing.assert_array_equal(a.top1, b.top1)
    with pytest.raises(ValueError, match="pass plates"):
        loaded.center(raw)


def test_an_ensemble_index_whose_statistics_name_another_centering_is_refused(
    small_table: EmbeddingTable, tmp_path: Path
) -> None:
    from dataclasses import replace

    from phenoprint.index.centering import save_centering
    from tests.index.conftest import rehash_manifest

    index = build_experiment_index(small_table, TARGET, IndexConfig(center="ensemble", mode="knn"))
    folder = index.save(tmp_path / "i")
    key = next(k for k in index.centering if k.startswith("center_scale::"))
    tampered = {**index.centering, key: replace(index.centering[key], method="tvn")}
    save_centering(folder / "centering.npz", tampered)
    rehash_manifest(folder)
    with pytest.raises(IndexFormatError, match="its key says 'center_scale'"):
        ExperimentIndex.load(folder)


def test_split_views_refuses_a_key_that_names_no_view() -> None:
    with pytest.raises(ValueError, match="not <centering>"):
        split_views({"whiten::HUVEC-01": None})  # type: ignore[dict-item]


def test_auto_on_profiles_is_the_ensemble_with_cosine_1nn(small_table: EmbeddingTable) -> None:
    profiles = _profiles(small_table)
    config, sel = choose_config(profiles, TARGET, IndexConfig(center="auto", mode="auto"))
    assert (config.center, config.per_plate, config.mode, config.n_neighbors) == ("ensemble", True, "knn", 1)
    assert "profiles no model was trained on" in sel.reason
    assert "15 centerings" in sel.reason
    # a mode or centering the user fixed is kept
    config, _ = choose_config(profiles, TARGET, IndexConfig(center="auto", mode="centroid"))
    assert (config.center, config.mode) == ("ensemble", "centroid")
    config, _ = choose_config(profiles, TARGET, IndexConfig(center="center_scale", per_plate=True, mode="auto"))
    assert (config.center, config.per_plate, config.mode, config.n_neighbors) == ("center_scale", True, "knn", 1)
    # embeddings keep the choice on their controls
    config, sel = choose_config(small_table, TARGET, IndexConfig(center="auto", mode="auto"))
    assert config.center != "ensemble"
    assert "labelled control wells" in sel.reason


def test_a_batch_offset_and_gain_leave_every_standardizing_view_of_the_ensemble_unchanged(
    small_table: EmbeddingTable,
) -> None:
    """The ensemble keeps ``none`` and ``center`` on purpose (profiles often come normalized already, and their raw
    view carries signal), so as a whole it is not invariant; each view that standardizes is, the pooled ones too: a
    batch's offset and per-feature gain are removed by its own per-batch step before any pooling."""
    d = small_table.dim
    rng = np.random.default_rng(1)
    batch = small_table.experiment_mask("HUVEC-02")
    x = small_table.features.astype(np.float64).copy()
    x[batch] = x[batch] * rng.uniform(0.5, 3.0, size=d) + rng.normal(size=d) * 5
    moved = EmbeddingTable(small_table.meta, x.astype(np.float32), small_table.feature_names, small_table.fingerprint)
    views = ensemble_views("controls")
    a, b = (
        center_table(t, fit_table_centering(t, "ensemble", "controls", pca_dim=None, ridge=0.1, per_plate=True), True)
        for t in (small_table, moved)
    )
    for i, (method, _) in enumerate(views):
        cols = slice(i * d, (i + 1) * d)
        same = np.allclose(a[:, cols], b[:, cols], atol=2e-4)
        assert same == (method not in ("none", "center")), views[i]


def test_index_build_on_profiles_defaults_to_the_ensemble_and_counts_each_reference_well_once(
    profiles_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from phenoprint.cli import main

    out = tmp_path / "idx"
    argv = ["-q", "index", "build", "--embeddings", str(profiles_path), "--experiment", "batch1", "--out", str(out)]
    assert main([*argv, "--center-on", "all", "--scope", "all"]) == 0
    printed = capsys.readouterr().out
    assert "the ensemble of 7 centerings" in printed
    assert "whole table" not in printed
    index = ExperimentIndex.load(out)
    assert (index.config.center, index.config.mode, index.config.n_neighbors) == ("ensemble", "knn", 1)
    assert index.manifest["counts"]["reference_wells"] == 16  # batch1's 2 plates x 8 wells, not x 7 views
    assert {v.partition("::")[0] for v in index.centering} == {
        "none",
        "center",
        "center/plate",
        "center_scale",
        "center_scale/plate",
        "mad_robustize",
        "mad_robustize/plate",
    }
