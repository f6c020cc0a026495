"""``POST /experiments/{experiment}/plates/{plate}/classify``: a plate decoded jointly, bad plates refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from phenoprint.data.table import EmbeddingTable, feature_names, read_embeddings
from phenoprint.index.decode import predict_experiment
from phenoprint.index.experiment import ExperimentIndex
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


def _parquet(table: EmbeddingTable) -> bytes:
    import tempfile
    from pathlib import Path

    from phenoprint.data.table import write_embeddings

    with tempfile.TemporaryDirectory() as tmp:
        return write_embeddings(table, Path(tmp) / "t.parquet").read_bytes()


def test_a_parquet_embedding_table_gets_the_same_answer_as_json(
    client: TestClient, artifacts: Artifacts, plate_wells
) -> None:
    """The batch's whole table (sites, every experiment) as `phenoprint embed` writes it: the plate's rows decoded."""
    url = f"/experiments/{TARGET}/plates/1/classify"
    files = {"table": ("batch.parquet", artifacts.reference.read_bytes(), "application/vnd.apache.parquet")}
    r = client.post(url, files=files, data={"top_k": "3"})
    assert r.status_code == 200, r.text
    body = {"wells": {w: v.tolist() for w, v in zip(plate_wells.meta.Metadata_well, plate_wells.features, strict=True)}}
    expected = client.post(url, json={**body, "top_k": 3})
    assert expected.status_code == 200, expected.text
    got, want = r.json(), expected.json()
    assert {k: v for k, v in got.items() if k != "wells"} == {k: v for k, v in want.items() if k != "wells"}
    by_well = {w["well"]: w for w in want["wells"]}
    for w in got["wells"]:
        exact = ("sirna_id", "sirna", "assigned", "unknown", "top_k")
        assert {k: w[k] for k in exact} == {k: by_well[w["well"]][k] for k in exact}
        assert w["score"] == pytest.approx(by_well[w["well"]]["score"], abs=1e-5)
    assert len(got["wells"]) == len(plate_wells)


def test_bad_parquet_uploads_are_refused_with_a_4xx(client: TestClient, artifacts: Artifacts) -> None:
    table = read_embeddings(artifacts.reference)
    narrow = EmbeddingTable(table.meta, table.features[:, :-1], tuple(feature_names(table.dim - 1)), table.fingerprint)
    foreign = EmbeddingTable(table.meta, table.features, table.feature_names, "f" * 64)
    twice = table.subset(table.experiment_mask(TARGET))
    twice = EmbeddingTable(
        pd.concat([twice.meta, twice.meta], ignore_index=True),
        np.concatenate([twice.features, twice.features]),
        twice.feature_names,
        twice.fingerprint,
    )
    first = int(np.flatnonzero(table.experiment_mask(TARGET))[0])
    renamed = table.meta.iloc[[first]].copy()
    renamed["Metadata_well"] = "Z99"
    unknown = EmbeddingTable(renamed, table.features[[first]], table.feature_names, table.fingerprint)
    elsewhere = table.subset(~table.experiment_mask(TARGET))
    url = f"/experiments/{TARGET}/plates/1/classify"
    cases = {
        "not parquet": (b"PAR1 not really", {}, "not a readable Parquet file"),
        "wrong dimension": (_parquet(narrow), {}, f"dimension {table.dim - 1}; expected embeddings of dimension"),
        "another model": (_parquet(foreign), {}, "the table comes from model ffffffffffffffff"),
        "listed twice": (_parquet(twice), {}, "listed more than once"),
        "unknown well": (_parquet(unknown), {}, "unknown well(s) Z99"),
        "no wells of the plate": (_parquet(elsewhere), {}, f"the table holds no wells of {TARGET} plate 1"),
        "bad top_k": (artifacts.reference.read_bytes(), {"top_k": "zero"}, "expected an integer from 1 to 50"),
    }
    for name, (data, fields, words) in cases.items():
        r = client.post(url, files={"table": ("t.parquet", data, "application/octet-stream")}, data=fields)
        assert r.status_code == 422, (name, r.text)
        assert words in r.text, (name, r.text)
    r = client.post(url, files={"other": ("t.parquet", b"x", "application/octet-stream")})
    assert r.status_code == 422
    assert "multipart field `table`" in r.text
    r = client.post(url, content=b"B02,0.1", headers={"content-type": "text/csv"})
    assert r.status_code == 415
    assert "application/json or multipart/form-data" in r.text
    r = client.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_the_plate_endpoint_documents_both_body_forms(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"]["/experiments/{experiment}/plates/{plate}/classify"]["post"]
    content = op["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert content["multipart/form-data"]["schema"]["properties"]["table"]["format"] == "binary"
    assert {"404", "415", "422", "503"} <= set(op["responses"])
