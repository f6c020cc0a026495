"""Replicate mAP cross-checked against copairs, and the silhouette against its definition."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

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
