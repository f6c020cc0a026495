"""Classification: the kNN vote and centroid modes against loop re-derivations, and the open-set flag."""

from __future__ import annotations

import numpy as np
import pytest

from phenoprint.data.table import EmbeddingTable
from phenoprint.index.classify import Prediction, _vote, classify, similar_sirnas, sirna_scores
from phenoprint.index.experiment import ExperimentIndex
from tests.index.conftest import reference_centroids


@pytest.fixture(scope="module")
def queries(small_table: EmbeddingTable, index: ExperimentIndex) -> tuple[np.ndarray, np.ndarray]:
    rows = small_table.experiment_mask("HUVEC-01") & ~small_table.control_mask()
    return index.center(small_table.features[rows]), small_table.labels()[rows]


def test_similar_sirnas_ranks_centroids_by_cosine(index: ExperimentIndex) -> None:
    ids, cents = reference_centroids(index)
    sid = ids[3]
    similar = similar_sirnas(index, sid, k=5)
    sims = cents @ cents[3]
    ranked = sorted((j for j in range(len(ids)) if ids[j] != sid), key=lambda j: -sims[j])[:5]
    assert [(p.sirna_id, p.rank) for p in similar] == [(ids[j], r + 1) for r, j in enumerate(ranked)]
    np.testing.assert_allclose([p.score for p in similar], sims[ranked], atol=1e-6)
    with pytest.raises(KeyError, match="siRNA 99999"):
        similar_sirnas(index, 99999)


def test_knn_vote_matches_a_loop_re_derivation(index: ExperimentIndex, queries) -> None:
    q, _ = queries
    got = classify(q, index, k=3, mode="knn")
    nb = index.search(q, 20)
    for i in range(len(q)):
        votes: dict[int, float] = {}
        for j, s in zip(nb.ids[i], nb.scores[i], strict=True):
            sid = int(index.entries.sirna_id[j])
            votes[sid] = votes.get(sid, 0.0) + np.exp((s - nb.scores[i, 0]) / 0.2)
        total = sum(votes.values())
        ranked = sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        assert got.sirna_ids[i].tolist()[: len(ranked)] == [s for s, _ in ranked]
        np.testing.assert_allclose(got.scores[i, : len(ranked)], [v / total for _, v in ranked], rtol=1e-5)
    assert (got.scores[:, 0] <= 1.0 + 1e-6).all()
    assert (np.diff(got.scores, axis=1) <= 1e-7).all()


def test_centroid_mode_is_the_argmax_of_the_centroid_cosine(index: ExperimentIndex, queries) -> None:
    q, _ = queries
    got = classify(q, index, k=5, mode="centroid")
    ids, cents = reference_centroids(index)
    sims = q.astype(np.float64) @ cents.T
    want = np.array(ids)[np.argsort(-sims, axis=1, kind="stable")[:, :5]]
    np.testing.assert_array_equal(got.sirna_ids, want)
    np.testing.assert_allclose(got.scores, np.sort(sims, axis=1)[:, ::-1][:, :5], atol=1e-5)


def test_classification_beats_chance_on_the_synthetic_design(index: ExperimentIndex, queries) -> None:
    q, y = queries
    for mode in ("knn", "centroid"):
        got = classify(q, index, k=5, mode=mode)
        assert (got.top1 == y).mean() > 0.3  # 28 siRNAs: chance is under 0.04
        assert (got.sirna_ids == y[:, None]).any(axis=1).mean() > 0.6


def test_vote_shares_from_neighbour_lists() -> None:
    ids = np.array([[0, 1, 2, -1], [3, 3, 0, 1]])
    sims = np.array([[0.9, 0.8, 0.8, -np.inf], [0.5, 0.5, 0.4, 0.1]], dtype=np.float32)
    codes = np.array([0, 1, 1, 2])  # entry -> class
    dense = _vote(ids, sims, codes, 3, temperature=0.1)
    w = np.exp(np.array([0.0, -1.0, -1.0]))
    np.testing.assert_allclose(dense[0], [w[0], w[1] + w[2], 0.0] / w.sum(), rtol=1e-6)
    w = np.exp(np.array([0.0, 0.0, -1.0, -4.0]))
    np.testing.assert_allclose(dense[1], [w[2], w[3], w[0] + w[1]] / w.sum(), rtol=1e-5)


def test_padding_when_fewer_sirnas_got_votes(index: ExperimentIndex, queries) -> None:
    q, _ = queries
    got = classify(q, index, k=5, mode="knn", n_neighbors=5)
    nb = index.search(q, 5)
    distinct = [len(set(index.entry_labels[ids])) for ids in nb.ids]
    assert ((got.sirna_ids >= 0).sum(axis=1) == distinct).all()
    assert min(distinct) < 5  # some query has fewer than k candidates: the rest is padding
    row = int(np.argmin(distinct))
    assert (got.sirna_ids[row, distinct[row] :] == -1).all()
    assert np.isneginf(got.scores[row, distinct[row] :]).all()
    preds = got.predictions(row)
    assert all(isinstance(p, Prediction) for p in preds)
    assert [p.rank for p in preds] == list(range(1, distinct[row] + 1))


def test_dense_scores_for_assignment(index: ExperimentIndex, queries) -> None:
    q, _ = queries
    cen = sirna_scores(q, index, "centroid")
    np.testing.assert_allclose(cen.scores, q @ reference_centroids(index)[1].T, atol=1e-5)
    soft = sirna_scores(q[:3], index, "knn", temperature=0.05)
    for j, sid in enumerate(soft.sirna_ids):
        sims = q[:3].astype(np.float64) @ index.vectors[index.entry_labels == sid].T
        want = 0.05 * np.log(np.exp(sims / 0.05).sum(axis=1))
        np.testing.assert_allclose(soft.scores[:, j], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["knn", "centroid"])
def test_unknown_flag_thresholds_the_best_centroid_cosine(index: ExperimentIndex, queries, mode: str) -> None:
    q, _ = queries
    got = classify(q, index, k=1, mode=mode)
    want = (q @ reference_centroids(index)[1].T).max(axis=1)
    np.testing.assert_allclose(got.best_similarity, want, atol=1e-5)
    np.testing.assert_array_equal(got.unknown, want < index.open_set.threshold)
    if mode == "centroid":
        np.testing.assert_allclose(got.best_similarity, got.scores[:, 0], atol=1e-6)


def test_bad_queries_are_refused(index: ExperimentIndex, queries) -> None:
    q, _ = queries
    with pytest.raises(ValueError, match=r"queries must have shape \(n, 16\)"):
        classify(q[:, :4], index)
    with pytest.raises(ValueError, match="k must be >= 1"):
        classify(q, index, k=0)
    with pytest.raises(ValueError, match="mode must be one of knn, centroid; got 'vote'"):
        classify(q, index, mode="vote")
    with pytest.raises(ValueError, match="mode must be one of"):
        sirna_scores(q, index, mode="vote")


def _brute_neighbours(index: ExperimentIndex, q: np.ndarray) -> np.ndarray:
    """Entries of each query, nearest first (numpy brute force)."""
    return np.argsort(-(q.astype(np.float64) @ index.vectors.T.astype(np.float64)), axis=1, kind="stable")


def test_one_nearest_neighbour_names_the_nearest_entry_even_with_a_longer_top_k(index: ExperimentIndex, queries):
    q, _ = queries
    got = classify(q, index, k=5, mode="knn", n_neighbors=1)
    nearest = _brute_neighbours(index, q)[:, 0]
    np.testing.assert_array_equal(got.top1, index.entry_labels[nearest])
    assert (got.sirna_ids[:, 1] >= 0).all()  # the top-5 is filled by the next neighbours' classes
    assert (got.scores[:, 0] > 0.99).all()  # the one vote


def test_majority_vote_counts_one_vote_per_neighbour(index: ExperimentIndex, queries) -> None:
    q, _ = queries
    got = classify(q, index, k=1, mode="knn", n_neighbors=7, vote="majority")
    order = _brute_neighbours(index, q)[:, :7]
    sims = q.astype(np.float64) @ index.vectors.T.astype(np.float64)
    for i in range(len(q)):
        votes: dict[int, list[float]] = {}
        for j in order[i]:
            v = votes.setdefault(int(index.entry_labels[j]), [0.0, 0.0])
            v[0] += 1
            v[1] += np.exp((sims[i, j] - sims[i, order[i, 0]]) / 0.2)
        # the most votes; ties to the class whose neighbours are nearer (the larger weighted vote)
        assert got.top1[i] == max(votes, key=lambda s: (votes[s][0], votes[s][1]))


def test_excluded_wells_are_neither_neighbours_nor_in_centroids(index: ExperimentIndex, queries, small_table) -> None:
    q, _ = queries
    rows = small_table.experiment_mask("HUVEC-01") & ~small_table.control_mask()
    wells = small_table.meta.loc[rows, "Metadata_well"].to_numpy(dtype=str)
    entry_wells = index.entries["well"].to_numpy(dtype=str)
    knn = classify(q, index, k=1, mode="knn", n_neighbors=1, exclude_wells=wells)
    cen = classify(q, index, k=1, mode="centroid", exclude_wells=wells)
    order = _brute_neighbours(index, q)
    for i in range(len(q)):
        other = order[i][entry_wells[order[i]] != wells[i]]
        assert knn.top1[i] == index.entry_labels[other[0]]
        keep = entry_wells != wells[i]
        ids = np.unique(index.entry_labels[keep])
        sims = []
        for sid in ids:
            m = index.vectors[keep & (index.entry_labels == sid)].astype(np.float64).mean(axis=0)
            sims.append(float(q[i] @ (m / np.linalg.norm(m))))
        assert cen.top1[i] == ids[int(np.argmax(sims))]


def test_bad_vote_options_are_refused(index: ExperimentIndex, queries) -> None:
    q, _ = queries
    with pytest.raises(ValueError, match="vote must be one of weighted, majority"):
        classify(q, index, vote="plurality")
    with pytest.raises(ValueError, match="exclude_wells must hold one well per query"):
        classify(q, index, exclude_wells=np.array(["A01"]))
