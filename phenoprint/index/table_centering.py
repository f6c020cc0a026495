"""Centering a whole embedding table: every experiment (or plate) fitted on its own reference wells, then applied."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from phenoprint.data.table import EmbeddingTable
from phenoprint.errors import EmbeddingTableError
from phenoprint.index.centering import (
    DEFAULT_EPSILON,
    MIN_REFERENCE,
    REFERENCES,
    CenteringStats,
    apply_centering_by,
    fit_centering_by,
)


def batch_keys(meta: pd.DataFrame, per_plate: bool) -> np.ndarray:
    """The centering batch of each row: its experiment, or ``experiment/plate`` when fitting per plate."""
    exp = meta["Metadata_experiment"].astype(str)
    if per_plate:
        return (exp + "/" + meta["Metadata_plate"].astype(str)).to_numpy(dtype=str)
    return exp.to_numpy(dtype=str)


def reference_mask(table: EmbeddingTable, reference: str) -> np.ndarray:
    """The rows centering statistics are fitted on: control wells (by ``Metadata_well_type``) or all wells."""
    if reference == "controls":
        return table.control_mask()
    if reference == "all":
        return np.ones(len(table), dtype=bool)
    raise ValueError(f"reference must be one of {', '.join(REFERENCES)}; got {reference!r}")


def fit_table_centering(
    table: EmbeddingTable,
    method: str,
    reference: str,
    *,
    pca_dim: int | None,
    ridge: float,
    per_plate: bool,
    epsilon: float = DEFAULT_EPSILON,
    pool_without: Collection[str] = (),
) -> dict[str, CenteringStats]:
    """Fit every batch of the table on its own reference wells (one set of statistics per experiment or plate).

    Args:
        epsilon: ZCA / ZCA-cor: ε added to each eigenvalue of the pooled covariance.
        pool_without: experiments whose reference wells stay out of a sphering method's pooled whitening (the one
            being onboarded or held out); they keep their own per-batch step. See :func:`fit_centering_by`.

    Raises:
        EmbeddingTableError: a batch has no (or too few) reference wells; the message suggests ``--center-on all``.
    """
    keys = batch_keys(table.meta, per_plate)
    ref = reference_mask(table, reference)
    need = MIN_REFERENCE.get(method, 0)  # an unknown method is refused by fit_centering_by
    if need:
        counts = pd.Series(ref).groupby(keys).sum()
        short = counts[counts < need]
        if len(short):
            controls = reference == "controls"
            what = "control wells (Metadata_well_type positive_control/negative_control)" if controls else "wells"
            hint = "; use --center-on all to centre on all its wells (for data without controls)" if controls else ""
            others = f" ({len(short)} batches are short)" if len(short) > 1 else ""
            raise EmbeddingTableError(
                f"batch {short.index[0]} has {int(short.iloc[0])} {what} but centering {method!r} needs at least "
                f"{need}{others}{hint}"
            )
    exclude = set(pool_without)
    exp = table.meta["Metadata_experiment"].astype(str).to_numpy()
    pool_exclude = sorted(set(keys[np.isin(exp, list(exclude))].tolist())) if exclude else []
    return fit_centering_by(
        table.features, keys, ref, method, pca_dim=pca_dim, ridge=ridge, epsilon=epsilon, pool_exclude=pool_exclude
    )


def center_table(table: EmbeddingTable, stats: dict[str, CenteringStats], per_plate: bool) -> np.ndarray:
    """Every row centred with its own batch's statistics: (n, d) L2-normalized float32."""
    return apply_centering_by(table.features, batch_keys(table.meta, per_plate), stats)
