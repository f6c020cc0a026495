"""Retrieval and batch-mixing metrics on vectors: replicate average precision (copairs rules) and silhouette."""

from __future__ import annotations

import importlib.util
import logging
import warnings
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: Query rows scored at once (each row is sorted against every candidate).
_CHUNK = 256
#: Who computes the replicate APs: ``auto`` (copairs where it is installed and the table small enough, else
#: phenoprint's own), or one of them by name.
MapBackend = Literal["auto", "copairs", "phenoprint"]
MAP_BACKENDS: tuple[str, ...] = get_args(MapBackend)
#: copairs lists every pair of labelled rows (queries or not) before ranking them: above this many pairs ``auto``
#: uses phenoprint's own (the same APs, cross-checked to 1e-6 in the tests), which ranks only the query rows against
#: the candidates. Measured on 3,000 wells (4.5e6 pairs, 500 queries): copairs 12 s, phenoprint's own 0.11 s; a
#: 60,000-well table would be 1.8e9 pairs, tens of GB of pair indices.
COPAIRS_MAX_PAIRS = 2_000_000


@dataclass(frozen=True)
class ReplicateAP:
    """Per-row replicate average precision and the implementation that computed it.

    Attributes:
        ap: (n,) float64 AP of each query row; NaN for rows not queried or without a positive.
        backend: ``copairs`` or ``phenoprint``.
    """

    ap: np.ndarray
    backend: str


def copairs_available() -> bool:
    """Whether copairs (the ``profiles`` extra) can be imported."""
    return importlib.util.find_spec("copairs") is not None


def replicate_ap(
    x: np.ndarray,
    labels: np.ndarray,
    batches: np.ndarray,
    query_mask: np.ndarray | None = None,
    backend: str = "auto",
) -> ReplicateAP:
    """Replicate AP of each query row (the pair rules of :func:`replicate_average_precision`), by copairs where
    it is installed (the field's reference implementation) and by phenoprint's own otherwise.

    Raises:
        ValueError: an unknown backend, or ``copairs`` asked for but not installed.
    """
    if backend not in MAP_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(MAP_BACKENDS)}; got {backend!r}")
    if backend == "copairs" and not copairs_available():
        raise ValueError("map backend 'copairs' asked for but copairs is not installed (pip install '.[profiles]')")
    if backend == "auto":
        n_labelled = int((np.asarray(labels).astype(np.int64) >= 0).sum())
        pairs = n_labelled * (n_labelled - 1) // 2
        if not copairs_available():
            backend = "phenoprint"
        elif pairs > COPAIRS_MAX_PAIRS:
            log.info(
                "replicate mAP by phenoprint's own implementation: copairs would list %d pairs (more than %d)",
                pairs,
                COPAIRS_MAX_PAIRS,
            )
            backend = "phenoprint"
        else:
            backend = "copairs"
    if backend == "copairs":
        return ReplicateAP(copairs_average_precision(x, labels, batches, query_mask), "copairs")
    return ReplicateAP(replicate_average_precision(x, labels, batches, query_mask), "phenoprint")


def _ap_inputs(
    x: np.ndarray, labels: np.ndarray, batches: np.ndarray, query_mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The arguments of either AP implementation, checked: (n, d) float64 vectors, (n,) int64 labels, (n,) str batches
    and the (n,) mask of labelled query rows.

    Raises:
        ValueError: a shape that does not match the vectors'.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n, d); got shape {x.shape}")
    n = len(x)
    labels = np.asarray(labels).astype(np.int64)
    batches = np.asarray(batches).astype(str)
    if labels.shape != (n,) or batches.shape != (n,):
        raise ValueError(f"labels and batches must have shape ({n},); got {labels.shape} and {batches.shape}")
    if query_mask is None:
        return x, labels, batches, labels >= 0
    mask = np.asarray(query_mask, dtype=bool)
    if mask.shape != (n,):
        raise ValueError(f"query_mask must have shape ({n},); got {mask.shape}")
    return x, labels, batches, mask & (labels >= 0)


def copairs_average_precision(
    x: np.ndarray, labels: np.ndarray, batches: np.ndarray, query_mask: np.ndarray | None = None
) -> np.ndarray:
    """:func:`replicate_average_precision` computed by ``copairs.map.average_precision`` (same arguments, same
    result): positives share the label and differ in batch (``pos_sameby=[label], pos_diffby=[batch]``), negatives
    differ in label (``neg_sameby=[], neg_diffby=[label]``), cosine similarity. One difference: on tied similarities
    (duplicate or zero rows) copairs ranks the positives first, phenoprint's own after every tied candidate, so the
    two agree exactly only where no candidate ties a positive (as on continuous features).
    """
    from copairs.map import average_precision
    from copairs.matching import UnpairedException

    x, labels, batches, qmask = _ap_inputs(x, labels, batches, query_mask)
    n = len(x)
    out = np.full(n, np.nan)
    keep = np.flatnonzero(labels >= 0)
    if not qmask.any() or len(set(labels[keep].tolist())) < 2:  # copairs refuses a table without negatives
        return out
    norms = np.linalg.norm(x[keep], axis=1, keepdims=True)
    feats = x[keep] / np.where(norms > 0, norms, 1.0)  # copairs divides by the norm: a zero row would give NaN
    meta = pd.DataFrame({"label": labels[keep], "batch": batches[keep]})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # copairs' own deprecation notices
            ap = average_precision(
                meta,
                feats,
                pos_sameby=["label"],
                pos_diffby=["batch"],
                neg_sameby=[],
                neg_diffby=["label"],
                progress_bar=False,
            )
    except UnpairedException:  # no row has a positive: no AP
        return out
    values = ap["average_precision"].to_numpy(dtype=np.float64)
    values = np.where(ap["n_pos_pairs"].to_numpy() > 0, values, np.nan)
    out[keep] = values
    out[~qmask] = np.nan
    return out


def replicate_average_precision(
    x: np.ndarray, labels: np.ndarray, batches: np.ndarray, query_mask: np.ndarray | None = None
) -> np.ndarray:
    """Average precision of retrieving each well's replicates from other batches, by cosine similarity.

    The pair rules of ``copairs.map.average_precision(pos_sameby=[label], pos_diffby=[batch], neg_sameby=[],
    neg_diffby=[label])``: positives share the label and come from another batch (a replicate in the same
    experiment is neither positive nor negative), negatives are every well of another label, in any batch.

    Args:
        x: (n, d) vectors (need not be normalized).
        labels: (n,) integer labels; rows labelled -1 are skipped entirely.
        batches: (n,) batch of each row (e.g. experiment).
        query_mask: (n,) rows to score (default: all labelled rows).

    Returns:
        (n,) float64 AP of each query row; NaN for rows that are not queried or have no positive.
    """
    x, labels, batches, qmask = _ap_inputs(x, labels, batches, query_mask)
    n = len(x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    keep = labels >= 0
    cand = unit[keep]
    cand_labels = labels[keep]
    cand_batches = batches[keep]
    out = np.full(n, np.nan)
    queries = np.flatnonzero(qmask)
    for start in range(0, len(queries), _CHUNK):
        rows = queries[start : start + _CHUNK]
        sims = unit[rows] @ cand.T
        same = cand_labels[None, :] == labels[rows, None]
        pos = same & (cand_batches[None, :] != batches[rows, None])
        considered = pos | ~same
        sims = np.where(considered, sims, -np.inf)
        for i, r in enumerate(rows):
            out[r] = _ap(sims[i], pos[i])
    return out


def _ap(sims: np.ndarray, pos: np.ndarray) -> float:
    """AP from the ranks of the positives; only the candidates scoring at least the worst positive are sorted."""
    pv = sims[pos]
    if len(pv) == 0:
        return float("nan")
    above = np.sort(sims[sims >= pv.min()])
    pv = np.sort(pv)[::-1]
    ranks = len(above) - np.searchsorted(above, pv, side="left")  # items scoring >= each positive (ties aside)
    return float(np.mean(np.arange(1, len(pv) + 1) / ranks))


def mean_average_precision(ap: np.ndarray) -> float | None:
    """Mean of the finite APs (None when there are none)."""
    ap = np.asarray(ap, dtype=np.float64)
    ok = np.isfinite(ap)
    return float(ap[ok].mean()) if ok.any() else None


def silhouette(x: np.ndarray, clusters: np.ndarray) -> float | None:
    """Mean silhouette of the rows (cosine distance) with respect to ``clusters`` (e.g. experiments).

    Near 1: rows sit with their own cluster (strong batch effect); near 0 or below: clusters are mixed. Returns
    None with fewer than two clusters. Costs O(n²): subsample large tables first.
    """
    x = np.asarray(x, dtype=np.float64)
    clusters = np.asarray(clusters).astype(str)
    if x.ndim != 2 or clusters.shape != (len(x),):
        raise ValueError(f"x must be (n, d) and clusters (n,); got {x.shape} and {clusters.shape}")
    names, codes = np.unique(clusters, return_inverse=True)
    if len(names) < 2:
        return None
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms > 0, norms, 1.0)
    dist = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    sizes = np.bincount(codes, minlength=len(names)).astype(np.float64)
    onehot = np.zeros((len(x), len(names)))
    onehot[np.arange(len(x)), codes] = 1.0
    sums = dist @ onehot  # (n, k): total distance of each row to each cluster
    own = sizes[codes]
    a = sums[np.arange(len(x)), codes] / np.maximum(own - 1, 1)
    mean_other = sums / sizes
    mean_other[np.arange(len(x)), codes] = np.inf
    b = mean_other.min(axis=1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), np.finfo(float).tiny), 0.0)
    return float(s.mean())
