"""The plate design and plate groups: on the real train.csv and on tables with known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenoprint.data import USED_WELLS, PlateGroups, infer_plate_groups
from phenoprint.data.plate import edge_distance, well_position
from phenoprint.errors import MetadataError


def test_used_wells_are_rows_b_to_o_and_columns_02_to_23() -> None:
    assert len(USED_WELLS) == 308
    assert len(set(USED_WELLS)) == 308
    assert {w[0] for w in USED_WELLS} == set("BCDEFGHIJKLMNO")
    assert {int(w[1:]) for w in USED_WELLS} == set(range(2, 24))
    assert well_position("A01") == (0, 0)
    assert well_position("P24") == (15, 23)
    assert edge_distance("B02") == 0
    assert edge_distance("O23") == 0
    assert edge_distance("C03") == 1


def test_real_train_has_four_groups_of_277(rxrx1_metadata: pd.DataFrame) -> None:
    pg = infer_plate_groups(rxrx1_metadata)
    assert sorted(len(m) for m in pg.groups.values()) == [277, 277, 277, 277]
    treatments = set(rxrx1_metadata.loc[rxrx1_metadata.well_type == "treatment", "sirna_id"].astype(int))
    assert set().union(*map(set, pg.groups.values())) == treatments
    assert pg.disagreements.empty
    # the 4 plates of every experiment hold 4 distinct groups
    assert pg.plates.groupby("experiment").group.nunique().eq(4).all()
    assert pg.plates.agreement.eq(1.0).all()


def test_real_train_rotations_are_cyclic_and_recorded(rxrx1_metadata: pd.DataFrame) -> None:
    pg = infer_plate_groups(rxrx1_metadata)
    # Every experiment is a cyclic rotation of the first one's order. On the 33 training experiments only
    # three of the four shifts occur (0, 1 and 2), which is why each siRNA sits on 3 of the 4 plate numbers.
    assert None not in pg.rotations.values()
    assert set(pg.rotation_counts()) == {"0", "1", "2"}
    assert sum(pg.rotation_counts().values()) == 33
    for exp, k in pg.rotations.items():
        on_plates = pg.plates[pg.plates.experiment == exp].sort_values("plate").group.tolist()
        assert on_plates == [pg.order[(p + k) % 4] for p in range(4)]
    t = rxrx1_metadata[rxrx1_metadata.well_type == "treatment"]
    assert t.groupby("sirna_id").plate.nunique().eq(3).all()


def _design(n_experiments: int, n_groups: int, group_size: int, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """A well table with known groups and rotations (group g holds siRNAs g*size … g*size+size-1)."""
    rng = np.random.default_rng(seed)
    truth = {g: list(range(g * group_size, (g + 1) * group_size)) for g in range(n_groups)}
    rows, rotations = [], {}
    for e in range(n_experiments):
        exp = f"HUVEC-{e + 1:02d}"
        k = int(rng.integers(n_groups))
        rotations[exp] = k
        for p in range(n_groups):
            members = truth[(p + k) % n_groups]
            wells = rng.choice(USED_WELLS, size=len(members) + 1, replace=False)
            rows += [
                {"experiment": exp, "plate": p + 1, "well": w, "well_type": "treatment", "sirna_id": s}
                for w, s in zip(wells[1:], members, strict=True)
            ]
            rows.append(
                {"experiment": exp, "plate": p + 1, "well": wells[0], "well_type": "negative_control", "sirna_id": 9999}
            )
    frame = pd.DataFrame(rows).astype({"sirna_id": "Int64"})
    return frame, {"groups": truth, "rotations": rotations}


def test_known_groups_and_rotations_are_recovered() -> None:
    wells, truth = _design(n_experiments=6, n_groups=4, group_size=12)
    pg = infer_plate_groups(wells)
    found = {frozenset(m) for m in pg.groups.values()}
    assert found == {frozenset(m) for m in truth["groups"].values()}
    first = sorted(truth["rotations"])[0]
    for exp, k in truth["rotations"].items():
        assert pg.rotations[exp] == (k - truth["rotations"][first]) % 4
    assert pg.group_of(0) == pg.group_of(11)
    assert pg.group_of(9999) is None


def test_a_misplaced_sirna_is_reported_not_merged() -> None:
    wells, _ = _design(n_experiments=8, n_groups=4, group_size=10)
    # swap one siRNA of group 0 onto another plate in one experiment
    exp = "HUVEC-03"
    row = wells.index[(wells.experiment == exp) & (wells.sirna_id == 0)][0]
    wells.loc[row, "plate"] = wells.loc[row, "plate"] % 4 + 1
    pg = infer_plate_groups(wells)
    assert sorted(len(m) for m in pg.groups.values()) == [10, 10, 10, 10]
    bad = pg.disagreements
    assert len(bad) == 1
    assert bad.experiment.iloc[0] == exp
    assert bad.agreement.iloc[0] == pytest.approx(10 / 11)


def test_json_round_trip() -> None:
    wells, _ = _design(n_experiments=3, n_groups=4, group_size=5)
    pg = infer_plate_groups(wells)
    back = PlateGroups.from_json(pg.to_json())
    assert back.groups == pg.groups
    assert back.rotations == pg.rotations
    assert back.order == pg.order
    pd.testing.assert_frame_equal(back.plates, pg.plates, check_dtype=False)


def test_unlabelled_metadata_is_refused() -> None:
    frame = pd.DataFrame(
        {
            "experiment": ["A-01"],
            "plate": [1],
            "well": ["B02"],
            "well_type": ["treatment"],
            "sirna_id": pd.array([None], dtype="Int64"),
        }
    )
    with pytest.raises(MetadataError, match="labelled"):
        infer_plate_groups(frame)
