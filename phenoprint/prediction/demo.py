"""The demo's batch answer: `predict` on each held-out experiment, scored against the withheld labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from phenoprint.data.table import EmbeddingTable
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.prediction.batch import kaggle_predictions, predict_tables, write_predictions
from phenoprint.prediction.kaggle import write_submission


@dataclass(frozen=True)
class HeldOutPrediction:
    """What `predict` answered for the held-out batches and how right it was on their treatment wells.

    Attributes:
        per_well_top1: top-1 of each treatment well on its own.
        assigned_top1: top-1 of the joint answer (every well of the batch, controls included, decoded together).
        submission_top1: top-1 of the Kaggle-style answer (treatment wells only, assigned among their plate's group).
        wells: treatment wells scored.
        choices: experiment → the centering and mode its index recorded.
        paths: predictions (Parquet, CSV) and the submission.
    """

    per_well_top1: float
    assigned_top1: float
    submission_top1: float
    wells: int
    choices: dict[str, str]
    paths: list[Path]


def predict_heldout(
    index_dirs: dict[str, Path], queries: EmbeddingTable, truth: pd.Series, out_dir: Path
) -> HeldOutPrediction:
    """Run `predict` on each held-out experiment's own embedding table (treatment labels withheld), write the
    predictions and a Kaggle-style submission, and score both against ``truth`` ((experiment, plate, well) → siRNA).
    """
    indexes = [ExperimentIndex.load(p) for p in index_dirs.values()]
    run = predict_tables(indexes, queries)
    paths = list(write_predictions(run.wells, out_dir / "predictions.parquet"))
    w = run.wells
    key = pd.MultiIndex.from_frame(w[["Metadata_experiment", "Metadata_plate", "Metadata_well"]])
    y = truth.reindex(key).to_numpy()
    meta = queries.meta
    treatment = (
        meta.set_index(["Metadata_experiment", "Metadata_plate", "Metadata_well"])["Metadata_well_type"]
        .reindex(key)
        .eq("treatment")
        .to_numpy()
    )
    test = w.loc[treatment, ["Metadata_experiment", "Metadata_plate", "Metadata_well"]].set_axis(
        ["experiment", "plate", "well"], axis=1
    )
    test.insert(0, "id_code", test.experiment + "_" + test.plate.astype(str) + "_" + test.well)
    sub_wells = kaggle_predictions(indexes, queries, test, k=5, mode=None)
    sub_key = pd.MultiIndex.from_frame(sub_wells[["Metadata_experiment", "Metadata_plate", "Metadata_well"]])
    sub_right = sub_wells["assigned_sirna_id"].to_numpy() == truth.reindex(sub_key).to_numpy()
    submission = pd.DataFrame({"id_code": test.id_code.to_numpy()})
    ids = dict(
        zip(
            sub_wells.Metadata_experiment + "_" + sub_wells.Metadata_plate.astype(str) + "_" + sub_wells.Metadata_well,
            sub_wells.assigned_sirna_id,
            strict=True,
        )
    )
    submission["sirna"] = submission.id_code.map(ids).astype("int64")
    paths.append(write_submission(submission, out_dir / "submission.csv"))
    yt = y[treatment].astype(np.int64)
    choices = {
        ix.experiment: f"{ix.config.center}{' per plate' if ix.config.per_plate else ''} + {ix.config.mode}"
        for ix in indexes
    }
    return HeldOutPrediction(
        float(np.mean(w.loc[treatment, "top1_sirna_id"].to_numpy() == yt)),
        float(np.mean(w.loc[treatment, "assigned_sirna_id"].to_numpy() == yt)),
        float(np.mean(sub_right)),
        int(treatment.sum()),
        choices,
        paths,
    )
