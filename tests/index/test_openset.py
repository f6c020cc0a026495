"""The open-set rule: calibration, and unknowns flagged on a novel siRNA more often than on known ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenoprint.data.table import EmbeddingTable
from phenoprint.index.build import build_experiment_index
from phenoprint.index.classify import classify
from phenoprint.index.config import IndexConfig
from phenoprint.index.openset import (
    OpenSetThreshold,
    calibrate_open_set,
    cross_batch_centroid_similarity,
    flag_unknown,
)
from phenoprint.index.simulate import VectorDesign, simulate_table


def test_threshold_is_the_quantile_of_the_known_scores() -> None:
    s = np.random.default_rng(0).uniform(size=200)
    t = calibrate_open_set(s, 0.1, "training_entries")
    assert t.threshold == pytest.approx(np.quantile(s, 0.1))
    assert flag_unknown(s, t.threshold).mean() == pytest.approx(0.1, abs=0.01)
    assert t.n_calibration == 200
    assert OpenSetThreshold.from_json(t.to_json()) == t
    assert t.to_json()["statistic"] == "best_centroid_cosine"
    off = calibrate_open_set(s, 0.0)
    assert np.isneginf(off.threshold)
    assert not flag_unknown(s, off.threshold).any()
    assert OpenSetThreshold.from_json(off.to_json()) == off
    empty = calibrate_open_set(np.array([-np.inf]), 0.05)
    assert empty.source == "none"
    assert empty.n_calibration == 0
    with pytest.raises(ValueError, match=r"quantile must be in \[0, 1\); got 1.0"):
        calibrate_open_set(s, 1.0)


def test_centroid_similarity_leaves_the_query_batch_out() -> None:
    rng = np.random.default_rng(2)
    e = rng.normal(size=(12, 5))
    labels = np.array([0, 1, 2] * 4)
    batches = np.repeat(list("abcd"), 3)
    q, qb = rng.normal(size=(4, 5)), np.array(list("abcd"))
    got = cross_batch_centroid_similarity(q, qb, e, labels, batches)
    with pytest.raises(ValueError, match="batch labels must match the rows"):
        cross_batch_centroid_similarity(q, qb[:2], e, labels, batches)
    for i in range(4):
        other = batches != qb[i]
        cents = [e[other & (labels == s)].mean(axis=0) for s in range(3)]
        want = max(float(q[i] @ c / np.linalg.norm(c)) for c in cents)
        assert got[i] == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("calibration", ["training", "controls"])
def test_a_novel_sirna_is_flagged_more_often_than_known_ones(calibration: str) -> None:
    design = VectorDesign.small(cell_types=(("HUVEC", 6),), dim=32, noise_scale=0.6)
    table = simulate_table(design, seed=3)
    novel = np.arange(0, 24, 4)  # 6 treatments, one of every 4, never labelled outside the target
    flagged_novel, flagged_known = [], []
    for target in ("HUVEC-01", "HUVEC-02", "HUVEC-03"):
        meta = table.meta.copy()
        hide = meta.Metadata_sirna_id.isin(novel) & (meta.Metadata_experiment != target)
        meta.loc[hide, "Metadata_sirna_id"] = pd.NA
        hidden = EmbeddingTable(meta, table.features, table.feature_names, table.fingerprint)
        config = IndexConfig(open_set_quantile=0.1, open_set_calibration=calibration)
        index = build_experiment_index(hidden, target, config)
        assert not np.isin(index.sirna_ids, novel).any()
        rows = hidden.experiment_mask(target) & ~hidden.control_mask()
        got = classify(index.center(hidden.features[rows]), index, k=1)
        is_novel = np.isin(hidden.labels()[rows], novel)
        flagged_novel += got.unknown[is_novel].tolist()
        flagged_known += got.unknown[~is_novel].tolist()
    assert np.mean(flagged_novel) > np.mean(flagged_known)
    if calibration == "training":  # the default: calibrated on wells like the queries
        assert np.mean(flagged_novel) >= 0.6
        assert np.mean(flagged_known) <= 0.2
