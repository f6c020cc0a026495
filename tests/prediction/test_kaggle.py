"""The Kaggle submission on the real RxRx1 metadata (treatment labels withheld as in test.csv)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoprint.data.plate import infer_plate_groups
from phenoprint.data.table import EmbeddingTable, feature_names
from phenoprint.errors import MetadataError
from phenoprint.index.build import build_experiment_index
from phenoprint.index.config import IndexConfig
from phenoprint.prediction.batch import kaggle_predictions
from phenoprint.prediction.kaggle import read_test_wells, submission

KAGGLE = Path(os.environ.get("PHENOPRINT_RXRX1", Path(__file__).parents[3] / "shared" / "rxrx1")) / "kaggle"
TARGETS = ("HUVEC-01",)
REFERENCE = ("HUVEC-02", "HUVEC-03")

pytestmark = pytest.mark.skipif(not (KAGGLE / "train.csv").is_file(), reason=f"real RxRx1 sample not found at {KAGGLE}")


@pytest.fixture(scope="module")
def kaggle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Kaggle-layout root whose test.csv is the real train.csv of the targets without its labels."""
    root = tmp_path_factory.mktemp("kaggle")
    train = pd.read_csv(KAGGLE / "train.csv")
    test = train[train.experiment.isin(TARGETS)].drop(columns="sirna")
    test.to_csv(root / "test.csv", index=False)
    return root


def _stand_in_table() -> EmbeddingTable:
    """Stand-in vectors (a random centroid per siRNA plus noise) for every real well of the targets and references:
    the sample has images of one well only."""
    train = pd.read_csv(KAGGLE / "train.csv").assign(well_type="treatment")
    controls = pd.read_csv(KAGGLE / "train_controls.csv")
    wells = pd.concat([train, controls], ignore_index=True)
    wells = wells[wells.experiment.isin(TARGETS + REFERENCE)].reset_index(drop=True)
    rng = np.random.default_rng(0)
    d = 16
    centroids = rng.normal(size=(1139, d))
    x = centroids[wells.sirna.to_numpy()] * 0.5 + rng.normal(size=(len(wells), d))
    labels = wells.sirna.astype("Int64")
    labels[wells.experiment.isin(TARGETS) & (wells.well_type == "treatment")] = pd.NA  # withheld as in test.csv
    meta = pd.DataFrame(
        {
            "Metadata_experiment": wells.experiment,
            "Metadata_plate": wells.plate,
            "Metadata_well": wells.well,
            "Metadata_cell_type": wells.experiment.str.split("-").str[0],
            "Metadata_well_type": wells.well_type,
            "Metadata_sirna_id": labels,
        }
    )
    return EmbeddingTable(meta, x.astype(np.float32), tuple(feature_names(d)), "stand-in")


def test_the_submission_has_exactly_the_test_rows_each_sirna_once_and_one_group_per_plate(kaggle_root: Path) -> None:
    table = _stand_in_table()
    index = build_experiment_index(table, TARGETS[0], IndexConfig(center="center", mode="centroid"))
    test = read_test_wells(kaggle_root, TARGETS)
    sub = submission(test, kaggle_predictions([index], table, test, k=3, mode=None))
    assert sub.id_code.tolist() == test.id_code.tolist()  # exactly the test.csv rows, in order
    assert sub.id_code.iloc[0].startswith("HUVEC-01_1_")
    assert not sub.sirna.duplicated().any()  # each treatment siRNA once per experiment
    assert sub.sirna.between(0, 1107).all()  # treatments only: the labelled controls are not predicted
    groups = infer_plate_groups(
        pd.read_csv(KAGGLE / "train.csv").rename(columns={"sirna": "sirna_id"}).assign(well_type="treatment")
    )
    plate = sub.id_code.str.split("_").str[1]
    for _, ids in sub.groupby(plate).sirna:
        assert len({groups.group_of(int(s)) for s in ids}) == 1


def test_a_set_that_misses_wells_is_refused(kaggle_root: Path) -> None:
    table = _stand_in_table()
    index = build_experiment_index(table, TARGETS[0], IndexConfig(center="center", mode="centroid"))
    test = read_test_wells(kaggle_root, TARGETS)
    keep = ~((table.meta.Metadata_experiment == "HUVEC-01") & (table.meta.Metadata_well == "B03"))
    preds = kaggle_predictions([index], table.subset(keep.to_numpy()), test, k=3, mode=None)
    with pytest.raises(MetadataError, match="have no prediction"):
        submission(test, preds)
    with pytest.raises(MetadataError, match="lists no wells of RPE-09"):
        read_test_wells(kaggle_root, ("RPE-09",))
