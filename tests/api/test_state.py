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
from phenoprint.embedder.record import EmbedderRecord
from phenoprint.index.classify import classify
from phenoprint.index.experiment import ExperimentIndex
from tests.api.conftest import TARGET, Artifacts, b02_parts, onboard, train_tiny, well_of
from tests.index.conftest import rehash_manifest


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
    stats = EmbedderRecord.read(index.manifest.get("producer"), index.producer_arrays).channel_stats
    assert stats is not None
    model = load_model(run, "cpu")
    well = well_of(artifacts.source, TARGET, 0)
    sites = np.stack([artifacts.source.load(TARGET, 1, well, s) for s in (1, 2)])
    vector, _ = model.embed_sites(sites, channel_stats=stats)
    settings = Settings(model=run, indexes=indexes, device="cpu", reload_interval_s=0)
    expected = classify(index.center(vector[None, :]), index, k=3, mode=settings.classify_mode or index.config.mode)
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


@pytest.fixture(scope="module")
def adapted_index(artifacts: Artifacts, tmp_path_factory) -> Path:
    """An index onboarded with batch-norm adaptation: its producer.npz holds the experiment's BN statistics (the
    reference was embedded without it: ``allow_mismatch``, since onboarding keeps a batch in step by default)."""
    out = tmp_path_factory.mktemp("bn-adapted") / TARGET
    return onboard(
        artifacts.run,
        artifacts.source,
        TARGET,
        artifacts.reference,
        out,
        center="center",
        bn_adapt=True,
        allow_mismatch=True,
    )


def _edit_producer(folder: Path, edit) -> None:
    with np.load(folder / "producer.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    edit(arrays)
    np.savez(folder / "producer.npz", **arrays)
    rehash_manifest(folder)  # consistent files: only the check against the model can refuse them


def _first_mean(arrays: dict) -> str:
    return sorted(k for k in arrays if k.endswith(".running_mean"))[0]


BN_TAMPERING = {
    "a wrong shape": (lambda a: a.__setitem__(_first_mean(a), np.zeros(3, np.float32)), "of another shape"),
    "an extra tensor": (lambda a: a.__setitem__("extra.bn.running_mean", np.zeros(4, np.float32)), "unexpected"),
    "a missing tensor": (lambda a: a.pop(_first_mean(a)), "missing"),
}


@pytest.mark.parametrize("tamper", list(BN_TAMPERING), ids=list(BN_TAMPERING))
def test_batchnorm_statistics_that_do_not_fit_the_model_are_refused_at_load(
    artifacts: Artifacts, adapted_index: Path, tmp_path: Path, tamper: str
) -> None:
    """They used to be accepted, then every query of the experiment answered 500."""
    edit, words = BN_TAMPERING[tamper]
    indexes = tmp_path / "indexes"
    shutil.copytree(adapted_index, indexes / TARGET)
    _edit_producer(indexes / TARGET, edit)
    settings = Settings(model=artifacts.run, indexes=indexes, device="cpu", reload_interval_s=0)
    with TestClient(create_app(settings)) as client:
        listing = client.get("/experiments").json()
        assert listing["experiments"] == []
        assert "batch-norm statistics (producer.npz) do not fit the model" in listing["refused"][TARGET]
        assert words in listing["refused"][TARGET]
        r = client.post("/classify", files=b02_parts(artifacts.source), data={"experiment": TARGET})
        assert r.status_code == 404


def test_an_adapted_index_that_fits_is_served(artifacts: Artifacts, adapted_index: Path) -> None:
    settings = Settings(model=artifacts.run, indexes=adapted_index.parent, device="cpu", reload_interval_s=0)
    with TestClient(create_app(settings)) as client:
        r = client.post("/classify", files=b02_parts(artifacts.source), data={"experiment": TARGET})
        assert r.status_code == 200, r.text


@pytest.mark.slow
@pytest.mark.parametrize(("field", "value"), [("channel_mean", float("nan")), ("channel_std", -1.0)])
def test_non_finite_or_negative_input_statistics_are_refused(
    experiment_normalized, tmp_path: Path, field, value
) -> None:
    run, indexes = experiment_normalized
    copy = tmp_path / "indexes"
    shutil.copytree(indexes / TARGET, copy / TARGET)
    path = copy / TARGET / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["producer"][field][2] = value
    path.write_text(json.dumps(manifest))  # the manifest is not among the hashed files: its content is checked
    settings = Settings(model=run, indexes=copy, device="cpu", reload_interval_s=0)
    with TestClient(create_app(settings)) as client:
        refused = client.get("/experiments").json()["refused"]
        assert "input statistics hold non-finite values or a negative standard deviation" in refused[TARGET]
