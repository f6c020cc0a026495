"""Open-set rule: flag a well as unknown when no siRNA centroid is as close to it as known wells are to theirs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix

from phenoprint.data.table import EmbeddingTable
from phenoprint.index.config import DEFAULT_QUANTILE

#: Calibration wells drawn from the other experiments' treatment entries (when calibrating on training wells).
MAX_TRAINING_CALIBRATION = 256


@dataclass(frozen=True)
class OpenSetThreshold:
    """A cosine threshold on a well's best similarity to a siRNA centroid of the index.

    The centroid, not the nearest single entry, is compared: with noisy wells and tens of thousands of entries, the
    best of many chance similarities is as high as a true replicate's, so a nearest-entry threshold cannot tell a
    novel siRNA from a known one, while the centroid averages the noise away (``scripts/bench_index.py`` measures
    both).

    Attributes:
        threshold: wells whose best centroid cosine is below it are flagged unknown (-inf: never).
        quantile: the fraction of calibration wells below the threshold (their false-unknown rate).
        n_calibration: how many known wells it was calibrated on.
        source: which wells: ``training_entries`` (a sample of the other experiments' treatment entries),
            ``target_controls`` (the experiment's own control wells), or ``none`` (nothing to calibrate on).
    """

    threshold: float
    quantile: float
    n_calibration: int
    source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": float(self.threshold) if np.isfinite(self.threshold) else None,
            "statistic": "best_centroid_cosine",
            "quantile": self.quantile,
            "n_calibration": self.n_calibration,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OpenSetThreshold:
        t = data.get("threshold")
        return cls(
            -np.inf if t is None else float(t), float(data["quantile"]), int(data["n_calibration"]), str(data["source"])
        )


def cross_batch_centroid_similarity(
    queries: np.ndarray,
    query_batches: np.ndarray,
    entries: np.ndarray,
    entry_labels: np.ndarray,
    entry_batches: np.ndarray,
) -> np.ndarray:
    """Each query's best cosine to a siRNA centroid computed without the query's own batch.

    Leaving the batch out keeps a calibration well (itself an entry, or a control whose replicates of the same
    experiment are entries) from scoring against a centroid it helped form.

    Returns:
        (n,) float64; -inf for a query with no entry of another batch.
    """
    q = np.asarray(queries, dtype=np.float32)
    e = np.asarray(entries, dtype=np.float32)  # unit vectors: float32 sums of a few dozen are exact enough
    qb, eb = _batch_codes(query_batches, entry_batches, len(q), len(e))
    ids, codes = np.unique(np.asarray(entry_labels), return_inverse=True)
    sums = _sum_by(codes, e, len(ids))
    counts = np.bincount(codes, minlength=len(ids))
    best = np.full(len(q), -np.inf)
    for batch in np.unique(qb):
        own = eb == batch
        s = sums - _sum_by(codes[own], e[own], len(ids))
        n = counts - np.bincount(codes[own], minlength=len(ids))
        norms = np.linalg.norm(s, axis=1)
        keep = (n > 0) & (norms > 0)
        if keep.any():
            rows = qb == batch
            best[rows] = (q[rows] @ (s[keep] / norms[keep, None]).T).max(axis=1)
    return best


def _sum_by(codes: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """(n, d) sums of the rows of x by code (a sparse one-hot product: far faster than ``np.add.at``)."""
    ones = np.ones(len(codes), dtype=x.dtype)
    onehot = coo_matrix((ones, (codes, np.arange(len(codes)))), shape=(n, len(codes))).tocsr()
    return np.asarray(onehot @ x)


def _batch_codes(
    query_batches: np.ndarray, entry_batches: np.ndarray, nq: int, ne: int
) -> tuple[np.ndarray, np.ndarray]:
    """Batch names as integer codes shared by queries and entries (comparing ints, not strings, per pair)."""
    qb = np.asarray(query_batches).astype(str)
    eb = np.asarray(entry_batches).astype(str)
    if qb.shape != (nq,) or eb.shape != (ne,):
        raise ValueError(f"batch labels must match the rows: {qb.shape} vs {nq}, {eb.shape} vs {ne}")
    _, codes = np.unique(np.concatenate([qb, eb]), return_inverse=True)
    return codes[:nq], codes[nq:]


def calibrate_open_set(
    best_similarity: np.ndarray, quantile: float = DEFAULT_QUANTILE, source: str = ""
) -> OpenSetThreshold:
    """The threshold below which only a ``quantile`` of known wells fall.

    Args:
        best_similarity: (n,) each known (calibration) well's best centroid similarity, its own batch left out
            (:func:`cross_batch_centroid_similarity`); -inf values (nothing comparable) are ignored.
        quantile: accepted false-unknown rate on known wells, in [0, 1); 0 turns the rule off.
        source: recorded with the threshold (which wells were used).
    """
    if not 0 <= quantile < 1:
        raise ValueError(f"quantile must be in [0, 1); got {quantile}")
    s = _finite(best_similarity)
    if quantile == 0 or len(s) == 0:
        return OpenSetThreshold(-np.inf, quantile, len(s), source or "none")
    return OpenSetThreshold(float(np.quantile(s, quantile)), quantile, len(s), source)


def _finite(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def flag_unknown(best_similarity: np.ndarray, threshold: float) -> np.ndarray:
    """Which wells fall below the threshold (booleans)."""
    return np.asarray(best_similarity, dtype=np.float64) < float(threshold)


def calibrate_index(
    table: EmbeddingTable,
    centred: np.ndarray,
    experiment: str,
    vectors: np.ndarray,
    entries: pd.DataFrame,
    quantile: float,
    source: str,
) -> OpenSetThreshold:
    """The open-set threshold: a low quantile of known wells' best centroid similarity, their own experiment left out.

    ``training`` (the default, and the fallback when the target has no labelled controls): a fixed sample of the
    other experiments' treatment entries, i.e. known wells like the queries. ``controls``: the target's own labelled
    controls, the only known wells of a new batch. They are a poor stand-in for treatments: positive controls are
    chosen for strong phenotypes (the threshold ends up too high without whitening), and TVN fitted on the controls
    whitens exactly their directions; ``scripts/bench_index.py`` measures both.
    """
    calib = table.experiment_mask(experiment) & table.control_mask() & table.labelled_mask()
    entry_exps = entries["experiment"].to_numpy(dtype=str)
    entry_labels = entries["sirna_id"].to_numpy(dtype=np.int64)
    if source == "controls" and calib.any():
        q, q_exps, used = centred[calib], np.full(int(calib.sum()), experiment), "target_controls"
    else:
        pool = (entries["kind"] == "training").to_numpy() & (entries["well_type"] == "treatment").to_numpy()
        rows = np.flatnonzero(pool) if pool.any() else np.arange(len(entries))
        rows = np.sort(np.random.default_rng(0).permutation(rows)[:MAX_TRAINING_CALIBRATION])
        q, q_exps, used = vectors[rows], entry_exps[rows], "training_entries"
    best = cross_batch_centroid_similarity(q, q_exps, vectors, entry_labels, entry_exps)
    return calibrate_open_set(best, quantile, used)
