"""POST /preview: the RGB composite of one site, exactly phenoprint.data.rgb.to_rgb."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from phenoprint.data.rgb import to_rgb
from tests.api.conftest import TARGET, Artifacts, b02_parts, well_of


def test_preview_is_the_rgb_composite_of_the_site(client: TestClient, artifacts: Artifacts) -> None:
    r = client.post("/preview", files=b02_parts(artifacts.source, sites=(2,)))
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert 'filename="B02_s2_rgb.png"' in r.headers["content-disposition"]
    image = np.asarray(Image.open(io.BytesIO(r.content)))
    site = artifacts.source.load(TARGET, 1, well_of(artifacts.source, TARGET, 0), 2)
    np.testing.assert_array_equal(image, to_rgb(site))


def test_preview_contrast_is_per_image_unless_asked_for_the_rxrx1_ranges(client: TestClient, artifacts) -> None:
    site = artifacts.source.load(TARGET, 1, well_of(artifacts.source, TARGET, 0), 1)
    parts = b02_parts(artifacts.source, sites=(1,))
    fixed = np.asarray(Image.open(io.BytesIO(client.post("/preview?contrast=rxrx1", files=parts).content)))
    np.testing.assert_array_equal(fixed, to_rgb(site, contrast="rxrx1"))
    stretched = np.asarray(Image.open(io.BytesIO(client.post("/preview", files=parts).content)))
    np.testing.assert_array_equal(stretched, to_rgb(site, contrast="percentile"))
    assert not np.array_equal(fixed, stretched)
    assert client.post("/preview?contrast=auto", files=parts).status_code == 422


def test_preview_takes_one_site_only(client: TestClient, artifacts: Artifacts) -> None:
    r = client.post("/preview", files=b02_parts(artifacts.source))
    assert r.status_code == 422
    assert "at most 6" in r.json()["detail"][0]["msg"]
    r = client.post("/preview", files=b02_parts(artifacts.source, sites=(1,))[:5])
    assert r.status_code == 422
    assert "w6 missing" in r.json()["detail"][0]["msg"]
