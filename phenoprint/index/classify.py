"""Name the siRNA of centred query wells: weighted kNN vote or nearest centroid, with the open-set flag."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from phenoprint.index.config import MODES, VOTES
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.index.openset import flag_unknown

#: Queries scored at once: bounds the dense (queries x siRNAs) score block to a few tens of MB.
_CHUNK = 4096
#: Weight of a neighbour searched beyond ``n_neighbors`` (to fill a top-k longer than the vote): it only orders the
#: classes the vote left out, never outweighs a voting neighbour.
_FILL_WEIGHT = 1e-6


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
    vote: str | None = None,
    exclude_wells: np.ndarray | None = None,
) -> Classification:
    """The k most likely siRNAs of each centred query.

    ``knn``: the ``n_neighbors`` nearest entries vote for their siRNA, with weight ``exp((cos - cos₁) / T)``
    (``weighted``: cos₁ the nearest one's, so close neighbours dominate but a crowd of slightly farther replicates can
    outvote a single lucky match) or one vote each (``majority``; ties to the class of nearer neighbours); scores are
    vote shares, and a top-k longer than the vote is filled by the next neighbours' classes. ``centroid``: cosine to
    each siRNA's mean entry, which weighs every source experiment alike and needs no FAISS search. In both modes the
    ``unknown`` flag compares the best centroid cosine with the threshold the index calibrated
    (:mod:`phenoprint.index.openset`).

    Args:
        queries_centred: (n, d) queries centred with ``index.center``.
        index: the experiment's index.
        k: candidates per query.
        mode: ``knn`` or ``centroid``.
        n_neighbors: kNN neighbours that vote (None: the index's configuration; 1 is 1-NN).
        temperature: kNN vote temperature (None: the index's configuration).
        vote: ``weighted`` or ``majority`` (None: the index's configuration).
        exclude_wells: (n,) each query's well position: entries at the same position (on any plate) are neither
            neighbours nor part of a centroid (for plates of one layout, where position and label go together).

    Raises:
        ValueError: bad shapes, k < 1, or unknown mode.
    """
    q = _check_queries(queries_centred, index.vector_dim)
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    n_vote = int(n_neighbors or index.config.n_neighbors)
    if n_vote < 1:
        raise ValueError(f"n_neighbors must be >= 1; got {n_vote}")
    temp = temperature if temperature is not None else index.config.temperature
    if not temp > 0:
        raise ValueError(f"temperature must be > 0; got {temp}")
    how = vote or index.config.vote
    if how not in VOTES:
        raise ValueError(f"vote must be one of {', '.join(VOTES)}; got {how!r}")
    wells = None
    if exclude_wells is not None:
        wells = np.asarray(exclude_wells).astype(str)
        if wells.shape != (len(q),):
            raise ValueError(f"exclude_wells must hold one well per query ({len(q)}); got shape {wells.shape}")
    entry_wells = index.entries["well"].to_numpy(dtype=str)
    # with exclusion, search past every entry that could share the query's position (one per plate at most)
    extra = int(pd.Series(entry_wells).value_counts().max()) if wells is not None else 0
    n_search = min(len(index), max(k, n_vote) + extra)
    ids = np.full((len(q), k), -1, dtype=np.int64)
    scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    best = np.full(len(q), -np.inf, dtype=np.float32)
    for start in range(0, len(q), _CHUNK):
        block = q[start : start + _CHUNK]
        rows = slice(start, start + len(block))
        block_wells = None if wells is None else wells[rows]
        to_centroids = _to_centroids(block, index, block_wells, entry_wells)  # small and dense: (queries, siRNAs)
        best[rows] = to_centroids.max(axis=1)
        if mode == "knn":
            nb = index.search(block, n_search)
            nb_ids, nb_sims = nb.ids, nb.scores
            if block_wells is not None:
                nb_ids, nb_sims = _drop_same_well(nb_ids, nb_sims, entry_wells, block_wells)
            dense = _vote(nb_ids, nb_sims, index.entry_codes, len(index.sirna_ids), temp, n_vote, how == "majority")
            dense[dense <= 0] = -np.inf  # siRNAs without a vote are not candidates
        else:  # no FAISS search at all
            dense = to_centroids
        top, top_scores = _top_k(dense, k)
        ids[rows] = np.where(np.isfinite(top_scores), index.sirna_ids[top], -1)
        scores[rows] = top_scores
    return Classification(ids, scores, flag_unknown(best, index.open_set.threshold), best, mode)


def _to_centroids(
    q: np.ndarray, index: ExperimentIndex, wells: np.ndarray | None, entry_wells: np.ndarray
) -> np.ndarray:
    """(n, siRNAs) cosine of each query to each siRNA's centroid; with ``wells``, centroids of the entries at other
    positions than the query's (-inf for a siRNA with no entry elsewhere)."""
    if wells is None:
        return np.asarray(q @ index.centroids.T)
    out = np.empty((len(q), len(index.sirna_ids)), dtype=np.float32)
    sums = np.zeros((len(index.sirna_ids), index.vector_dim), dtype=np.float64)
    np.add.at(sums, index.entry_codes, index.vectors)
    counts = np.bincount(index.entry_codes, minlength=len(index.sirna_ids))
    for well in np.unique(wells):
        at = entry_wells == well
        s, c = sums.copy(), counts.copy()
        np.subtract.at(s, index.entry_codes[at], index.vectors[at])
        np.subtract.at(c, index.entry_codes[at], 1)
        norms = np.linalg.norm(s, axis=1, keepdims=True)
        cents = (s / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        rows = wells == well
        sims = q[rows] @ cents.T
        sims[:, c == 0] = -np.inf
        out[rows] = sims
    return out


def _drop_same_well(
    ids: np.ndarray, sims: np.ndarray, entry_wells: np.ndarray, wells: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists without the entries at each query's own position (moved to the end as id -1)."""
    same = (ids >= 0) & (entry_wells[np.maximum(ids, 0)] == wells[:, None])
    ids = np.where(same, -1, ids)
    sims = np.where(same, -np.inf, sims)
    order = np.argsort(ids < 0, axis=1, kind="stable")  # the kept neighbours first, still nearest first
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(sims, order, axis=1)


def sirna_scores(
    queries_centred: np.ndarray, index: ExperimentIndex, mode: str = "centroid", *, temperature: float | None = None
) -> SirnaScores:
    """Every query against every siRNA of the index, for plate assignment.

    A kNN vote is zero for all but a few siRNAs, which leaves an assignment nothing to choose among; so ``knn``
    here is the vote extended to all entries, ``T·log Σ_j exp(cos_j / T)`` over each siRNA's entries j (a soft
    maximum: the nearest replicate for small T, their mean for large T; exact, whatever the FAISS index kind).
    ``centroid`` is the cosine to each siRNA's centroid.
    """
    q = _check_queries(queries_centred, index.vector_dim)
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


def _vote(
    ids: np.ndarray,
    sims: np.ndarray,
    codes: np.ndarray,
    n_classes: int,
    temperature: float,
    n_vote: int | None = None,
    majority: bool = False,
) -> np.ndarray:
    """Dense (n, n_classes) vote shares from neighbour lists, nearest first (ids -1 ignored).

    The first ``n_vote`` valid neighbours vote (all: None); the others weigh :data:`_FILL_WEIGHT` of a vote, to order
    the remaining classes of a top-k."""
    n, m = ids.shape
    valid = ids >= 0
    first = sims[:, :1] if m else np.zeros((n, 1))
    first = np.where(np.isfinite(first), first, 0.0)
    soft = np.where(valid, np.exp((np.where(valid, sims, first) - first) / temperature), 0.0)
    voters = n_vote if n_vote is not None else m
    # majority: one vote each, plus the weighted vote scaled to less than one vote in all (soft <= 1 for each of the
    # voters), so it only breaks ties, towards the class of the nearer neighbours
    weights = (valid + soft / (voters + 1)) if majority else soft
    if n_vote is not None:
        rank = np.cumsum(valid, axis=1)
        weights = np.where(rank <= n_vote, weights, _FILL_WEIGHT * soft / (voters + 1))
    weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    dense = np.zeros((n, n_classes), dtype=np.float64)
    rows = np.repeat(np.arange(n), m)
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
