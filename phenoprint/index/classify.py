"""Name the siRNA of centred query wells: weighted kNN vote or nearest centroid, with the open-set flag."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phenoprint.index.config import MODES
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.index.openset import flag_unknown

#: Queries scored at once: bounds the dense (queries x siRNAs) score block to a few tens of MB.
_CHUNK = 4096


@dataclass(frozen=True)
class Prediction:
    """One candidate siRNA for one well.

    Attributes:
        sirna_id: the siRNA.
        score: kNN vote share (0-1) or centroid cosine, by mode.
        rank: 1 for the best.
    """

    sirna_id: int
    score: float
    rank: int


@dataclass(frozen=True)
class Classification:
    """Top-k siRNAs of each query, best first.

    Attributes:
        sirna_ids: (n, k) int64 (-1 where fewer than k siRNAs got a vote).
        scores: (n, k) float32: kNN vote shares (summing to at most 1 per row) or centroid cosines (-inf for -1).
        unknown: (n,) bool: ``best_similarity`` is below the index's open-set threshold.
        best_similarity: (n,) float32 the best cosine to a siRNA centroid (what the open-set rule thresholds, in
            both modes; :class:`phenoprint.index.openset.OpenSetThreshold` says why not the nearest entry).
        mode: ``knn`` or ``centroid``.
    """

    sirna_ids: np.ndarray
    scores: np.ndarray
    unknown: np.ndarray
    best_similarity: np.ndarray
    mode: str

    def __len__(self) -> int:
        return int(self.sirna_ids.shape[0])

    @property
    def top1(self) -> np.ndarray:
        """(n,) the best siRNA of each query."""
        return self.sirna_ids[:, 0]

    def predictions(self, i: int) -> list[Prediction]:
        """The ranked candidates of query ``i`` (those with an id)."""
        return [
            Prediction(int(s), float(v), r + 1)
            for r, (s, v) in enumerate(zip(self.sirna_ids[i], self.scores[i], strict=True))
            if s >= 0
        ]


@dataclass(frozen=True)
class SirnaScores:
    """A dense score of every query against every siRNA of an index (input of plate assignment).

    Attributes:
        sirna_ids: (c,) the siRNAs (columns), sorted.
        scores: (n, c) float32 cosine to the siRNA's centroid (``centroid``) or a soft maximum of the cosines to its
            entries (``knn``).
    """

    sirna_ids: np.ndarray
    scores: np.ndarray


def classify(
    queries_centred: np.ndarray,
    index: ExperimentIndex,
    k: int = 5,
    mode: str = "knn",
    *,
    n_neighbors: int | None = None,
    temperature: float | None = None,
) -> Classification:
    """The k most likely siRNAs of each centred query.

    ``knn``: the ``n_neighbors`` nearest entries vote for their siRNA with weight ``exp((cos - cos₁) / T)``
    (cos₁ the nearest one's), so close neighbours dominate but a crowd of slightly farther replicates can outvote a
    single lucky match; scores are vote shares. ``centroid``: cosine to each siRNA's mean entry, which weighs every
    source experiment alike and needs no FAISS search. In both modes the ``unknown`` flag compares the best
    centroid cosine with the threshold the index calibrated (:mod:`phenoprint.index.openset`).

    Args:
        queries_centred: (n, d) queries centred with ``index.center``.
        index: the experiment's index.
        k: candidates per query.
        mode: ``knn`` or ``centroid``.
        n_neighbors: kNN neighbours (None: the index's configuration; at least k).
        temperature: kNN vote temperature (None: the index's configuration).

    Raises:
        ValueError: bad shapes, k < 1, or unknown mode.
    """
    q = _check_queries(queries_centred, index.dim)
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    n_nb = max(k, n_neighbors or index.config.n_neighbors)
    temp = temperature if temperature is not None else index.config.temperature
    if not temp > 0:
        raise ValueError(f"temperature must be > 0; got {temp}")
    ids = np.full((len(q), k), -1, dtype=np.int64)
    scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    best = np.full(len(q), -np.inf, dtype=np.float32)
    for start in range(0, len(q), _CHUNK):
        block = q[start : start + _CHUNK]
        rows = slice(start, start + len(block))
        to_centroids = block @ index.centroids.T  # small and dense: (queries, siRNAs)
        best[rows] = to_centroids.max(axis=1)
        if mode == "knn":
            nb = index.search(block, n_nb)
            dense = _vote(nb.ids, nb.scores, index.entry_codes, len(index.sirna_ids), temp)
            dense[dense <= 0] = -np.inf  # siRNAs without a vote are not candidates
        else:  # no FAISS search at all
            dense = to_centroids
        top, top_scores = _top_k(dense, k)
        ids[rows] = np.where(np.isfinite(top_scores), index.sirna_ids[top], -1)
        scores[rows] = top_scores
    return Classification(ids, scores, flag_unknown(best, index.open_set.threshold), best, mode)


def sirna_scores(
    queries_centred: np.ndarray, index: ExperimentIndex, mode: str = "centroid", *, temperature: float | None = None
) -> SirnaScores:
    """Every query against every siRNA of the index, for plate assignment.

    A kNN vote is zero for all but a few siRNAs, which leaves an assignment nothing to choose among; so ``knn``
    here is the vote extended to all entries, ``T·log Σ_j exp(cos_j / T)`` over each siRNA's entries j (a soft
    maximum: the nearest replicate for small T, their mean for large T; exact, whatever the FAISS index kind).
    ``centroid`` is the cosine to each siRNA's centroid.
    """
    q = _check_queries(queries_centred, index.dim)
    if mode == "centroid":
        return SirnaScores(index.sirna_ids, (q @ index.centroids.T).astype(np.float32))
    if mode != "knn":
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    temp = temperature if temperature is not None else index.config.temperature
    order = np.argsort(index.entry_labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(index.entry_labels[order]) != 0])
    vectors = index.vectors[order]
    out = np.empty((len(q), len(starts)), dtype=np.float32)
    for start in range(0, len(q), 512):
        sims = (q[start : start + 512] @ vectors.T).astype(np.float64)
        top = sims.max(axis=1, keepdims=True)
        sums = np.add.reduceat(np.exp((sims - top) / temp), starts, axis=1)
        out[start : start + 512] = top + temp * np.log(sums)
    return SirnaScores(index.sirna_ids, out)


def similar_sirnas(index: ExperimentIndex, sirna_id: int, k: int = 10) -> list[Prediction]:
    """The k siRNAs whose centroids are nearest (cosine) to that of ``sirna_id`` in ``index``, itself excluded.

    Raises:
        KeyError: the siRNA has no entry in the index.
    """
    sims = index.centroids @ index.centroid(sirna_id)
    sims[index.sirna_ids == sirna_id] = -np.inf
    order = np.argsort(-sims, kind="stable")[: min(k, len(sims) - 1)]
    return [Prediction(int(index.sirna_ids[j]), float(sims[j]), r + 1) for r, j in enumerate(order)]


def _vote(ids: np.ndarray, sims: np.ndarray, codes: np.ndarray, n_classes: int, temperature: float) -> np.ndarray:
    """Dense (n, n_classes) vote shares from neighbour lists (ids -1 ignored)."""
    n, _ = ids.shape
    valid = ids >= 0
    weights = np.where(valid, np.exp((sims - sims[:, :1]) / temperature), 0.0)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    dense = np.zeros((n, n_classes), dtype=np.float64)
    rows = np.repeat(np.arange(n), ids.shape[1])
    np.add.at(dense, (rows[valid.ravel()], codes[ids[valid]]), weights[valid])
    return dense.astype(np.float32)


def _top_k(dense: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the k largest entries per row, best first (ties: lower column first)."""
    n, c = dense.shape
    kk = min(k, c)
    full = np.broadcast_to(np.arange(c), (n, c))
    part = np.argpartition(-dense, kk - 1, axis=1)[:, :kk] if kk < c else full
    vals = np.take_along_axis(dense, part, axis=1)
    order = np.lexsort((part, -vals), axis=1) if n else np.zeros((0, kk), dtype=np.int64)
    top = np.take_along_axis(part, order, axis=1)
    top_vals = np.take_along_axis(vals, order, axis=1)
    if kk < k:
        top = np.pad(top, ((0, 0), (0, k - kk)))
        top_vals = np.pad(top_vals, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return top, top_vals.astype(np.float32)


def _check_queries(x: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(x)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (n, {dim}) (centred with index.center); got {q.shape}")
    return np.ascontiguousarray(q, dtype=np.float32)
