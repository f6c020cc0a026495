"""Plate decoding: against a brute-force optimum, one use per siRNA per experiment, invariant to well order."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from phenoprint.data.plate import PlateGroups
from phenoprint.data.table import EmbeddingTable
from phenoprint.index.build import build_experiment_index
from phenoprint.index.config import IndexConfig
from phenoprint.index.decode import decode_experiment, predict_experiment


def _groups(groups: dict[int, tuple[int, ...]]) -> PlateGroups:
    empty = pd.DataFrame(columns=["experiment", "plate", "group", "n_treatments", "n_matching", "agreement"])
    return PlateGroups(groups, empty, {}, tuple(groups), empty)


def _brute_force(scores, ids, plates, groups, controls):
    """Best total over every assignment of distinct groups to plates and every injective map of wells to candidates."""
    col = {int(s): j for j, s in enumerate(ids)}
    plate_list = sorted(set(plates.tolist()))
    best = -np.inf
    for chosen in itertools.permutations(groups, len(plate_list)):
        total = 0.0
        for p, g in zip(plate_list, chosen, strict=True):
            rows = np.flatnonzero(plates == p)
            cands = [col[s] for s in (*groups[g], *controls)]
            total += max(
                sum(scores[r, c] for r, c in zip(rows, perm, strict=True))
                for perm in itertools.permutations(cands, len(rows))
            )
        best = max(best, total)
    return best


def test_decoding_reaches_the_brute_force_optimum_on_a_small_case() -> None:
    rng = np.random.default_rng(3)
    groups = {0: (0, 1, 2), 1: (3, 4, 5), 2: (6, 7, 8)}
    controls = (9,)
    ids = np.arange(10)
    plates = np.array([1, 1, 1, 2, 2, 2, 2])
    for _ in range(5):
        scores = rng.normal(size=(len(plates), len(ids))).astype(np.float32)
        dec = decode_experiment(scores, ids, plates, _groups(groups), controls)
        got = float(sum(scores[i, int(s)] for i, s in enumerate(dec.sirna_ids)))
        assert got == pytest.approx(_brute_force(scores, ids, plates, groups, controls), abs=1e-5)
        assert dec.used_design
        assert dec.assigned.all()
        assert dec.plates[1].group != dec.plates[2].group


def test_no_sirna_twice_per_experiment_and_each_plate_from_one_group(small_table: EmbeddingTable) -> None:
    index = build_experiment_index(small_table, "HUVEC-01", IndexConfig(center="tvn", mode="centroid"))
    bp = predict_experiment(index, small_table)
    wells = bp.wells
    assert len(wells) == int(small_table.experiment_mask("HUVEC-01").sum())
    treat = wells[~wells.assigned_sirna_id.isin(index.control_ids)]
    assert not treat.assigned_sirna_id.duplicated().any()
    assert index.plate_groups is not None
    for _plate, sub in treat.groupby("Metadata_plate"):
        groups = {index.plate_groups.group_of(int(s)) for s in sub.assigned_sirna_id}
        assert len(groups) == 1
        assert groups == {int(sub.plate_group.iloc[0])}
    for _, sub in wells.groupby("Metadata_plate"):
        assert not sub.assigned_sirna_id.duplicated().any()  # controls too: each once per plate
    assert bp.used_design
    assert set(bp.plates.columns) >= {"plate", "group", "margin", "top1", "assigned_top1"}
    labelled = wells.true_sirna_id.notna()
    assigned = (wells.assigned_sirna_id[labelled] == wells.true_sirna_id[labelled]).mean()
    per_well = (wells.top1_sirna_id[labelled] == wells.true_sirna_id[labelled]).mean()
    assert assigned >= per_well


def test_a_plate_whose_wells_are_shuffled_gets_the_same_answer_shuffled(small_table: EmbeddingTable) -> None:
    index = build_experiment_index(small_table, "RPE-02", IndexConfig(center="center", mode="centroid"))
    rows = np.flatnonzero(small_table.experiment_mask("RPE-02"))
    order = np.random.default_rng(0).permutation(rows)
    shuffled = EmbeddingTable(
        small_table.meta.iloc[order].reset_index(drop=True),
        small_table.features[order],
        small_table.feature_names,
        small_table.fingerprint,
    )
    key = ["Metadata_plate", "Metadata_well"]
    a = predict_experiment(index, small_table).wells.sort_values(key).reset_index(drop=True)
    b = predict_experiment(index, shuffled).wells.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_without_a_plate_design_it_falls_back_to_per_well_top1(caplog) -> None:
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]], dtype=np.float32)
    dec = decode_experiment(scores, np.array([5, 6]), np.array([1, 1, 1]), None)
    assert not dec.used_design
    assert "no plate groups" in dec.note
    assert dec.sirna_ids.tolist() == [5, 5, 5]  # replicates allowed: no one-to-one constraint
    more_wells = decode_experiment(scores, np.array([5, 6]), np.array([1, 1, 1]), _groups({0: (5,), 1: (6,)}))
    assert not more_wells.used_design
    assert "holds at most" in more_wells.note


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="plates must have shape"):
        decode_experiment(np.zeros((2, 3)), np.arange(3), np.array([1]), None)
