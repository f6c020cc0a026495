"""``GET /experiments/{experiment}/predictions`` (predict's output as served), the composite of a served well, the
UI's files and the offline API docs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from phenoprint.api.app import create_app
from phenoprint.api.settings import Settings
from phenoprint.api.ui import CONTENT_SECURITY_POLICY, REDOC_REMOTE_LOGO
from phenoprint.data.table import read_embeddings
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.prediction.batch import predict_tables, write_predictions
from tests.api.conftest import PER_PLATE, TARGET, Artifacts


@pytest.fixture(scope="module")
def predictions(artifacts: Artifacts) -> pd.DataFrame:
    """``phenoprint predict``'s answer for TARGET alone (PER_PLATE has none)."""
    index = ExperimentIndex.load(artifacts.indexes / TARGET)
    return predict_tables([index], read_embeddings(artifacts.reference), k=4).wells


@pytest.fixture(scope="module")
def served(artifacts: Artifacts, predictions: pd.DataFrame, tmp_path_factory) -> Iterator[TestClient]:
    """The app serving the predictions from a folder of their own, and FakeSource as its --data root."""
    folder = tmp_path_factory.mktemp("predictions")
    write_predictions(predictions, folder / "batch.parquet")
    (folder / "not-predictions.parquet").write_bytes((artifacts.reference).read_bytes())  # skipped: no such columns
    settings = Settings(model=artifacts.run, indexes=artifacts.indexes, device="cpu", reload_interval_s=0)
    with TestClient(create_app(settings.model_copy(update={"predictions": folder}))) as c:
        c.app.state.service.images = artifacts.source  # type: ignore[attr-defined]  # FakeSource: a --data root
        yield c


def test_every_predicted_well_is_served_with_its_kind_and_label(served: TestClient, predictions, artifacts) -> None:
    r = served.get(f"/experiments/{TARGET}/predictions")
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["rows"], got["columns"], got["k"], got["source"]) == (16, 24, 4, "batch.parquet")
    assert len(got["wells"]) == len(predictions)
    by_key = {(int(r.Metadata_plate), r.Metadata_well): r for r in predictions.itertuples()}
    index = ExperimentIndex.load(artifacts.indexes / TARGET)
    own = index.entries[index.entries.experiment == TARGET]
    controls = {(int(p), w): t for p, w, t in zip(own.plate, own.well, own.well_type, strict=True)}
    assert controls
    for w in got["wells"]:
        row = by_key[(w["plate"], w["well"])]
        assert w["sirna_id"] == row.assigned_sirna_id
        assert [c["sirna_id"] for c in w["top_k"]] == [getattr(row, f"top{i}_sirna_id") for i in range(1, 5)]
        assert w["top_k"][0]["score"] == pytest.approx(row.top1_score)
        assert w["unknown"] == bool(row.unknown)
        assert w["similarity"] == pytest.approx(row.similarity)
        assert w["well_type"] == controls.get((w["plate"], w["well"]))
        assert (w["row"], w["column"]) == ("ABCDEFGHIJKLMNOP".index(w["well"][0]), int(w["well"][1:]) - 1)
        truth = None if pd.isna(row.true_sirna_id) else int(row.true_sirna_id)
        assert w["true_sirna_id"] == truth
        assert w["correct"] == (None if truth is None else truth == row.assigned_sirna_id)
    plates = {p["plate"]: p for p in got["plates"]}
    assert sum(p["wells"] for p in plates.values()) == len(predictions)
    assert got["labelled"]
    listing = served.get("/experiments").json()["experiments"]
    assert {e["experiment"]: e["predicted_wells"] for e in listing} == {TARGET: len(predictions), PER_PLATE: None}


def test_one_plate_and_bad_requests(served: TestClient, predictions) -> None:
    one = served.get(f"/experiments/{TARGET}/predictions", params={"plate": 1}).json()
    assert {w["plate"] for w in one["wells"]} == {1}
    assert len(one["wells"]) == int((predictions.Metadata_plate == 1).sum())
    assert [p["plate"] for p in one["plates"]] == [1]
    for params, status, words in [
        ({"plate": 99}, 404, "no plate 99"),
        ({"plate": "one"}, 422, "integer"),
        ({"plate": 0}, 422, "greater than or equal to 1"),
    ]:
        r = served.get(f"/experiments/{TARGET}/predictions", params=params)
        assert r.status_code == status, r.text
        assert words in r.text
    r = served.get(f"/experiments/{PER_PLATE}/predictions")
    assert r.status_code == 404
    assert "phenoprint predict" in r.json()["detail"]
    assert served.get("/experiments/NOPE-01/predictions").status_code == 404


def test_a_served_wells_composite_comes_from_the_data_root_by_name(served: TestClient, artifacts) -> None:
    well = served.get(f"/experiments/{TARGET}/predictions").json()["wells"][0]
    url = f"/experiments/{TARGET}/plates/{well['plate']}/wells/{well['well']}/composite"
    r = served.get(url, params={"site": 1})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")
    assert served.get(url, params={"site": 9}).status_code == 404
    assert served.get(f"/experiments/{TARGET}/plates/1/wells/..%2F..%2Fetc/composite").status_code in (404, 422)
    assert served.get(f"/experiments/{TARGET}/plates/1/wells/B2x/composite").status_code == 422


def test_no_data_root_means_no_composites(client: TestClient) -> None:
    r = client.get(f"/experiments/{TARGET}/plates/1/wells/B02/composite")
    assert r.status_code == 404
    assert "--data" in r.json()["detail"]


def test_predictions_next_to_the_indexes_are_found_and_reloaded(artifacts: Artifacts, predictions, tmp_path) -> None:
    indexes = tmp_path / "indexes"
    indexes.mkdir()
    for name in (TARGET, PER_PLATE):
        os.symlink(artifacts.indexes / name, indexes / name, target_is_directory=True)
    settings = Settings(model=artifacts.run, indexes=indexes, device="cpu", reload_interval_s=0)
    with TestClient(create_app(settings)) as c:
        assert c.get(f"/experiments/{TARGET}/predictions").status_code == 404
        write_predictions(predictions, indexes / "predictions.parquet")
        c.app.state.service.refresh_indexes()  # type: ignore[attr-defined]  # what the reloader does
        assert len(c.get(f"/experiments/{TARGET}/predictions").json()["wells"]) == len(predictions)
        (indexes / "predictions.parquet").unlink()
        c.app.state.service.refresh_indexes()  # type: ignore[attr-defined]
        assert c.get(f"/experiments/{TARGET}/predictions").status_code == 404


def test_the_ui_and_the_docs_are_served_from_the_package(client: TestClient) -> None:
    page = client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    for asset in ("app.js", "app.css"):
        assert f'"{asset}"' in page.text
        assert client.get(f"/ui/{asset}").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui/"
    for path, assets in (
        ("/docs", ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css")),
        ("/redoc", ("/docs-assets/redoc.standalone.js",)),
    ):
        html = client.get(path).text
        assert "cdn." not in html
        assert "fonts.googleapis" not in html
        for asset in assets:
            assert asset in html
            r = client.get(asset)
            assert r.status_code == 200
            assert len(r.content) > 100_000
            assert REDOC_REMOTE_LOGO not in r.content
    assert '"validatorUrl": null' in client.get("/docs").text


def test_with_a_key_the_pages_load_and_their_data_calls_get_the_apis_401(settings: Settings, tmp_path: Path) -> None:
    with TestClient(create_app(settings.model_copy(update={"api_key": SecretStr("k")}))) as c:
        assert c.get("/ui/").status_code == 200  # the page itself holds no data: it asks for the key
        plain = c.get("/experiments")
        page_call = c.get(f"/experiments/{TARGET}/predictions")
        assert plain.status_code == page_call.status_code == 401
        assert page_call.json()["detail"] == plain.json()["detail"]
        assert page_call.headers["www-authenticate"] == "ApiKey"
        assert c.get(f"/experiments/{TARGET}/plates/1/wells/B02/composite").status_code == 401
        assert c.get(f"/experiments/{TARGET}/predictions", headers={"X-API-Key": "k"}).status_code == 404
