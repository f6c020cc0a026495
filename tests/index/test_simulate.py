"""The synthetic vector sets follow the RxRx1 plate design."""

from __future__ import annotations

import pytest

from phenoprint.data.plate import infer_plate_groups
from phenoprint.index.simulate import VectorDesign, simulate_table


def test_full_scale_design_numbers() -> None:
    d = VectorDesign()
    assert d.n_classes == 1139
    assert d.wells_per_plate == 308
    assert d.negative_control_id == 1138
    assert sum(n for _, n in d.cell_types) == 51


def test_small_table_has_the_plate_structure(small_design: VectorDesign, small_table) -> None:
    meta = small_table.plate_metadata()
    per_plate = meta.groupby(["experiment", "plate"])
    assert per_plate.size().eq(small_design.wells_per_plate).all()
    assert per_plate.well.nunique().eq(small_design.wells_per_plate).all()
    t = meta[meta.well_type == "treatment"]
    assert t.groupby("experiment").sirna_id.nunique().eq(small_design.n_treatments).all()
    pos = meta[meta.well_type == "positive_control"]
    assert pos.groupby(["experiment", "plate"]).sirna_id.nunique().eq(small_design.n_positive_controls).all()
    neg = meta[meta.well_type == "negative_control"]
    assert neg.sirna_id.eq(small_design.negative_control_id).all()
    groups = infer_plate_groups(meta)
    assert sorted(len(g) for g in groups.groups.values()) == [6, 6, 6, 6]
    assert None not in groups.rotations.values()


def test_same_seed_same_table(small_design: VectorDesign) -> None:
    a, b = simulate_table(small_design, seed=7), simulate_table(small_design, seed=7)
    assert (a.features == b.features).all()
    assert not (a.features == simulate_table(small_design, seed=8).features).all()


def test_invalid_designs_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of n_groups"):
        VectorDesign(n_treatments=10, n_groups=4)
    with pytest.raises(ValueError, match="the RxRx1 plate has 308"):
        VectorDesign(n_treatments=1200, n_groups=2)
