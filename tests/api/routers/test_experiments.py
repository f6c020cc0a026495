"""GET /experiments and /experiments/{experiment}: the loaded indexes and their manifests."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.api.conftest import PER_PLATE, TARGET, Artifacts


def test_the_list_summarizes_every_loaded_index(client: TestClient, artifacts: Artifacts) -> None:
    r = client.get("/experiments")
    assert r.status_code == 200
    body = r.json()
    assert [e["experiment"] for e in body["experiments"]] == [TARGET, PER_PLATE]
    assert body["refused"] == {}
    target = body["experiments"][0]
    manifest = json.loads((artifacts.indexes / TARGET / "manifest.json").read_text())
    assert target["entries"] == manifest["counts"]["entries"]
    assert target["controls"] == manifest["counts"]["controls"] == 2
    assert target["cell_type"] == "HUVEC"
    assert target["source_experiments"] == ["HUVEC-01"]
    assert target["centering"] == "center"
    assert target["per_plate"] is False
    assert body["experiments"][1]["per_plate"] is True


def test_one_experiment_carries_its_manifest(client: TestClient, artifacts: Artifacts) -> None:
    r = client.get(f"/experiments/{TARGET}")
    assert r.status_code == 200
    assert r.json()["manifest"] == json.loads((artifacts.indexes / TARGET / "manifest.json").read_text())


def test_an_unknown_experiment_is_a_404_listing_the_known_ones(client: TestClient) -> None:
    r = client.get("/experiments/HEPG2-01")
    assert r.status_code == 404
    assert r.json()["known"] == [TARGET, PER_PLATE]
