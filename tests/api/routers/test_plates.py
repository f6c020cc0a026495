"""``POST /experiments/{experiment}/plates/{plate}/classify``: a plate decoded jointly, bad plates refused."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from phenoprint.index.build import ExperimentIndex
from phenoprint.index.decode import predict_experiment
from phenoprint.index.table import read_embeddings
from tests.api.conftest import TARGET, Artifacts


@pytest.fixture(scope="module")
def plate_wells(artifacts: Artifacts):
    table = read_embeddings(artifacts.reference).aggregate_sites()
    rows = table.experiment_mask(TARGET) & (table.meta.Metadata_plate == 1).to_numpy()
    return table.subset(rows)


def test_a_plate_gets_the_in_process_joint_answer(client: TestClient, artifacts: Artifacts, plate_wells) -> None:
    body = {"wells": {w: v.tolist() for w, v in zip(plate_wells.meta.Metadata_well, plate_wells.features, strict=True)}}
    r = client.post(f"/experiments/{TARGET}/plates/1/classify", json={**body, "top_k": 3})
    assert r.status_code == 200, r.text
    got = r.json()
    index = ExperimentIndex.load(artifacts.indexes / TARGET)
    meta = plate_wells.meta.copy()
    meta["Metadata_sirna_id"] = None
    from phenoprint.index.table import EmbeddingTable

    expected = predict_experiment(index, EmbeddingTable(meta, plate_wells.features, plate_wells.feature_names), k=3)
    by_well = {w["well"]: w for w in got["wells"]}
    for row in expected.wells.itertuples():
        assert by_well[row.Metadata_well]["sirna_id"] == row.assigned_sirna_id
        assert by_well[row.Metadata_well]["top_k"][0] == row.top1_sirna_id
    assert got["mode"] == index.config.mode
    assert got["centering"].startswith(index.config.center)
    assert got["used_design"] == expected.used_design
    assigned = [w["sirna_id"] for w in got["wells"] if w["assigned"]]
    assert len(assigned) == len(set(assigned))


def test_bad_plates_are_refused(client: TestClient, plate_wells) -> None:
    v = plate_wells.features[0].tolist()
    url = f"/experiments/{TARGET}/plates/1/classify"
    cases = [
        ({"wells": {"Z99": v}}, "unknown well"),
        ({"wells": {"B02": v, "b02": v}}, "more than once"),
        ({"wells": {"B02": v[:-1]}}, "dimension"),
        ({"wells": {}}, ""),
    ]
    for body, words in cases:
        r = client.post(url, json=body)
        assert r.status_code == 422, (body, r.text)
        assert words in r.text
    assert client.post("/experiments/NOPE-01/plates/1/classify", json={"wells": {"B02": v}}).status_code == 404


def test_classify_says_which_mode_and_centering_its_index_uses(client: TestClient, artifacts) -> None:
    from tests.api.conftest import b02_parts

    r = client.post("/classify", data={"experiment": TARGET}, files=b02_parts(artifacts.source))
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "centroid"
    assert r.json()["centering"] == "center"
    assert np.isfinite(r.json()["best_similarity"])
