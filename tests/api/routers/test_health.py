"""/healthz, /readyz and /metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from phenoprint import __version__
from phenoprint.api.app import create_app
from phenoprint.api.settings import Settings
from phenoprint.errors import IndexFormatError
from tests.api.conftest import PER_PLATE, TARGET, b02_parts


def test_healthz_answers_without_loading_anything(settings: Settings) -> None:
    client = TestClient(create_app(settings))  # no `with`: the lifespan has not run
    assert client.get("/healthz").json() == {
        "status": "ok",
        "version": __version__,
        "model_fingerprint": None,
        "indexes": 0,
    }
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "not_ready"
    assert client.get("/experiments").status_code == 503


def test_ready_once_the_model_and_an_index_are_loaded(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"
    assert r.json()["experiments"] == [TARGET, PER_PLATE]
    health = client.get("/healthz").json()
    assert health["version"] == __version__
    assert health["model_fingerprint"] == r.json()["model_fingerprint"]
    assert health["indexes"] == 2


def test_not_ready_without_an_index(settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "no-indexes-yet"
    empty.mkdir()  # the service waits for an index to be written there (it rescans the folder)
    with TestClient(create_app(settings.model_copy(update={"indexes": empty, "reload_interval_s": 60}))) as client:
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["model_fingerprint"]
        assert f"no index loaded from {empty}" in r.json()["reasons"][0]
        assert client.get("/healthz").status_code == 200


def test_a_missing_index_folder_stops_the_start(settings: Settings, tmp_path: Path) -> None:
    app = create_app(settings.model_copy(update={"indexes": tmp_path / "missing"}))
    with pytest.raises(IndexFormatError, match="does not exist"), TestClient(app):
        pass
    (tmp_path / "empty").mkdir()  # an empty folder that is never rescanned would never become ready
    app = create_app(settings.model_copy(update={"indexes": tmp_path / "empty"}))
    with pytest.raises(IndexFormatError, match="never rescans it"), TestClient(app):
        pass


def test_one_index_directory_is_served_alone(settings: Settings, artifacts) -> None:
    single = artifacts.indexes / TARGET
    with TestClient(create_app(settings.model_copy(update={"indexes": single}))) as client:
        r = client.get("/readyz")
        assert r.status_code == 200
        assert r.json()["experiments"] == [TARGET]  # its sibling PER_PLATE is not served
        assert client.get("/healthz").json()["indexes"] == 1


def test_metrics_count_requests_by_route_template(settings: Settings, artifacts) -> None:
    with TestClient(create_app(settings)) as client:
        client.get("/sirnas/2")
        client.get("/sirnas/3")
        client.get("/sirnas/999")
        client.get("/no/such/path")
        client.post("/classify", files=b02_parts(artifacts.source), data={"experiment": TARGET})
        text = client.get("/metrics").text
    assert 'phenoprint_http_requests_total{method="GET",route="/sirnas/{sirna_id}",status="200"} 2.0' in text
    assert 'phenoprint_http_requests_total{method="GET",route="/sirnas/{sirna_id}",status="404"} 1.0' in text
    assert 'phenoprint_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'phenoprint_http_requests_total{method="POST",route="/classify",status="200"} 1.0' in text
    assert 'phenoprint_http_request_seconds_count{route="/classify"} 1.0' in text
    assert "phenoprint_batch_wells_count 1.0" in text
    assert "phenoprint_indexes_loaded 2.0" in text
    assert 'phenoprint_index_reloads_total{result="loaded"} 2.0' in text
    assert "phenoprint_model_info{" in text
