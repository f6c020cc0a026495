"""Centering a whole embedding table: every experiment (or plate) fitted on its own reference wells, then applied."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd

from phenoprint.data.table import EmbeddingTable
from phenoprint.errors import EmbeddingTableError
from phenoprint.index.centering import (
    CENTER_METHODS,
    DEFAULT_EPSILON,
    MIN_REFERENCE,
    POOLED_BASE,
    REFERENCES,
    CenteringStats,
    apply_centering_by,
    fit_centering_by,
)
from phenoprint.index.config import IndexConfig

log = logging.getLogger(__name__)


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
    if method == ENSEMBLE:  # every view, per experiment and per plate (``per_plate`` does not apply)
        return fit_ensemble(table, reference, pca_dim=pca_dim, ridge=ridge, epsilon=epsilon, pool_without=pool_without)
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


def fit_configured(
    table: EmbeddingTable,
    config: IndexConfig,
    *,
    center: str | None = None,
    per_plate: bool | None = None,
    new_batch: str | None = None,
) -> dict[str, CenteringStats]:
    """:func:`fit_table_centering` with an index configuration's options (reference wells, TVN's ``pca_dim`` and
    ``ridge``, ZCA's ``epsilon``, whose wells a pooled whitening is fitted on); ``center`` and ``per_plate`` default
    to the configuration's. The one place the options go from a configuration into a fit, so a new one reaches every
    caller.

    Args:
        new_batch: the experiment being onboarded or held out: with ``pool="training"`` its reference wells stay out of
            a pooled whitening (it keeps its own per-batch step).
    """
    pool_without = (new_batch,) if new_batch is not None and config.pool == "training" else ()
    return fit_table_centering(
        table,
        config.center if center is None else center,
        config.reference,
        pca_dim=config.pca_dim,
        ridge=config.ridge,
        per_plate=config.per_plate if per_plate is None else per_plate,
        epsilon=config.epsilon,
        pool_without=pool_without,
    )


def center_table(table: EmbeddingTable, stats: dict[str, CenteringStats], per_plate: bool) -> np.ndarray:
    """Every row centred with its own batch's statistics: (n, d) L2-normalized float32 (an ensemble's: (n, views·d))."""
    if is_ensemble(stats):
        return apply_ensemble(table.features, table.meta["Metadata_experiment"], table.meta["Metadata_plate"], stats)
    return apply_centering_by(table.features, batch_keys(table.meta, per_plate), stats)


#: ``--center ensemble``: no one centering, but the average of the cosine similarities under every centering
#: (:func:`ensemble_views`): each well's vector is the concatenation of its L2-normalized centred vectors, divided by
#: sqrt(views), so the cosine of two wells is the mean of their cosines under the views. Where a handful of batches
#: cannot tell the centerings apart (their differences are within noise), averaging them is the textbook answer
#: to choosing among models on little evidence (model averaging; Hastie, Tibshirani & Friedman, *The Elements of
#: Statistical Learning*, 8.8), and it needs no constant fitted to any data set.
ENSEMBLE = "ensemble"
#: Centerings that whiten: fitted on all wells (``--center-on all``), they whiten the treatments' own signal away, so
#: the ensemble leaves them out there.
WHITENING = frozenset({"tvn", *POOLED_BASE})  # TVN per batch, and every pooled sphering
#: Separates a view's name from the batch key in an ensemble's statistics (``center_scale/plate::HUVEC-01/3``).
VIEW_SEP = "::"


def ensemble_views(reference: str) -> tuple[tuple[str, bool], ...]:
    """The (centering, per plate) views an ensemble averages: every centering, per experiment and per plate, but
    the whitening ones (:data:`WHITENING`) where the statistics are fitted on all wells."""
    methods = [m for m in CENTER_METHODS if m != "none" and not (reference == "all" and m in WHITENING)]
    return (("none", False), *((m, per_plate) for m in methods for per_plate in (False, True)))


def view_name(method: str, per_plate: bool) -> str:
    """An ensemble view's name in its statistics' keys: ``center_scale`` or ``center_scale/plate``."""
    return f"{method}/plate" if per_plate and method != "none" else method


def is_ensemble(stats: Mapping[str, CenteringStats]) -> bool:
    """Whether statistics are an ensemble's (their keys are ``view::batch``)."""
    return any(VIEW_SEP in k for k in stats)


def split_views(stats: Mapping[str, CenteringStats]) -> dict[tuple[str, bool], dict[str, CenteringStats]]:
    """An ensemble's statistics by view: (centering, per plate) → batch key → statistics, views in stored order.

    Raises:
        ValueError: a key is not ``view::batch`` or names an unknown centering.
    """
    out: dict[tuple[str, bool], dict[str, CenteringStats]] = {}
    for key, value in stats.items():
        view, sep, batch = key.partition(VIEW_SEP)
        method, _, plate = view.partition("/")
        if not sep or method not in CENTER_METHODS or plate not in ("", "plate") or not batch:
            raise ValueError(f"ensemble statistics key {key!r} is not <centering>[/plate]::<batch>")
        out.setdefault((method, plate == "plate"), {})[batch] = value
    return out


def fit_ensemble(
    table: EmbeddingTable,
    reference: str,
    *,
    pca_dim: int | None,
    ridge: float,
    epsilon: float = DEFAULT_EPSILON,
    pool_without: Collection[str] = (),
) -> dict[str, CenteringStats]:
    """Every view of :func:`ensemble_views` fitted on the table's batches, keyed ``view::batch`` (``epsilon`` and
    ``pool_without`` as :func:`fit_table_centering` takes them). A view the reference wells cannot fit (e.g. too few
    of them for a covariance per plate) is left out, and the log says so.

    Raises:
        EmbeddingTableError: no view could be fitted.
    """
    out: dict[str, CenteringStats] = {}
    skipped: list[str] = []
    for method, per_plate in ensemble_views(reference):
        try:
            stats = fit_table_centering(
                table,
                method,
                reference,
                pca_dim=pca_dim,
                ridge=ridge,
                per_plate=per_plate,
                epsilon=epsilon,
                pool_without=pool_without,
            )
        except (ValueError, EmbeddingTableError) as exc:
            skipped.append(f"{view_name(method, per_plate)} ({exc})")
            continue
        out.update({f"{view_name(method, per_plate)}{VIEW_SEP}{k}": v for k, v in stats.items()})
    if skipped:
        log.info(
            "the ensemble leaves out %d view(s) its reference wells cannot fit: %s", len(skipped), "; ".join(skipped)
        )
    if all(k.startswith(f"none{VIEW_SEP}") for k in out):  # no reference wells: nothing but the raw vectors
        raise EmbeddingTableError(f"no centering of the ensemble could be fitted: {'; '.join(skipped)}")
    return out


def apply_ensemble(
    x: np.ndarray, experiments: np.ndarray, plates: np.ndarray, stats: Mapping[str, CenteringStats]
) -> np.ndarray:
    """Rows centred under every view of an ensemble, concatenated and divided by sqrt(views): (n, views·d) unit
    float32 rows whose dot product is the mean cosine over the views.

    Args:
        x: (n, d) raw vectors.
        experiments: (n,) each row's experiment.
        plates: (n,) each row's plate (used by the per-plate views).
        stats: the ensemble's statistics (:func:`fit_ensemble`).
    """
    views = split_views(stats)
    exp = np.asarray(experiments).astype(str)
    per_plate_keys = np.char.add(np.char.add(exp, "/"), np.asarray(plates).astype(np.int64).astype(str))
    parts = [apply_centering_by(x, per_plate_keys if pp else exp, vstats) for (_, pp), vstats in views.items()]
    return (np.concatenate(parts, axis=1) / np.float32(np.sqrt(len(parts)))).astype(np.float32)
