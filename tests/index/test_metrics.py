"""Replicate mAP cross-checked against copairs, and the silhouette against its definition."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from phenoprint.data.table import EmbeddingTable
from phenoprint.index.metrics import mean_average_precision, replicate_average_precision, silhouette


def _profiles(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4 experiments x 6 siRNAs, plus a second replicate of two siRNAs inside some experiments."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 10))
    labels, batches = [], []
    for e in range(4):
        for s in range(6):
            labels.append(s)
            batches.append(f"E{e}")
        labels += [0, 1] if e % 2 else [2]
        batches += [f"E{e}"] * (2 if e % 2 else 1)
    labels_a = np.array(labels)
    x = centres[labels_a] * 0.8 + rng.normal(size=(len(labels_a), 10))
    return x, labels_a, np.array(batches)


def test_average_precision_matches_copairs() -> None:
    pytest.importorskip("copairs", reason="copairs (the profiles extra) is not installed")
    from copairs.map import average_precision

    x, labels, batches = _profiles()
    meta = pd.DataFrame({"sirna": labels, "experiment": batches})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copairs' own deprecation notices are not ours to fail on
        ref = average_precision(
            meta,
            x,
            pos_sameby=["sirna"],
            pos_diffby=["experiment"],
            neg_sameby=[],
            neg_diffby=["sirna"],
            progress_bar=False,
        )
    ours = replicate_average_precision(x, labels, batches)
    want = ref["average_precision"].to_numpy()
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, want, rtol=1e-6, atol=1e-9)


def test_perfect_and_query_restricted_retrieval() -> None:
    x = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    labels = np.array([0, 0, 1, 1])
    batches = np.array(["a", "b", "a", "b"])
    np.testing.assert_allclose(replicate_average_precision(x, labels, batches), 1.0)
    ap = replicate_average_precision(x, labels, batches, query_mask=np.array([True, False, False, False]))
    assert ap[0] == 1.0
    assert np.isnan(ap[1:]).all()
    # a replicate in the same batch is not a positive: no positive left, so no AP
    assert np.isnan(replicate_average_precision(x, labels, np.array(["a", "a", "b", "b"]))).all()
    # unlabelled rows (-1) are neither queries nor candidates
    ap = replicate_average_precision(x, np.array([0, 0, 1, -1]), batches)
    assert np.isnan(ap[2:]).all()


def test_mean_average_precision_ignores_missing() -> None:
    assert mean_average_precision(np.array([1.0, np.nan, 0.5])) == pytest.approx(0.75)
    assert mean_average_precision(np.array([np.nan])) is None


def _silhouette_loop(x: np.ndarray, clusters: np.ndarray) -> float:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1 - unit @ unit.T
    values = []
    for i in range(len(x)):
        own = (clusters == clusters[i]) & (np.arange(len(x)) != i)
        if not own.any():
            values.append(0.0)
            continue
        a = dist[i, own].mean()
        b = min(dist[i, clusters == c].mean() for c in set(clusters) if c != clusters[i])
        values.append((b - a) / max(a, b))
    return float(np.mean(values))


def test_silhouette_matches_its_definition() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 5)) + np.repeat(np.eye(5)[:3] * 2, 10, axis=0)
    clusters = np.repeat(["a", "b", "c"], 10)
    clusters[-1] = "d"  # a singleton cluster scores 0
    assert silhouette(x, clusters) == pytest.approx(_silhouette_loop(x, clusters), rel=1e-6)
    assert silhouette(x, np.array(["a"] * 30)) is None
    with pytest.raises(ValueError, match=r"clusters \(n,\)"):
        silhouette(x, clusters[:3])


def _random_table(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """60 wells of 7 labels in 3 batches (some rows unlabelled), and a query mask of about half of them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, size=60)
    labels[rng.random(60) < 0.1] = -1
    batches = rng.choice(["b0", "b1", "b2"], size=60)
    x = rng.normal(size=(7, 9))[labels.clip(0)] * 0.7 + rng.normal(size=(60, 9))
    return x, labels, batches, rng.random(60) < 0.5


def test_copairs_and_phenoprint_give_the_same_per_query_ap() -> None:
    pytest.importorskip("copairs", reason="copairs (the profiles extra) is not installed")
    from phenoprint.index.metrics import copairs_average_precision, replicate_ap

    x, labels, batches, queries = _random_table()
    ours = replicate_average_precision(x, labels, batches, queries)
    theirs = copairs_average_precision(x, labels, batches, queries)
    assert np.isfinite(ours).sum() > 10
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6, equal_nan=True)
    got = replicate_ap(x, labels, batches, queries)
    assert got.backend == "copairs"
    np.testing.assert_allclose(got.ap, ours, atol=1e-6, equal_nan=True)


def test_map_backend_falls_back_to_phenoprint_s_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from phenoprint.index import metrics

    x, labels, batches, queries = _random_table()
    want = replicate_average_precision(x, labels, batches, queries)
    monkeypatch.setattr(metrics, "COPAIRS_MAX_PAIRS", 10)  # copairs would list every pair of a large table
    got = metrics.replicate_ap(x, labels, batches, queries)
    assert got.backend == "phenoprint"
    np.testing.assert_array_equal(got.ap, want)
    monkeypatch.setattr(metrics, "copairs_available", lambda: False)
    assert metrics.replicate_ap(x, labels, batches, queries, backend="phenoprint").backend == "phenoprint"
    with pytest.raises(ValueError, match="copairs is not installed"):
        metrics.replicate_ap(x, labels, batches, queries, backend="copairs")
    with pytest.raises(ValueError, match="backend must be one of auto, copairs, phenoprint"):
        metrics.replicate_ap(x, labels, batches, queries, backend="sklearn")


def test_evaluate_records_which_backend_computed_the_map(small_table: EmbeddingTable) -> None:
    from dataclasses import replace

    from phenoprint.index.config import IndexConfig
    from phenoprint.index.evaluate import EvalConfig, evaluate
    from phenoprint.index.metrics import copairs_available

    config = EvalConfig(
        index=IndexConfig(center="center_scale", mode="centroid"), holdout=("HUVEC-01",), silhouette=False
    )
    report = evaluate(small_table, config)
    assert report.map_backend == ("copairs" if copairs_available() else "phenoprint")
    assert report.to_json()["map_backend"] == report.map_backend
    assert f"(by {report.map_backend})" in report.format_table()
    own = evaluate(small_table, replace(config, map_backend="phenoprint"))
    assert own.map_backend == "phenoprint"
    assert own.replicate_map == pytest.approx(report.replicate_map, abs=1e-6)
    assert evaluate(small_table, replace(config, replicate_map=False)).map_backend is None
    with pytest.raises(ValueError, match="map_backend must be one of auto, copairs, phenoprint"):
        replace(config, map_backend="faiss")


def test_on_tied_similarities_copairs_ranks_positives_first() -> None:
    """The one place the two differ, pinned so a change in either is seen: a positive tied with a negative."""
    pytest.importorskip("copairs", reason="copairs (the profiles extra) is not installed")
    from phenoprint.index.metrics import copairs_average_precision

    x = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels, batches = np.array([0, 0, 1, 1]), np.array(["a", "b", "b", "a"])
    np.testing.assert_allclose(replicate_average_precision(x, labels, batches)[:2], 0.5)  # tie counted against
    np.testing.assert_allclose(copairs_average_precision(x, labels, batches)[:2], 1.0)  # tie counted for


def test_both_ap_implementations_refuse_a_query_mask_of_another_length() -> None:
    from phenoprint.index.metrics import copairs_available, copairs_average_precision

    x = np.random.default_rng(0).normal(size=(6, 3))
    labels, batches = np.array([0, 0, 1, 1, 2, 2]), np.array(list("ababab"))
    for ap in (replicate_average_precision, *((copairs_average_precision,) if copairs_available() else ())):
        with pytest.raises(ValueError, match=r"query_mask must have shape \(6,\); got \(1,\)"):
            ap(x, labels, batches, np.array([True]))  # would broadcast to every row
