"""A Kaggle-style submission (``id_code,sirna``) for the ``test.csv`` wells of some experiments."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from phenoprint.atomic import atomic_path
from phenoprint.errors import MetadataError

TEST_COLUMNS = ("id_code", "experiment", "plate", "well")


def read_test_wells(root: str | Path, experiments: tuple[str, ...]) -> pd.DataFrame:
    """The rows of a Kaggle-layout root's ``test.csv`` that belong to ``experiments``.

    Raises:
        MetadataError: no ``test.csv``, a missing column, or none of the experiments in it.
    """
    path = Path(root) / "test.csv"
    if not path.is_file():
        raise MetadataError(f"{path}: no test.csv; --kaggle-submission needs a root in the Kaggle layout")
    test = pd.read_csv(path, dtype={"well": str, "experiment": str, "id_code": str})
    missing = [c for c in TEST_COLUMNS if c not in test.columns]
    if missing:
        raise MetadataError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(TEST_COLUMNS)}")
    rows = test[test.experiment.isin(experiments)].reset_index(drop=True)
    absent = sorted(set(experiments) - set(rows.experiment))
    if absent:
        raise MetadataError(f"{path} lists no wells of {', '.join(absent)}")
    rows["plate"] = rows["plate"].astype("int64")
    rows["well"] = rows["well"].str.strip().str.upper()
    return rows


def submission(test: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """``id_code,sirna`` for every test row, in ``test.csv`` order, from the jointly assigned siRNAs.

    Raises:
        MetadataError: a test well has no prediction (e.g. no embedding), so the set would miss wells.
    """
    keys = ["experiment", "plate", "well"]
    pred = predictions.rename(
        columns={"Metadata_experiment": "experiment", "Metadata_plate": "plate", "Metadata_well": "well"}
    )[[*keys, "assigned_sirna_id"]]
    merged = test.merge(pred, on=keys, how="left", validate="one_to_one")
    lost = merged["assigned_sirna_id"].isna()
    if lost.any():
        shown = ", ".join(merged.loc[lost, "id_code"].head(5))
        raise MetadataError(
            f"{int(lost.sum())} of {len(test)} test wells have no prediction (e.g. {shown}); embed every test.csv "
            "well of the experiments before writing a submission"
        )
    return pd.DataFrame({"id_code": merged["id_code"], "sirna": merged["assigned_sirna_id"].astype("int64")})


def write_submission(frame: pd.DataFrame, out: str | Path) -> Path:
    """Write the submission CSV atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False)
    return out
