"""/healthz, /readyz and /metrics."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from phenoprint.api.app import create_app
from phenoprint.api.settings import Settings
from tests.api.conftest import PER_PLATE, TARGET, b02_parts


def test_healthz_answers_without_loading_anything(settings: Settings) -> None:
    client = TestClient(create_app(settings))  # no `with`: the lifespan has not run
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "not_ready"
    assert client.get("/experiments").status_code == 503


def test_ready_once_the_model_and_an_index_are_loaded(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"
    assert r.json()["experiments"] == [TARGET, PER_PLATE]


def test_not_ready_without_an_index(settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "no-indexes-yet"
    with TestClient(create_app(settings.model_copy(update={"indexes": empty}))) as client:
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["model_fingerprint"]
        assert f"no index loaded from {empty}" in r.json()["reasons"][0]
        assert client.get("/healthz").status_code == 200


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
