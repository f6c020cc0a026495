"""POST /classify and /embed: answers equal the in-process pipeline; every bad input is a clear 4xx."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from phenoprint.api.app import create_app
from phenoprint.api.settings import Settings
from phenoprint.data.table import read_embeddings
from phenoprint.embedder.inference import load_model
from phenoprint.index.classify import classify
from phenoprint.index.experiment import ExperimentIndex
from tests.api.conftest import PER_PLATE, TARGET, Artifacts, b02_parts, onboard, png, well_of, well_parts


@pytest.fixture(scope="module")
def reference(artifacts: Artifacts):
    """The same model and index, used in-process: what the service must answer."""
    model = load_model(artifacts.run, "cpu")
    return model, {e: ExperimentIndex.load(artifacts.indexes / e) for e in (TARGET, PER_PLATE)}


def _expected(reference, artifacts: Artifacts, experiment: str, well: str, k: int, plates=None, sites=(1, 2)):
    model, indexes = reference
    index = indexes[experiment]
    array = np.stack([artifacts.source.load(experiment, 1, well, s) for s in sites])
    vector, _ = model.embed_sites(array, cell_type=index.cell_type)
    return classify(
        index.center(vector[None, :], plates), index, k=k, mode=Settings().classify_mode or index.config.mode
    )


@pytest.mark.parametrize("sites", [(1, 2), (2,)])
def test_classify_answers_what_the_in_process_pipeline_answers(client: TestClient, artifacts, reference, sites) -> None:
    well = well_of(artifacts.source, TARGET, 3)
    r = client.post(
        "/classify", files=well_parts(artifacts.source, TARGET, well, sites), data={"experiment": TARGET, "top_k": "3"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    expected = _expected(reference, artifacts, TARGET, well, 3, sites=sites)
    assert [p["sirna_id"] for p in body["predictions"]] == [p.sirna_id for p in expected.predictions(0)]
    assert [p["rank"] for p in body["predictions"]] == [1, 2, 3]
    np.testing.assert_allclose([p["score"] for p in body["predictions"]], expected.scores[0], atol=1e-4)
    assert body["unknown"] == bool(expected.unknown[0])
    assert body["experiment"] == TARGET
    assert body["well"] == well  # from the file names
    assert body["sites"] == list(sites)
    # the siRNA's name travels from the metadata (v1.0 `sirna`) through the embeddings and the index
    assert [p["sirna"] for p in body["predictions"]] == [f"s{p['sirna_id']}" for p in body["predictions"]]
    assert body["model_fingerprint"] == reference[0].fingerprint
    assert set(body["timings"]) == {"decode", "embed", "search", "total"}
    assert body["timings"]["total"] >= body["timings"]["embed"]


def test_classify_per_plate_index_needs_a_known_plate(client: TestClient, artifacts, reference) -> None:
    well = well_of(artifacts.source, PER_PLATE, 2)
    files = well_parts(artifacts.source, PER_PLATE, well)
    r = client.post("/classify", files=files, data={"experiment": PER_PLATE})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "plate"]
    assert "centred per plate" in r.json()["detail"][0]["msg"]
    r = client.post("/classify", files=files, data={"experiment": PER_PLATE, "plate": "3"})
    assert r.status_code == 422
    assert "no centering statistics for plate 3; send one of 1" in r.json()["detail"][0]["msg"]
    r = client.post("/classify", files=files, data={"experiment": PER_PLATE, "plate": "1", "well": "b02", "top_k": "2"})
    assert r.status_code == 200, r.text
    expected = _expected(reference, artifacts, PER_PLATE, well, 2, plates=np.array([1]))
    assert [p["sirna_id"] for p in r.json()["predictions"]] == [p.sirna_id for p in expected.predictions(0)]
    assert r.json()["plate"] == 1
    assert r.json()["well"] == "B02"  # as sent, upper case


def test_unknown_experiment_is_a_404_listing_the_known_ones(client: TestClient, artifacts) -> None:
    r = client.post("/classify", files=b02_parts(artifacts.source), data={"experiment": "U2OS-09"})
    assert r.status_code == 404
    assert r.json()["known"] == [TARGET, PER_PLATE]
    assert "unknown experiment 'U2OS-09'" in r.json()["detail"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "experiment"),
        ({"experiment": TARGET, "top_k": "0"}, "top_k"),
        ({"experiment": TARGET, "top_k": "51"}, "top_k"),
        ({"experiment": TARGET, "well": "Z99"}, "well"),
        ({"experiment": TARGET, "plate": "x"}, "plate"),
    ],
)
def test_bad_fields_are_422_naming_the_field(client: TestClient, artifacts, data, field) -> None:
    r = client.post("/classify", files=b02_parts(artifacts.source), data=data)
    assert r.status_code == 422
    assert field in [e["loc"][-1] for e in r.json()["detail"]]


def test_a_422_names_the_missing_field_without_echoing_the_upload(client: TestClient, artifacts) -> None:
    r = client.post("/classify", files=b02_parts(artifacts.source), data={"top_k": "3"})
    assert r.status_code == 422
    assert r.json() == {
        "detail": [{"loc": ["body", "experiment"], "msg": "Field required: send the form field 'experiment'",
                    "type": "missing"}]
    }  # fmt: skip
    assert len(r.content) < 300
    for internal in ("_TemporaryFileArgs", "_max_mem_size", "UploadFile", "input"):
        assert internal not in r.text


def test_no_files_is_a_422(client: TestClient) -> None:
    r = client.post("/classify", data={"experiment": TARGET})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][-1] == "files"
    assert "no files were sent; send the 6 channel PNGs" in r.json()["detail"][0]["msg"]


@pytest.mark.parametrize("path", ["/classify", "/embed", "/preview"])
def test_the_files_field_says_it_needs_at_least_one_file(client: TestClient, path: str) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    files = schema["components"]["schemas"][body.rsplit("/", 1)[-1]]["properties"]["files"]
    assert files["minItems"] == 1


def test_a_part_without_a_file_name_is_named_with_what_to_send(client: TestClient, artifacts) -> None:
    """A part without a filename reaches FastAPI as text: its message was "Expected UploadFile, received: str"."""
    r = client.post(
        "/classify", files=b02_parts(artifacts.source, sites=(1,)), data={"experiment": TARGET, "files": "x"}
    )
    assert r.status_code == 422
    (error,) = [e for e in r.json()["detail"] if e["loc"][:2] == ["body", "files"]]
    assert error["msg"].startswith("part 1 of `files` is a text field without a file name")
    assert "-F files=@B02_s1_w1.png" in error["msg"]
    assert "UploadFile" not in error["msg"]


def test_a_file_name_of_thousands_of_characters_says_what_to_send(client: TestClient, artifacts) -> None:
    """The multipart parser refuses a part header over ~4 KB; starlette answered only "Invalid multipart data."."""
    parts = b02_parts(artifacts.source, sites=(1,))
    parts = _replace(parts, 0, name="x" * 5000 + "_s1_w1.png")
    r = client.post("/classify", files=parts, data={"experiment": TARGET})
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "file name" in detail
    assert "B02_s1_w1.png" in detail
    r = client.post("/classify", files=_replace(parts, 0, name="x" * 1000 + "_s1_w1.png"), data={"experiment": TARGET})
    assert r.status_code == 422
    assert "a file name of 1,010 characters (at most 255" in r.json()["detail"][0]["msg"]


def test_a_one_pixel_well_is_refused_and_a_constant_one_embeds_to_finite_numbers(client: TestClient) -> None:
    """A 1x1 site used to give NaN (null in JSON), violating the schema; a constant site must stay finite."""
    tiny = [("files", (f"B02_s1_w{c}.png", png(np.full((1, 1), 9, dtype=np.uint8)), "image/png")) for c in range(1, 7)]
    r = client.post("/embed", files=tiny, data={"experiment": TARGET})
    assert r.status_code == 422
    assert "at least 8x8" in r.json()["detail"][0]["msg"]
    flat = [
        ("files", (f"B02_s1_w{c}.png", png(np.full((32, 32), 9, dtype=np.uint8)), "image/png")) for c in range(1, 7)
    ]
    r = client.post("/embed", files=flat, data={"experiment": TARGET})
    assert r.status_code == 200, r.text
    assert np.isfinite(r.json()["embedding"]).all()
    assert np.isfinite(r.json()["centred"]).all()
    r = client.post("/classify", files=flat, data={"experiment": TARGET})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"]
    assert np.isfinite(r.json()["best_similarity"])


def _replace(parts, i: int, name: str | None = None, data: bytes | None = None, content_type: str = "image/png"):
    parts = list(parts)
    old_name, old_data, _ = parts[i][1]
    parts[i] = ("files", (name or old_name, old_data if data is None else data, content_type))
    return parts


@pytest.mark.parametrize("path", ["/classify", "/embed"])
def test_image_problems_are_415_or_422_naming_the_file(client: TestClient, artifacts, path) -> None:
    parts = b02_parts(artifacts.source)
    data = {"experiment": TARGET}

    def post(p):
        return client.post(path, files=p, data=data)

    r = post(_replace(parts, 4, data=b"%PDF-1.7 not an image", content_type="application/pdf"))
    assert r.status_code == 415
    assert r.json()["detail"].startswith("B02_s1_w5.png: not a PNG")

    small = png(np.zeros((16, 16), dtype=np.uint8))
    cases = [
        (_replace(parts, 4, data=parts[4][1][1][:50]), "B02_s1_w5.png", "truncated"),
        (_replace(parts, 4, data=png(np.zeros((32, 32, 3), dtype=np.uint8))), "B02_s1_w5.png", "mode 'RGB'"),
        (_replace(parts, 4, name="B02_s1_w4.png"), "B02_s1_w4.png", "sent twice"),
        (parts[:5] + parts[6:], "site 1", "w6 missing"),
        ([*parts, parts[0]], "files", "13 files were sent"),
        (_replace(parts, 7, data=small), "B02_s2_w2.png", "differs from"),
        (parts[:6] + [_replace([q], 0, data=small)[0] for q in parts[6:]], "B02_s2_w1.png", "both sites"),
        (_replace(parts, 0, name="photo.png"), "photo.png", "<well>_s<site>_w<channel>.png"),
        (_replace(parts, 0, name="B02_s1_w9.png"), "B02_s1_w9.png", "w1-w6"),
    ]
    for files, source, words in cases:
        r = post(files)
        assert r.status_code == 422, (source, r.text)
        error = r.json()["detail"][0]
        assert error["loc"] == ["body", "files"]
        assert error["msg"].startswith(source), error
        assert words in error["msg"], error


def test_embed_returns_the_well_and_site_vectors_and_the_centred_one(client: TestClient, artifacts, reference) -> None:
    model, indexes = reference
    well = well_of(artifacts.source, TARGET, 1)
    r = client.post(
        "/embed", files=well_parts(artifacts.source, TARGET, well), data={"experiment": TARGET, "per_site": "true"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    array = np.stack([artifacts.source.load(TARGET, 1, well, s) for s in (1, 2)])
    vector, sites = model.embed_sites(array, cell_type="HUVEC")
    np.testing.assert_allclose(body["embedding"], vector, atol=1e-5)
    np.testing.assert_allclose([s["embedding"] for s in body["site_embeddings"]], sites, atol=1e-5)
    assert [s["site"] for s in body["site_embeddings"]] == [1, 2]
    np.testing.assert_allclose(body["centred"], indexes[TARGET].center(vector[None, :])[0], atol=1e-5)
    assert body["dim"] == 16
    assert body["well"] == well


def test_embed_without_experiment_needs_the_cell_type_of_a_cell_type_model(client: TestClient, artifacts) -> None:
    parts = b02_parts(artifacts.source)
    r = client.post("/embed", files=parts)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "cell_type"]
    assert "send `experiment` or `cell_type`" in r.json()["detail"][0]["msg"]
    r = client.post("/embed", files=parts, data={"cell_type": "HUVEC"})
    assert r.status_code == 200
    assert r.json()["centred"] is None
    assert r.json()["site_embeddings"] is None


def test_concurrent_requests_share_forward_passes_and_get_their_own_answers(settings: Settings, artifacts) -> None:
    app = create_app(settings.model_copy(update={"batch_wait_ms": 500, "max_batch_wells": 8}))
    wells = [well_of(artifacts.source, TARGET, k) for k in range(8)]

    async def run() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:

                def post(well: str):
                    return c.post(
                        "/classify", files=well_parts(artifacts.source, TARGET, well), data={"experiment": TARGET}
                    )

                alone = [await post(w) for w in wells]
                together = await asyncio.gather(*(post(w) for w in wells))
                metrics = await c.get("/metrics")
        return alone, [*together, metrics]

    alone, together = asyncio.run(run())
    metrics = together.pop().text
    for a, b in zip(alone, together, strict=True):
        assert a.status_code == b.status_code == 200
        np.testing.assert_allclose(
            [p["score"] for p in a.json()["predictions"]], [p["score"] for p in b.json()["predictions"]], atol=1e-5
        )
        assert [p["sirna_id"] for p in a.json()["predictions"]] == [p["sirna_id"] for p in b.json()["predictions"]]
    # 8 lone requests are 8 batches of one; the 8 concurrent ones fill fewer, larger batches
    count = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("phenoprint_batch_wells_count"))
    )
    one = float(
        next(
            line.split()[-1]
            for line in metrics.splitlines()
            if line.startswith('phenoprint_batch_wells_bucket{le="1.0"}')
        )
    )
    assert one >= 8
    assert count < 16


def test_wells_are_embedded_the_way_their_index_embedded_its_own(artifacts: Artifacts, tmp_path) -> None:
    """An index onboarded with batch-norm adaptation and TTA: the service embeds with that experiment's adapted
    statistics and the same transforms, so a posted well gets the vector onboarding wrote for it."""
    indexes = tmp_path / "indexes"
    queries = tmp_path / "queries.parquet"
    onboard(
        artifacts.run, artifacts.source, TARGET, artifacts.reference, indexes / TARGET,
        center="center", bn_adapt=True, tta=2, queries_out=queries, allow_mismatch=True,
    )  # fmt: skip
    table = read_embeddings(queries)
    well = well_of(artifacts.source, TARGET, 2)
    row = np.flatnonzero(table.meta["Metadata_well"].to_numpy() == well)[0]
    app = create_app(Settings(model=artifacts.run, indexes=indexes, device="cpu", reload_interval_s=0))
    with TestClient(app) as client:
        r = client.post("/embed", files=well_parts(artifacts.source, TARGET, well), data={"experiment": TARGET})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["embedding"], table.features[row], atol=1e-4)
        plain = client.post("/embed", files=well_parts(artifacts.source, TARGET, well), data={"cell_type": "HUVEC"})
        assert plain.status_code == 200
        assert not np.allclose(plain.json()["embedding"], table.features[row], atol=1e-3)  # adaptation mattered
