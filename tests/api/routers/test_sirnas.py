"""GET /sirnas/{sirna_id}: kind from the wells' type, locations from the entries, neighbours from centroids."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from phenoprint.index.classify import similar_sirnas
from phenoprint.index.experiment import ExperimentIndex
from tests.api.conftest import PER_PLATE, TARGET, Artifacts

CONTROL = 7  # FakeSource: ids 6 and 7 are positive controls, 0-5 treatments


def test_a_control_is_found_in_every_experiment_with_its_neighbours(client: TestClient, artifacts: Artifacts) -> None:
    r = client.get(f"/sirnas/{CONTROL}", params={"k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "positive_control"
    meta = artifacts.source.metadata
    wells = meta[meta.sirna_id == CONTROL].drop_duplicates(["experiment", "well"])
    assert [(x["experiment"], x["plate"], x["well"]) for x in body["locations"]] == [
        (r.experiment, int(r.plate), r.well) for r in wells.itertuples()
    ]
    assert body["experiments"] == [TARGET, PER_PLATE]
    index = ExperimentIndex.load(artifacts.indexes / body["similar_in"])
    expected = similar_sirnas(index, CONTROL, 3)
    assert [(s["sirna_id"], s["rank"]) for s in body["similar"]] == [(p.sirna_id, p.rank) for p in expected]
    assert [s["score"] for s in body["similar"]] == pytest.approx([p.score for p in expected], abs=1e-6)
    kinds = {s["sirna_id"]: s["kind"] for s in body["similar"]}
    assert all(kinds[i] == ("positive_control" if i >= 6 else "treatment") for i in kinds)


def test_a_treatment_and_the_choice_of_index(client: TestClient) -> None:
    body = client.get("/sirnas/2", params={"experiment": TARGET}).json()
    assert body["kind"] == "treatment"
    assert body["similar_in"] == TARGET
    # indexes hold other experiments' labelled wells and their own controls: RPE-01's treatments are in none
    assert {x["experiment"] for x in body["locations"]} == {"HUVEC-01", "HUVEC-02"}


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        ("/sirnas/999", {}, 404, "no loaded index holds siRNA 999"),
        ("/sirnas/2", {"experiment": "U2OS-01"}, 404, "unknown experiment"),
        ("/sirnas/abc", {}, 422, ""),
        ("/sirnas/-1", {}, 422, ""),
        ("/sirnas/2", {"k": 0}, 422, ""),
    ],
)
def test_lookups_that_cannot_be_answered(client: TestClient, path, params, status, words) -> None:
    r = client.get(path, params=params)
    assert r.status_code == status
    assert words in str(r.json()["detail"])
