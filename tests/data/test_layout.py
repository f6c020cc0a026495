"""Metadata readers on the real sample (Kaggle layout) and on a v1.0 tree written by the test."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoprint.data import METADATA_COLUMNS, detect_layout, parse_image_name, read_metadata, site_status
from phenoprint.data.layout import SIRNA_NAME
from phenoprint.errors import LayoutError, MetadataError


def test_kaggle_layout_reads_every_listed_well_as_two_sites(rxrx1_root: Path, rxrx1_metadata: pd.DataFrame) -> None:
    meta = rxrx1_metadata
    n_treat = len(pd.read_csv(rxrx1_root / "train.csv"))
    n_ctrl = len(pd.read_csv(rxrx1_root / "train_controls.csv"))
    assert tuple(meta.columns) == METADATA_COLUMNS
    assert len(meta) == 2 * (n_treat + n_ctrl)
    sites_per_well = meta.groupby(["experiment", "plate", "well"]).site.agg(lambda s: tuple(sorted(s)))
    assert set(sites_per_well) == {(1, 2)}
    assert meta.experiment.nunique() == 33
    assert set(meta.cell_type) == {"HUVEC", "RPE", "HEPG2", "U2OS"}
    assert set(meta.dataset) == {"train"}
    assert str(meta.sirna_id.dtype) == "Int64"


def test_kaggle_sirna_numbering_matches_well_type(rxrx1_metadata: pd.DataFrame) -> None:
    meta = rxrx1_metadata
    by_type = meta.groupby("well_type").sirna_id.agg(["min", "max"])
    assert tuple(by_type.loc["treatment"]) == (0, 1107)
    assert tuple(by_type.loc["positive_control"]) == (1108, 1137)
    assert tuple(by_type.loc["negative_control"]) == (1138, 1138)


def test_sites_with_images_are_found(rxrx1_root: Path, rxrx1_metadata: pd.DataFrame) -> None:
    meta = rxrx1_metadata[rxrx1_metadata.experiment.isin(["HUVEC-01", "RPE-01"])]
    present = site_status(meta, rxrx1_root)
    assert set(meta[present].well) == {"B02"}
    assert int(present.sum()) == 2 * 4 * 2  # two experiments, 4 plates, 2 sites


def _write_v1_tree(src: Path, dst: Path, experiment: str = "HUVEC-01") -> pd.DataFrame:
    """A v1.0-layout copy of one experiment's B02 well (plates 1-2) plus one listed well without images."""
    rows = []
    for plate in (1, 2):
        for site in (1, 2):
            for well, wt, sirna, sid in (("B02", "negative_control", "EMPTY", 1138), ("C03", "treatment", "s1", 7)):
                rows.append(
                    {
                        "site_id": f"{experiment}_{plate}_{well}_{site}",
                        "well_id": f"{experiment}_{plate}_{well}",
                        "cell_type": experiment.split("-")[0],
                        "dataset": "train",
                        "experiment": experiment,
                        "plate": plate,
                        "well": well,
                        "site": site,
                        "well_type": wt,
                        "sirna": sirna,
                        "sirna_id": sid,
                    }
                )
        target = dst / "images" / experiment / f"Plate{plate}"
        target.mkdir(parents=True)
        for f in (src / "train" / experiment / f"Plate{plate}").glob("B02_*.png"):
            shutil.copyfile(f, target / f.name)
    frame = pd.DataFrame(rows)
    frame.to_csv(dst / "metadata.csv", index=False)
    return frame


def test_v1_layout_reads_the_same_canonical_table(rxrx1_root: Path, tmp_path: Path) -> None:
    written = _write_v1_tree(rxrx1_root, tmp_path)
    assert detect_layout(tmp_path).name == "v1"
    meta = read_metadata(tmp_path)
    assert tuple(meta.columns) == (*METADATA_COLUMNS, SIRNA_NAME)  # v1.0 names its siRNAs; Kaggle has ids only
    assert meta.loc[meta.well == "C03", SIRNA_NAME].eq("s1").all()
    assert meta.loc[meta.well == "B02", SIRNA_NAME].eq("EMPTY").all()
    assert len(meta) == len(written)
    assert meta.loc[meta.well == "C03", "sirna_id"].eq(7).all()
    assert meta.loc[meta.well == "B02", "well_type"].eq("negative_control").all()
    assert site_status(meta, tmp_path).groupby(meta.well).all().to_dict() == {"B02": True, "C03": False}


def test_v1_cell_type_is_derived_when_absent(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "experiment": ["RPE-03"],
            "plate": [1],
            "well": ["D05"],
            "site": [1],
            "well_type": ["treatment"],
            "sirna_id": [3],
            "dataset": ["test"],
        }
    ).to_csv(tmp_path / "metadata.csv", index=False)
    assert read_metadata(tmp_path).cell_type.tolist() == ["RPE"]


def test_kaggle_test_split_has_nullable_labels(tmp_path: Path) -> None:
    pd.DataFrame({"id_code": ["U2OS-04_1_B03"], "experiment": ["U2OS-04"], "plate": [1], "well": ["B03"]}).to_csv(
        tmp_path / "test.csv", index=False
    )
    pd.DataFrame(
        {
            "id_code": ["U2OS-04_1_B02"],
            "experiment": ["U2OS-04"],
            "plate": [1],
            "well": ["B02"],
            "sirna": [1138],
            "well_type": ["negative_control"],
        }
    ).to_csv(tmp_path / "test_controls.csv", index=False)
    meta = read_metadata(tmp_path)
    assert len(meta) == 4
    assert set(meta.dataset) == {"test"}
    assert meta.loc[meta.well == "B03", "sirna_id"].isna().all()
    assert meta.loc[meta.well == "B02", "sirna_id"].eq(1138).all()


def test_not_a_data_root_is_refused_with_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match=r"metadata\.csv"):
        read_metadata(tmp_path)
    with pytest.raises(LayoutError, match="not a folder"):
        read_metadata(tmp_path / "absent")


def test_missing_column_is_named(tmp_path: Path) -> None:
    pd.DataFrame({"experiment": ["RPE-03"], "plate": [1], "site": [1]}).to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(MetadataError, match=r"missing column\(s\) well, well_type, dataset"):
        read_metadata(tmp_path)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("well", "Z99", "well name"),
        ("plate", 7, "plate number 1-4"),
        ("site", 3, "site 1 or 2"),
        ("well_type", "mystery", "treatment"),
        ("sirna_id", "abc", "not an integer"),
        ("experiment", "nocelltype", "<CELLTYPE>-<NN>"),
    ],
)
def test_invalid_values_are_refused(tmp_path: Path, column: str, value: object, message: str) -> None:
    row = {
        "experiment": "RPE-03",
        "plate": 1,
        "well": "D05",
        "site": 1,
        "well_type": "treatment",
        "sirna_id": 3,
        "dataset": "train",
    }
    row[column] = value
    pd.DataFrame([row]).to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(MetadataError, match=message):
        read_metadata(tmp_path)


def test_duplicate_sites_are_refused(tmp_path: Path) -> None:
    row = {
        "experiment": "RPE-03",
        "plate": 1,
        "well": "D05",
        "site": 1,
        "well_type": "treatment",
        "sirna_id": 3,
        "dataset": "train",
    }
    pd.DataFrame([row, row]).to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(MetadataError, match="listed"):
        read_metadata(tmp_path)


def test_image_names_parse_and_bad_ones_say_what_is_expected() -> None:
    assert parse_image_name("B02_s1_w3.png") == ("B02", 1, 3)
    assert parse_image_name("some/dir/O23_s2_w6.png") == ("O23", 2, 6)
    with pytest.raises(ValueError, match=r"<well>_s<site>_w<channel>\.png"):
        parse_image_name("B02_w3.png")


def test_rows_are_sorted_and_typed(rxrx1_metadata: pd.DataFrame) -> None:
    meta = rxrx1_metadata
    key = meta[["experiment", "plate", "well", "site"]]
    assert key.equals(key.sort_values(list(key.columns)).reset_index(drop=True))
    assert meta.plate.dtype == np.int64
    assert meta.site.dtype == np.int64
