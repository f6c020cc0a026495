"""The whole chain on a synthetic LoadData set (5 stains, 16-bit TIFF, 96-well plates, 4 sites per well):
synth, preview, pack, train, embed, build-index, predict, and the service's POST /classify by channel name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from phenoprint.cli import main

STAINS = ["DNA", "ER", "RNA", "AGP", "Mito"]


@pytest.mark.slow
def test_loaddata_chain(tmp_path: Path) -> None:
    data, pack, run, indexes = tmp_path / "data", tmp_path / "pack", tmp_path / "run", tmp_path / "indexes"
    q = ["--quiet"]
    synth = ["synth", "--layout", "loaddata", "--out", str(data), "--image-size", "32", "--plate-size", "96"]
    synth += ["--sites-per-well", "4", "--batches", "2", "--treatments", "12", "--positive-controls", "2"]
    assert main([*q, *synth, "--workers", "1"]) == 0
    csv = pd.read_csv(data / "load_data.csv")
    assert [c for c in csv.columns if c.startswith("FileName_")] == [f"FileName_Orig{s}" for s in STAINS]
    assert set(csv.Metadata_Site) == {1, 2, 3, 4}

    assert main([*q, "preview", str(data), "--out", str(tmp_path / "previews"), "--limit", "2"]) == 0
    assert len(list((tmp_path / "previews").glob("*.png"))) == 2
    assert main([*q, "pack", str(data), "--out", str(pack), "--workers", "1"]) == 0
    manifest = json.loads((pack / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16"
    assert manifest["channels"] == STAINS
    assert manifest["shape"] == [len(csv), 5, 32, 32]

    train = ["train", "--data", str(data), "--pack", str(pack), "--out", str(run), "--backbone", "resnet10t"]
    train += ["--image-size", "32", "--epochs", "1", "--max-steps", "3", "--batch-size", "8", "--num-classes", "15"]
    train += ["--holdout", "batch2", "--workers", "0", "--device", "cpu", "--val-every", "1"]
    assert main([*q, *train]) == 0
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["channels"] == STAINS
    assert model["in_chans"] == 5

    ref = tmp_path / "ref.parquet"
    source = ["--data", str(data), "--pack", str(pack), "--device", "cpu", "--workers", "0"]
    assert main([*q, "embed", "--model", str(run), *source, "--out", str(ref), "--experiment", "batch1"]) == 0
    onboard = ["build-index", "--model", str(run), *source, "--experiment", "batch2", "--out", str(indexes / "batch2")]
    assert main([*q, *onboard, "--reference", str(ref)]) == 0
    pred = ["predict", "--index", str(indexes), "--experiment", "batch2", "--data", str(data), "--pack", str(pack)]
    assert main([*q, *pred, "--model", str(run), "--out", str(tmp_path / "pred")]) == 0
    predictions = pd.read_csv(tmp_path / "pred.csv")
    assert len(predictions) == csv[csv.Metadata_Batch == "batch2"].Metadata_Well.nunique()

    from phenoprint.api.app import create_app
    from phenoprint.api.settings import Settings

    well = csv[(csv.Metadata_Batch == "batch2") & (csv.Metadata_control_type == "trt")].iloc[0]
    rows = csv[(csv.Metadata_Batch == "batch2") & (csv.Metadata_Well == well.Metadata_Well)]
    files = [
        (
            "files",
            (
                f"{r.Metadata_Well}_s{r.Metadata_Site}_{s}.tif",
                (data / getattr(r, f"PathName_Orig{s}") / getattr(r, f"FileName_Orig{s}")).read_bytes(),
                "image/tiff",
            ),
        )
        for r in rows.itertuples()
        for s in STAINS
    ]
    app = create_app(Settings(model=run, indexes=indexes, device="cpu", reload_interval_s=0))
    with TestClient(app) as client:
        answer = client.post("/classify", data={"experiment": "batch2", "top_k": "3"}, files=files)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["sites"] == [1, 2, 3, 4]
        assert body["well"] == well.Metadata_Well
        assert len(body["predictions"]) == 3
        # the same well as RxRx1-named PNG parts is refused, saying what this model takes
        wrong = client.post("/classify", data={"experiment": "batch2"}, files=[files[0]])
        assert wrong.status_code == 422
        assert "channel(s) ER, RNA, AGP, Mito missing" in wrong.text
    # the service answers what predict wrote for that well (same model, index and embedding recipe)
    top1 = predictions[predictions.Metadata_well == well.Metadata_Well].top1_sirna_id.iloc[0]
    assert body["predictions"][0]["sirna_id"] == int(top1)
    assert np.isfinite(body["predictions"][0]["score"])
