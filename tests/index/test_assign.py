"""Plate-constrained assignment on scores with known truth, and against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from phenoprint.data.plate import PlateGroups, infer_plate_groups
from phenoprint.data.table import EmbeddingTable
from phenoprint.index.assign import assign_experiment, assign_plate
from phenoprint.index.build import build_experiment_index
from phenoprint.index.classify import sirna_scores
from phenoprint.index.config import IndexConfig

GROUPS = {0: tuple(range(0, 8)), 1: tuple(range(8, 16)), 2: tuple(range(16, 24))}
CONTROLS = (24, 25)
IDS = np.arange(26)


def _groups() -> PlateGroups:
    return PlateGroups.from_json({"groups": GROUPS, "order": [0, 1, 2], "rotations": {}, "plates": []})


def _plate_scores(truth: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """Scores where each query's true siRNA gets +1 over Gaussian noise."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0.0, noise, (len(truth), len(IDS)))
    s[np.arange(len(truth)), truth] += 1.0
    return s


def test_assignment_beats_argmax_when_the_design_is_respected() -> None:
    wins = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        truth = rng.permutation(GROUPS[1])
        s = _plate_scores(truth, noise=0.6, seed=seed)
        a = assign_plate(s, IDS, _groups())
        assert a.groups == {0: 1}
        assert len(set(a.sirna_ids.tolist())) == len(truth)
        assert a.assigned.all()
        argmax_acc = (IDS[s.argmax(axis=1)] == truth).mean()
        assigned_acc = (a.sirna_ids == truth).mean()
        assert assigned_acc >= argmax_acc
        wins += assigned_acc > argmax_acc
    assert wins >= 15


def test_group_scores_record_how_the_group_was_chosen() -> None:
    truth = np.array(GROUPS[2])
    a = assign_plate(_plate_scores(truth, 0.3, 0), IDS, _groups())
    scores = a.group_scores[0]
    assert set(scores) == {0, 1, 2}
    assert max(scores, key=scores.__getitem__) == 2
    forced = assign_plate(_plate_scores(truth, 0.3, 0), IDS, _groups(), group=0)
    assert forced.groups == {0: 0}
    assert set(forced.sirna_ids.tolist()) <= set(GROUPS[0])
    with pytest.raises(ValueError, match="group 7 is not a group"):
        assign_plate(_plate_scores(truth, 0.3, 0), IDS, _groups(), group=7)


def test_controls_are_candidates_once_per_plate() -> None:
    truth = np.array([*GROUPS[0], 24, 25])
    a = assign_plate(_plate_scores(truth, 0.2, 1), IDS, _groups(), control_ids=CONTROLS)
    assert sorted(a.sirna_ids.tolist()) == sorted(truth.tolist())
    without = assign_plate(_plate_scores(truth, 0.2, 1), IDS, _groups())
    assert not np.isin(without.sirna_ids[without.assigned], CONTROLS).any()


def test_more_queries_than_candidates_fall_back_to_argmax() -> None:
    truth = np.array([*GROUPS[0], 3, 5, 20])  # 11 queries, 8 candidates in the group
    s = _plate_scores(truth, 0.1, 2)
    a = assign_plate(s, IDS, _groups(), group=0)
    assert a.assigned.sum() == 8
    assert len(set(a.sirna_ids[a.assigned].tolist())) == 8
    rest = ~a.assigned
    np.testing.assert_array_equal(a.sirna_ids[rest], IDS[s[rest].argmax(axis=1)])
    np.testing.assert_allclose(a.scores[rest], s[rest].max(axis=1), rtol=1e-6)


def test_without_plate_groups_each_sirna_is_used_once() -> None:
    s = np.random.default_rng(3).normal(size=(4, 4))
    a = assign_plate(s, np.array([10, 11, 12, 13]))
    best = max(itertools.permutations(range(4)), key=lambda p: sum(s[i, p[i]] for i in range(4)))
    assert a.sirna_ids.tolist() == [10 + j for j in best]
    assert a.groups == {0: None}


def test_an_experiment_gets_distinct_groups_on_its_plates() -> None:
    rng = np.random.default_rng(4)
    truth_groups = {1: 2, 2: 0, 3: 1}
    plates = np.repeat([1, 2, 3], 8)
    truth = np.concatenate([rng.permutation(GROUPS[truth_groups[p]]) for p in (1, 2, 3)])
    s = _plate_scores(truth, 0.8, 5)
    a = assign_experiment(s, IDS, plates, _groups())
    assert a.groups == truth_groups
    for p in (1, 2, 3):
        on = plates == p
        assert len(set(a.sirna_ids[on].tolist())) == on.sum()
    assert (a.sirna_ids == truth).mean() > (IDS[s.argmax(axis=1)] == truth).mean()


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"sirna_ids must have shape \(26,\)"):
        assign_plate(np.zeros((3, 26)), IDS[:5])
    with pytest.raises(ValueError, match="2-D array"):
        assign_plate(np.zeros(26), IDS)
    with pytest.raises(ValueError, match=r"plates must have shape \(3,\)"):
        assign_experiment(np.zeros((3, 26)), IDS, np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        assign_plate(np.full((2, 26), np.nan), IDS)


def test_assignment_on_an_index_with_learned_plate_groups(small_table: EmbeddingTable) -> None:
    index = build_experiment_index(small_table, "RPE-02", IndexConfig(center="tvn", mode="centroid"))
    assert index.plate_groups is not None
    rows = small_table.experiment_mask("RPE-02") & ~small_table.control_mask()
    q = index.center(small_table.features[rows])
    y = small_table.labels()[rows]
    plates = small_table.meta.Metadata_plate.to_numpy()[rows]
    sc = sirna_scores(q, index, "centroid")
    a = assign_experiment(sc.scores, sc.sirna_ids, plates, index.plate_groups)
    truth_groups = infer_plate_groups(small_table.plate_metadata())
    for p, g in a.groups.items():
        on_plate = set(y[plates == p].tolist())
        assert g is not None
        assert on_plate == set(index.plate_groups.groups[g])
    assert (a.sirna_ids == y).mean() >= (sc.sirna_ids[sc.scores.argmax(axis=1)] == y).mean()
    assert {frozenset(g) for g in truth_groups.groups.values()} == {
        frozenset(g) for g in index.plate_groups.groups.values()
    }
