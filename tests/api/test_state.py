"""The service state with a model trained on per-experiment input statistics: they come from the index manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from phenoprint.api.app import create_app
from phenoprint.api.settings import Settings
from phenoprint.embedder.inference import load_model
from phenoprint.embedder.onboard import channel_stats_from_manifest
from phenoprint.index.build import ExperimentIndex
from phenoprint.index.classify import classify
from tests.api.conftest import TARGET, Artifacts, b02_parts, onboard, train_tiny, well_of


@pytest.fixture(scope="module")
def experiment_normalized(artifacts: Artifacts, tmp_path_factory) -> tuple[Path, Path]:
    from phenoprint.embedder.export import export_embeddings

    base = tmp_path_factory.mktemp("experiment-normalized")
    run = train_tiny(base / "run", artifacts.source, normalization="experiment")
    reference = base / "reference.parquet"
    export_embeddings(load_model(run, "cpu"), artifacts.source, reference, progress=False)
    onboard(run, artifacts.source, TARGET, reference, base / "indexes" / TARGET, center="center")
    return run, base / "indexes"


@pytest.mark.slow
def test_per_experiment_statistics_come_from_the_index_manifest(experiment_normalized, artifacts: Artifacts) -> None:
    run, indexes = experiment_normalized
    index = ExperimentIndex.load(indexes / TARGET)
    stats = channel_stats_from_manifest(index.manifest)
    assert stats is not None
    model = load_model(run, "cpu")
    well = well_of(artifacts.source, TARGET, 0)
    sites = np.stack([artifacts.source.load(TARGET, 1, well, s) for s in (1, 2)])
    vector, _ = model.embed_sites(sites, channel_stats=stats)
    settings = Settings(model=run, indexes=indexes, device="cpu", reload_interval_s=0)
    expected = classify(index.center(vector[None, :]), index, k=3, mode=settings.classify_mode)
    with TestClient(create_app(settings)) as client:
        r = client.post("/classify", files=b02_parts(artifacts.source), data={"experiment": TARGET, "top_k": "3"})
        assert r.status_code == 200, r.text
        assert [p["sirna_id"] for p in r.json()["predictions"]] == [p.sirna_id for p in expected.predictions(0)]
        r = client.post("/embed", files=b02_parts(artifacts.source))
        assert r.status_code == 422
        assert "per-experiment statistics: send `experiment`" in r.json()["detail"][0]["msg"]
        r = client.post("/embed", files=b02_parts(artifacts.source), data={"experiment": TARGET})
        np.testing.assert_allclose(r.json()["embedding"], vector, atol=1e-5)


@pytest.mark.parametrize("tta", [9, "8", True])
def test_an_index_with_an_impossible_tta_is_refused_not_served(artifacts: Artifacts, tmp_path: Path, tta) -> None:
    indexes = tmp_path / "indexes"
    shutil.copytree(artifacts.indexes / TARGET, indexes / TARGET)
    manifest_path = indexes / TARGET / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["producer"]["tta"] = tta
    manifest_path.write_text(json.dumps(manifest))
    settings = Settings(model=artifacts.run, indexes=indexes, device="cpu", reload_interval_s=0)
    with TestClient(create_app(settings)) as client:
        listing = client.get("/experiments").json()
        assert listing["experiments"] == []
        assert f"tta={tta!r}; expected 1-8" in listing["refused"][TARGET]
        r = client.post("/classify", files=b02_parts(artifacts.source), data={"experiment": TARGET})
        assert r.status_code == 404
