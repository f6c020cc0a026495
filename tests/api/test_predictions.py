"""The prediction store: which Parquet files are predictions, which one serves an experiment, rewrites and removals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from phenoprint.api.predictions import REQUIRED_COLUMNS, PredictionStore
from phenoprint.prediction.batch import write_predictions


def frame(experiment: str, wells: tuple[str, ...] = ("B02", "C03"), sirna: int = 1) -> pd.DataFrame:
    n = len(wells)
    return pd.DataFrame(
        {
            "Metadata_experiment": experiment,
            "Metadata_plate": np.ones(n, dtype=np.int64),
            "Metadata_well": list(wells),
            "top1_sirna_id": np.full(n, sirna),
            "top1_score": np.full(n, 0.9, dtype=np.float32),
            "unknown": np.zeros(n, dtype=bool),
            "plate_group": pd.array([0] * n, dtype="Int64"),
            "plate_group_margin": np.full(n, 0.1, dtype=np.float32),
            "assigned_sirna_id": np.full(n, sirna),
            "assigned_score": np.full(n, 0.9, dtype=np.float32),
            "confidence": np.full(n, 0.3, dtype=np.float32),
            "assigned": np.ones(n, dtype=bool),
        }
    )


def test_the_columns_asked_for_are_what_predict_writes() -> None:
    from phenoprint.index.decode import BatchPrediction

    assert set(REQUIRED_COLUMNS) <= set(frame("E").columns)
    assert "similarity" in (BatchPrediction.__doc__ or "")


def test_files_are_told_apart_and_the_newer_one_serves_an_experiment(tmp_path: Path) -> None:
    write_predictions(pd.concat([frame("A-01"), frame("B-01")]), tmp_path / "old.parquet")
    os.utime(tmp_path / "old.parquet", (1_000_000, 1_000_000))
    write_predictions(frame("A-01", sirna=7), tmp_path / "new.parquet")
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "embeddings.parquet")  # not predictions: skipped quietly
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    (tmp_path / "C-01").mkdir()
    write_predictions(frame("C-01"), tmp_path / "C-01" / "predictions.parquet")
    store = PredictionStore((tmp_path,))
    assert store.refresh() == ("A-01", "B-01", "C-01")
    snap = store.snapshot()
    assert set(snap) == {"A-01", "B-01", "C-01"}
    assert int(snap["A-01"].wells.assigned_sirna_id.iloc[0]) == 7
    assert snap["B-01"].path.name == "old.parquet"
    assert list(store.refused) == [str(tmp_path / "broken.parquet")]
    assert "not a readable Parquet file" in store.refused[str(tmp_path / "broken.parquet")]
    assert store.refresh() == ()  # nothing changed: nothing re-read


def test_a_rewrite_is_picked_up_and_a_removal_drops_it(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    write_predictions(frame("A-01"), path)
    store = PredictionStore((path,))
    store.refresh()
    before = store.get("A-01")
    assert before is not None
    write_predictions(frame("A-01", wells=("B02", "C03", "D04")), path)
    assert store.refresh() == ("A-01",)
    after = store.get("A-01")
    assert after is not None
    assert len(after.wells) == 3
    path.unlink()
    path.with_suffix(".csv").unlink()
    store.refresh()
    assert store.get("A-01") is None


def test_a_well_listed_twice_refuses_the_file(tmp_path: Path) -> None:
    write_predictions(frame("A-01", wells=("B02", "b02 ")), tmp_path / "p.parquet")
    store = PredictionStore((tmp_path,))
    store.refresh()
    assert store.snapshot() == {}
    assert "listed twice" in next(iter(store.refused.values()))
