"""Name every well of a batch jointly: each plate's treatment group, then a one-to-one assignment within it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from phenoprint.data.plate import PlateGroups
from phenoprint.data.table import EmbeddingTable
from phenoprint.index.assign import assign_experiment
from phenoprint.index.classify import MODES, classify, sirna_scores
from phenoprint.index.openset import flag_unknown

if TYPE_CHECKING:
    from phenoprint.index.experiment import ExperimentIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlateCall:
    """The treatment group chosen for one plate and how sure the choice is.

    Attributes:
        plate: the plate number.
        group: the chosen group (None: no plate design was used).
        margin: mean per-well score by which the chosen group's best assignment beats the best other group's
            (large: the plate's wells fit one group far better; near 0 or negative: the choice is not clear, e.g.
            because distinct groups per experiment forced a second choice).
        group_scores: group → total score of the best assignment of the plate's wells with that group.
        wells: wells of the plate that were decoded.
    """

    plate: int
    group: int | None
    margin: float
    group_scores: dict[int, float]
    wells: int


@dataclass(frozen=True)
class Decoding:
    """The joint answer for the wells of one experiment.

    Attributes:
        sirna_ids: (n,) int64 the siRNA each well is named (assigned, or the per-well best where not assigned).
        scores: (n,) float32 its score.
        margins: (n,) float32 the per-well confidence: the chosen siRNA's score minus the best other candidate's
            (negative where the assignment overruled the well's own favourite to keep each siRNA once).
        assigned: (n,) bool placed by the assignment (False: per-well fallback).
        plates: plate → :class:`PlateCall`.
        used_design: whether the plate design constrained the answer (False: per-well top-1, see ``note``).
        note: why the design was or was not used, in words.
    """

    sirna_ids: np.ndarray
    scores: np.ndarray
    margins: np.ndarray
    assigned: np.ndarray
    plates: dict[int, PlateCall]
    used_design: bool
    note: str


def design_problem(
    plates: np.ndarray, plate_groups: PlateGroups | None, n_controls: int, *, treatments_only: bool = False
) -> str | None:
    """Why the RxRx1 plate design cannot be applied to these wells, or None when it can.

    The design holds one treatment group per plate, distinct groups within an experiment, and each candidate once
    per plate; wells beyond what a group (plus the controls) can hold, or more plates than groups, mean the data
    follows another design (e.g. replicate wells of a CellProfiler screen), where a one-to-one assignment would be
    wrong.
    """
    if plate_groups is None:
        return "no plate groups were learned for this index (no labelled treatment wells in its reference)"
    counts = pd.Series(np.asarray(plates)).value_counts()
    if len(counts) > len(plate_groups.groups):
        return f"{len(counts)} plates but the design has {len(plate_groups.groups)} treatment groups"
    smallest = min(len(m) for m in plate_groups.groups.values()) + (0 if treatments_only else n_controls)
    if int(counts.max()) > smallest:
        return (
            f"plate {counts.idxmax()} has {int(counts.max())} wells but a plate of this design holds at most "
            f"{smallest} distinct siRNAs"
        )
    return None


def decode_experiment(
    scores: np.ndarray,
    sirna_ids: np.ndarray,
    plates: np.ndarray,
    plate_groups: PlateGroups | None,
    control_ids: Iterable[int] = (),
    *,
    treatments_only: bool = False,
) -> Decoding:
    """Name the wells of one experiment jointly, by its plate design, or per well where no design applies.

    Each plate's group is chosen from the learned plate groups (distinct groups per experiment, matched by a second
    assignment on the plate x group totals, :func:`phenoprint.index.assign.assign_experiment`); the candidates are
    that group's treatments plus the controls, each used once per plate, so each treatment siRNA is used at most once
    per experiment.

    Args:
        scores: (n, c) score of each well against each siRNA (:func:`phenoprint.index.classify.sirna_scores`).
        sirna_ids: (c,) the siRNA of each column.
        plates: (n,) the plate of each well.
        plate_groups: the learned treatment groups (None: per-well answer).
        control_ids: siRNAs allowed once on every plate (ignored with ``treatments_only``).
        treatments_only: the wells are known to be treatments (e.g. a Kaggle ``test.csv``): controls are no
            candidates.

    Raises:
        ValueError: shapes disagree or scores are not finite.
    """
    s = np.asarray(scores, dtype=np.float32)
    ids = np.asarray(sirna_ids, dtype=np.int64)
    if s.ndim != 2 or ids.shape != (s.shape[1],):
        raise ValueError(f"scores must be (n, c) with sirna_ids (c,); got {s.shape} and {ids.shape}")
    plates = np.asarray(plates, dtype=np.int64)
    if plates.shape != (len(s),):
        raise ValueError(f"plates must have shape ({len(s)},); got {plates.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    controls = () if treatments_only else tuple(int(c) for c in control_ids)
    problem = design_problem(plates, plate_groups, len(controls), treatments_only=treatments_only)
    if problem is not None or len(s) == 0:
        best = np.argmax(s, axis=1) if len(s) else np.zeros(0, dtype=np.int64)
        chosen_scores = s[np.arange(len(s)), best] if len(s) else np.zeros(0, dtype=np.float32)
        margins = _margins(s, best, np.ones(s.shape[1], dtype=bool))
        calls = {int(p): PlateCall(int(p), None, float("nan"), {}, int((plates == p).sum())) for p in np.unique(plates)}
        note = f"per-well top-1: {problem or 'no wells'}"
        return Decoding(ids[best], chosen_scores, margins, np.zeros(len(s), dtype=bool), calls, False, note)
    assert plate_groups is not None
    a = assign_experiment(s, ids, plates, plate_groups, controls, distinct_groups=True)
    col_of = {int(x): j for j, x in enumerate(ids)}
    cols = np.array([col_of[int(x)] for x in a.sirna_ids], dtype=np.int64)
    margins = np.empty(len(s), dtype=np.float32)
    control_cols = np.isin(ids, list(controls))
    calls = {}
    for p in np.unique(plates):
        rows = np.flatnonzero(plates == p)
        group = a.groups[int(p)]
        allowed = control_cols | np.isin(ids, plate_groups.groups[group] if group is not None else ())
        margins[rows] = _margins(s[rows], cols[rows], allowed)
        totals = a.group_scores[int(p)]
        others = [v for g, v in totals.items() if g != group]
        gap = (totals[group] - max(others)) / max(len(rows), 1) if others and group is not None else float("nan")
        calls[int(p)] = PlateCall(int(p), group, float(gap), dict(totals), len(rows))
    note = f"plate design: one of {len(plate_groups.groups)} treatment groups per plate, each siRNA once"
    return Decoding(a.sirna_ids, a.scores, margins, a.assigned, calls, True, note)


def _margins(s: np.ndarray, chosen: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Score of the chosen column minus the best other allowed column, per row."""
    if len(s) == 0:
        return np.zeros(0, dtype=np.float32)
    masked = np.where(allowed[None, :], s, -np.inf)
    picked = s[np.arange(len(s)), chosen]
    masked[np.arange(len(s)), chosen] = -np.inf
    other = masked.max(axis=1) if masked.shape[1] > 1 else np.full(len(s), -np.inf)
    return np.where(np.isfinite(other), picked - other, np.inf).astype(np.float32)


#: Columns of :func:`predict_experiment`'s frame, before the top-k columns.
PREDICTION_KEY = ("Metadata_experiment", "Metadata_plate", "Metadata_well")


@dataclass(frozen=True)
class BatchPrediction:
    """Every well of one experiment, named per well and jointly.

    Attributes:
        wells: one row per well: :data:`PREDICTION_KEY`, ``top{i}_sirna_id`` / ``top{i}_score`` (i = 1…k),
            ``unknown`` (the open-set flag of the assigned siRNA) and ``similarity`` (the centroid cosine it
            thresholds), ``plate_group`` and ``plate_group_margin``,
            ``assigned_sirna_id``, ``assigned_score``, ``confidence`` (the assignment's margin), ``assigned`` (placed
            by the assignment), and where the table labels wells, ``true_sirna_id``.
        plates: one row per plate: ``plate``, ``group``, ``margin``, ``wells``, and with labels ``top1`` and
            ``assigned_top1`` (accuracy of the per-well and of the joint answer on the labelled wells).
        mode: the classification mode used (the index's).
        used_design: whether the plate design constrained the answer.
        note: how the wells were decoded, in words.
    """

    wells: pd.DataFrame
    plates: pd.DataFrame
    mode: str
    used_design: bool
    note: str


def _experiment_wells(index: ExperimentIndex, table: EmbeddingTable) -> EmbeddingTable:
    """The table's wells of the index's experiment, sites averaged; refused when it has none or one twice."""
    from phenoprint.errors import EmbeddingTableError

    table = table.aggregate_sites()
    rows = table.experiment_mask(index.experiment)
    if not rows.any():
        raise EmbeddingTableError(
            f"the embedding table holds no wells of {index.experiment} (it holds {', '.join(table.experiments)})"
        )
    table = table.subset(rows)
    meta = table.meta.reset_index(drop=True)
    dup = meta.duplicated(list(PREDICTION_KEY))
    if dup.any():
        first = meta.loc[dup.idxmax()]
        raise EmbeddingTableError(f"well {first.Metadata_plate} {first.Metadata_well} is listed more than once")
    return table


def predict_experiment(
    index: ExperimentIndex,
    table: EmbeddingTable,
    *,
    k: int = 5,
    mode: str | None = None,
    treatments_only: bool = False,
) -> BatchPrediction:
    """Name every well of ``index.experiment`` in ``table``: per-well top-k, each plate's group, the joint answer.

    The table's wells of the experiment are centred with the index's stored statistics, scored against every siRNA
    of the index in the index's recorded mode, and decoded with :func:`decode_experiment`. A well is flagged unknown
    when its centroid cosine to the siRNA it was finally named falls under the index's open-set threshold.

    Args:
        index: the experiment's index.
        table: embeddings holding the experiment's wells (sites are averaged to wells; other experiments ignored).
        k: per-well candidates reported.
        mode: ``knn`` or ``centroid`` (None: the index's recorded mode).
        treatments_only: the wells are all treatments (controls are not candidates of the assignment).

    Raises:
        EmbeddingTableError: the table has no wells of the experiment, or a well is listed twice.
        ValueError: bad k or mode, or the table's dimension differs from the index's.
    """
    mode = mode or index.config.mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    table = _experiment_wells(index, table)
    meta = table.meta.reset_index(drop=True)
    plates = meta["Metadata_plate"].to_numpy(dtype=np.int64)
    x = index.center(table.features, plates if index.config.per_plate else None)
    cls = classify(x, index, k=k, mode=mode)
    sc = sirna_scores(x, index, mode)
    dec = decode_experiment(
        sc.scores, sc.sirna_ids, plates, index.plate_groups, index.control_ids, treatments_only=treatments_only
    )
    # the open-set rule thresholds a centroid cosine (whatever the mode): that of the siRNA the well is named
    cos = x @ index.centroids.T
    named = np.searchsorted(index.sirna_ids, dec.sirna_ids)
    similarity = cos[np.arange(len(x)), named]
    unknown = flag_unknown(similarity, index.open_set.threshold)
    out = meta[list(PREDICTION_KEY)].copy()
    for i in range(k):
        out[f"top{i + 1}_sirna_id"] = cls.sirna_ids[:, i]
        out[f"top{i + 1}_score"] = cls.scores[:, i]
    out["unknown"] = unknown
    out["similarity"] = similarity.astype(np.float32)
    out["plate_group"] = pd.array([dec.plates[int(p)].group for p in plates], dtype="Int64")
    out["plate_group_margin"] = np.array([dec.plates[int(p)].margin for p in plates], dtype=np.float32)
    out["assigned_sirna_id"] = dec.sirna_ids
    out["assigned_score"] = dec.scores
    out["confidence"] = dec.margins
    out["assigned"] = dec.assigned
    labels = table.labels()
    plate_rows = []
    for p, call in dec.plates.items():
        row: dict[str, object] = {"plate": p, "group": call.group, "margin": call.margin, "wells": call.wells}
        plate_rows.append(row)
    if (labels >= 0).any():
        out["true_sirna_id"] = pd.array(np.where(labels >= 0, labels, -1), dtype="Int64")
        out.loc[labels < 0, "true_sirna_id"] = pd.NA
        known = labels >= 0
        for row in plate_rows:
            on = known & (plates == row["plate"])
            row["labelled"] = int(on.sum())
            row["top1"] = float((cls.top1[on] == labels[on]).mean()) if on.any() else float("nan")
            row["assigned_top1"] = float((dec.sirna_ids[on] == labels[on]).mean()) if on.any() else float("nan")
    if not dec.used_design:
        log.warning("%s: %s", index.experiment, dec.note)
    return BatchPrediction(out, pd.DataFrame(plate_rows), mode, dec.used_design, dec.note)
