"""The synthetic plate design: every RxRx1 design rule at the tiny preset, the full preset's counts, real layouts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoprint.data import USED_WELLS, infer_plate_groups
from phenoprint.data.synth import PRESETS, CellTypePlan, build_design, preset_config, site_table, stream
from phenoprint.data.synth.design import V1_COLUMNS, design_from_csv
from phenoprint.errors import MetadataError


@pytest.fixture(scope="module")
def tiny() -> pd.DataFrame:
    return build_design(preset_config("tiny"))


def test_every_plate_holds_untreated_all_controls_and_one_group(tiny: pd.DataFrame) -> None:
    config = preset_config("tiny")
    controls = set(range(config.n_treatments, config.untreated_id))
    for (_, plate), wells in tiny.groupby(["experiment", "plate"]):
        assert 1 <= plate <= 4
        untreated = wells[wells.well_type == "negative_control"]
        assert len(untreated) == 1
        assert untreated.well.item() == "B02"
        assert untreated.sirna_id.item() == config.untreated_id
        assert untreated.sirna.item() == "EMPTY"
        assert set(wells[wells.well_type == "positive_control"].sirna_id) == controls
        assert (wells.well_type == "treatment").sum() == config.group_size
        assert wells.well.is_unique
        assert set(wells.well) <= set(USED_WELLS)
    assert tiny.groupby("experiment").plate.nunique().eq(4).all()


def test_each_treatment_once_per_experiment(tiny: pd.DataFrame) -> None:
    config = preset_config("tiny")
    t = tiny[tiny.well_type == "treatment"]
    for _, wells in t.groupby("experiment"):
        assert sorted(wells.sirna_id) == list(range(config.n_treatments))


def test_groups_rotate_cyclically_and_are_recovered(tiny: pd.DataFrame) -> None:
    pg = infer_plate_groups(tiny)
    assert sorted(len(m) for m in pg.groups.values()) == [4, 4, 4, 4]
    assert pg.disagreements.empty
    assert None not in pg.rotations.values()
    assert len(pg.rotations) == 4


def test_rotations_cover_shifts_on_a_larger_design() -> None:
    config = preset_config("tiny", plans=(CellTypePlan("HUVEC", 12, 8),))
    pg = infer_plate_groups(build_design(config))
    assert None not in pg.rotations.values()
    assert len(set(pg.rotations.values())) > 1  # the per-experiment shift is drawn, not fixed


def test_positions_differ_between_plates(tiny: pd.DataFrame) -> None:
    maps = [
        frozenset(zip(w.well, w.sirna_id, strict=True))
        for _, w in tiny[tiny.well_type == "positive_control"].groupby(["experiment", "plate"])
    ]
    assert len(set(maps)) == len(maps)


def test_design_is_deterministic_and_seeded() -> None:
    a = build_design(preset_config("tiny", seed=5))
    pd.testing.assert_frame_equal(a, build_design(preset_config("tiny", seed=5)))
    assert not a.equals(build_design(preset_config("tiny", seed=6)))


def test_full_preset_has_the_release_counts() -> None:
    config = PRESETS["full"]
    assert (config.n_treatments, config.n_positive_controls, config.untreated_id) == (1108, 30, 1138)
    wells = build_design(config)
    assert wells.experiment.nunique() == 51
    assert wells.groupby(["experiment", "plate"]).size().eq(308).all()
    counts = wells.drop_duplicates("experiment").groupby("cell_type").size().to_dict()
    assert counts == {"HUVEC": 24, "RPE": 11, "HEPG2": 11, "U2OS": 5}
    train = wells[wells.dataset == "train"].drop_duplicates("experiment").groupby("cell_type").experiment.max()
    assert train.to_dict() == {"HEPG2": "HEPG2-07", "HUVEC": "HUVEC-16", "RPE": "RPE-07", "U2OS": "U2OS-03"}
    assert wells.loc[wells.well_type == "positive_control", "sirna_id"].between(1108, 1137).all()


def test_site_table_is_the_v1_layout(tiny: pd.DataFrame) -> None:
    sites = site_table(tiny, 2)
    assert tuple(sites.columns) == V1_COLUMNS
    assert len(sites) == 2 * len(tiny)
    first = sites.iloc[0]
    assert first.site_id == f"{first.experiment}_{first.plate}_{first.well}_{first.site}"
    assert first.well_id == f"{first.experiment}_{first.plate}_{first.well}"


def test_layout_from_copies_real_plate_maps(rxrx1_root: Path, tmp_path: Path) -> None:
    for name in ("train", "train_controls"):
        frame = pd.read_csv(rxrx1_root / f"{name}.csv")
        frame[frame.experiment == "RPE-01"].to_csv(tmp_path / f"{name}.csv", index=False)
    wells = design_from_csv(tmp_path / "train.csv")
    real = pd.concat([pd.read_csv(tmp_path / f"{n}.csv") for n in ("train", "train_controls")])
    assert len(wells) == len(real) == 4 * 308
    merged = wells.merge(real, on=["experiment", "plate", "well"])
    assert (merged.sirna_id == merged.sirna_y).all()
    assert set(wells.well_type) == {"treatment", "positive_control", "negative_control"}
    config = preset_config("tiny", layout_from=str(tmp_path / "train.csv"))
    pd.testing.assert_frame_equal(build_design(config), wells)


def test_layout_from_refuses_unlabelled_or_missing(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="no such file"):
        design_from_csv(tmp_path / "nope.csv")
    pd.DataFrame({"experiment": ["HUVEC-01"], "plate": [1], "well": ["B02"], "sirna": [None]}).to_csv(
        tmp_path / "test.csv", index=False
    )
    with pytest.raises(MetadataError, match="no siRNA label"):
        design_from_csv(tmp_path / "test.csv")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_size": 16}, "image size"),
        ({"group_size": 0}, "group_size"),
        ({"n_positive_controls": 305}, "at most 308 wells"),
        ({"sites_per_well": 3}, "sites per well"),
        ({"seed": -1}, "seed"),
        ({"plans": (CellTypePlan("MCF7", 2, 1),)}, "cell type"),
        ({"plans": (CellTypePlan("HUVEC", 2, 3),)}, "n_train"),
    ],
)
def test_config_refuses_bad_values(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(PRESETS["tiny"], **change)


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ValueError, match="tiny, demo, full"):
        preset_config("huge")


def test_config_round_trips_through_json() -> None:
    config = preset_config("demo", seed=3)
    assert type(config).from_json(config.to_json()) == config


def test_streams_are_keyed() -> None:
    a = stream(0, "x", "HUVEC-01", 1).random(3)
    np.testing.assert_array_equal(a, stream(0, "x", "HUVEC-01", 1).random(3))
    assert not np.array_equal(a, stream(0, "x", "HUVEC-01", 2).random(3))
    assert not np.array_equal(a, stream(1, "x", "HUVEC-01", 1).random(3))
