"""Plate-constrained assignment: each siRNA of a plate's treatment group (and each control) used once per plate."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from phenoprint.data.plate import PlateGroups


@dataclass(frozen=True)
class Assignment:
    """One siRNA per query well, each candidate used at most once per plate.

    Attributes:
        sirna_ids: (n,) int64 the assigned siRNA (the unconstrained best where ``assigned`` is False).
        scores: (n,) float32 the score of that choice.
        assigned: (n,) bool: placed by the assignment (False: more queries than candidates, so the query fell
            back to its unconstrained best siRNA).
        groups: plate → the treatment group chosen for it (None: no plate groups, every siRNA a candidate).
        group_scores: plate → group → total score of the best assignment with that group (how it was chosen).
    """

    sirna_ids: np.ndarray
    scores: np.ndarray
    assigned: np.ndarray
    groups: dict[int, int | None]
    group_scores: dict[int, dict[int, float]]


def assign_plate(
    scores: np.ndarray,
    sirna_ids: np.ndarray,
    plate_groups: PlateGroups | None = None,
    control_ids: Iterable[int] = (),
    *,
    group: int | None = None,
) -> Assignment:
    """Assign the query wells of one plate to distinct siRNAs that can sit on that plate.

    The candidates are the treatments of one group plus the control siRNAs (each positive control and the
    untreated label once per plate). The group, unless given, is the one whose optimal assignment scores highest
    on these queries: a plate holds one group, and the right one explains its wells far better than the others.
    ``scipy.optimize.linear_sum_assignment`` then maximizes the total score with each candidate used once.

    Args:
        scores: (n, c) score of each query against each siRNA (e.g. :func:`phenoprint.index.classify.sirna_scores`).
        sirna_ids: (c,) the siRNA of each column.
        plate_groups: treatment groups (None: every column is a candidate, each used once).
        control_ids: siRNAs allowed on every plate (positive and negative controls); pass none when the queries
            are known to be treatments.
        group: force this group instead of choosing.

    Raises:
        ValueError: shapes disagree, or ``group`` is not a group of ``plate_groups``.
    """
    return assign_experiment(
        scores,
        sirna_ids,
        np.zeros(_check(scores, sirna_ids)[0], dtype=np.int64),
        plate_groups,
        control_ids,
        groups={0: group} if group is not None else None,
    )


def assign_experiment(
    scores: np.ndarray,
    sirna_ids: np.ndarray,
    plates: np.ndarray,
    plate_groups: PlateGroups | None = None,
    control_ids: Iterable[int] = (),
    *,
    distinct_groups: bool = True,
    groups: dict[int, int | None] | None = None,
) -> Assignment:
    """Assign the query wells of several plates (an experiment), each plate on its own.

    With ``distinct_groups`` (the RxRx1 design: the plates of an experiment hold different groups, each treatment
    once per experiment) the groups are matched to plates by a second assignment on the (plate x group) totals, as
    long as there are no more plates than groups; otherwise each plate takes its own best group.

    Args:
        scores: (n, c) scores of the queries against the siRNAs ``sirna_ids``.
        sirna_ids: (c,) the siRNA of each column.
        plates: (n,) the plate of each query.
        plate_groups: treatment groups (None: no restriction; each siRNA once per plate).
        control_ids: siRNAs allowed once on every plate.
        distinct_groups: give the plates of the experiment distinct groups.
        groups: force plate → group for some plates.
    """
    n, c = _check(scores, sirna_ids)
    plates = np.asarray(plates)
    if plates.shape != (n,):
        raise ValueError(f"plates must have shape ({n},); got {plates.shape}")
    s = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(sirna_ids, dtype=np.int64)
    controls = set(int(x) for x in control_ids)
    control_cols = np.flatnonzero(np.isin(ids, list(controls)))
    out_ids = ids[np.argmax(s, axis=1)] if c else np.full(n, -1, dtype=np.int64)
    out_scores = s.max(axis=1) if c else np.full(n, -np.inf)
    assigned = np.zeros(n, dtype=bool)
    plate_list = [int(p) for p in np.unique(plates)]
    forced = dict(groups or {})

    candidates_of: dict[int | None, np.ndarray]
    group_ids: list[int | None]
    if plate_groups is None:
        candidates_of, group_ids = {None: np.arange(c)}, [None]
    else:
        col_of = {int(x): j for j, x in enumerate(ids)}
        candidates_of = {
            g: np.union1d([col_of[m] for m in members if m in col_of], control_cols).astype(np.int64)
            for g, members in plate_groups.groups.items()
        }
        group_ids = list(candidates_of)
        bad = [g for g in forced.values() if g is not None and g not in candidates_of]
        if bad:
            raise ValueError(f"group {bad[0]} is not a group of the plate groups ({sorted(plate_groups.groups)})")

    totals: dict[int, dict[int, float]] = {}
    for p in plate_list:
        rows = np.flatnonzero(plates == p)
        totals[p] = {g: _solve(s[rows], candidates_of[g])[2] for g in group_ids if g is not None}
    chosen = _choose_groups(plate_list, group_ids, totals, forced, distinct_groups and plate_groups is not None)

    for p in plate_list:
        rows = np.flatnonzero(plates == p)
        r, cols, _ = _solve(s[rows], candidates_of[chosen[p]])
        out_ids[rows[r]] = ids[cols]
        out_scores[rows[r]] = s[rows[r], cols]
        assigned[rows[r]] = True
    return Assignment(out_ids, out_scores.astype(np.float32), assigned, chosen, totals)


def _choose_groups(
    plates: list[int],
    group_ids: list[int | None],
    totals: dict[int, dict[int, float]],
    forced: dict[int, int | None],
    distinct: bool,
) -> dict[int, int | None]:
    if group_ids == [None]:
        return {p: None for p in plates}
    real = [g for g in group_ids if g is not None]
    chosen: dict[int, int | None] = {p: forced[p] for p in plates if p in forced}
    free = [p for p in plates if p not in chosen]
    left = [g for g in real if g not in chosen.values()] if distinct else real
    if distinct and free and len(free) <= len(left):
        gain = np.array([[totals[p][g] for g in left] for p in free])
        r, cidx = linear_sum_assignment(gain, maximize=True)
        chosen.update({free[i]: left[j] for i, j in zip(r, cidx, strict=True)})
    else:
        for p in free:
            chosen[p] = real[int(np.argmax([totals[p][g] for g in real]))]
    return chosen


def _solve(s: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Rows, candidate columns and total of the best one-to-one assignment of ``s[:, cols]``."""
    if len(s) == 0 or len(cols) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0.0
    sub = s[:, cols]
    r, c = linear_sum_assignment(sub, maximize=True)
    return r, cols[c], float(sub[r, c].sum())


def _check(scores: np.ndarray, sirna_ids: np.ndarray) -> tuple[int, int]:
    s = np.asarray(scores)
    ids = np.asarray(sirna_ids)
    if s.ndim != 2:
        raise ValueError(f"scores must be a 2-D array (queries, siRNAs); got shape {s.shape}")
    if ids.shape != (s.shape[1],):
        raise ValueError(f"sirna_ids must have shape ({s.shape[1]},) to match the score columns; got {ids.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return int(s.shape[0]), int(s.shape[1])
