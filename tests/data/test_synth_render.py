"""Rendering: cells, not noise; deterministic per site; the oracle twin keeps the cells; phenotypes show."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from phenoprint.data.synth import (
    CELL_TYPE_MODELS,
    NEUTRAL,
    Phenotype,
    SiteKey,
    pixel_scale,
    render_site,
    site_conditions,
)
from phenoprint.data.synth.biology import NULL

KEY = SiteKey(0, "HUVEC-01", 1, "D05", 1)


def _render(key: SiteKey = KEY, biology: Phenotype = NULL, batch: bool = True, size: int = 128) -> np.ndarray:
    conditions = site_conditions(key.seed, key.experiment, key.plate, key.well, key.site, batch_effects=batch)
    return render_site(key, size, CELL_TYPE_MODELS[key.experiment.split("-")[0]], biology, conditions)


def _nuclei(site: np.ndarray) -> tuple[np.ndarray, int]:
    w1 = ndimage.gaussian_filter(site[0].astype(float), 1.0)
    mask = w1 > (w1.min() + w1.max()) / 3
    return mask, int(ndimage.label(mask)[1])


@pytest.mark.parametrize("cell_type", ["HUVEC", "RPE", "HEPG2", "U2OS"])
def test_sites_hold_separate_nuclei(cell_type: str) -> None:
    site = _render(SiteKey(0, f"{cell_type}-01", 1, "D05", 1))
    assert site.shape == (6, 128, 128)
    assert site.dtype == np.uint8
    mask, n = _nuclei(site)
    assert 5 <= n <= 150
    assert 0.03 < mask.mean() < 0.6
    # nuclear stain sits in the nuclei; ER surrounds them
    assert site[0][mask].mean() > 2 * site[0][~mask].mean()


def test_render_is_deterministic_per_site() -> None:
    np.testing.assert_array_equal(_render(), _render())
    assert not np.array_equal(_render(), _render(SiteKey(0, "HUVEC-01", 1, "D05", 2)))


def test_oracle_twin_keeps_the_cells() -> None:
    with_batch, without = _render(batch=True), _render(batch=False)
    assert not np.array_equal(with_batch, without)
    twin = np.corrcoef(with_batch[0].ravel(), without[0].ravel())[0, 1]
    other = np.corrcoef(with_batch[0].ravel(), _render(SiteKey(0, "HUVEC-01", 1, "D06", 1), batch=False)[0].ravel())
    assert twin > 0.6
    assert abs(other[0, 1]) < 0.3


def test_bigger_nuclei_phenotype_shows_in_the_nuclear_channel() -> None:
    areas = {}
    for label, biology in (("null", NULL), ("big", Phenotype(nucleus_size=0.3))):
        areas[label] = np.mean(
            [_nuclei(_render(SiteKey(0, "RPE-01", 1, "D05", s), biology, batch=False))[0].mean() for s in (1, 2)]
        )
    assert areas["big"] > 1.4 * areas["null"]


def test_brighter_golgi_phenotype_shows_in_w6() -> None:
    def golgi(site: np.ndarray) -> float:  # the bright Golgi pieces, above a background that dominates the mean
        return float(np.percentile(site[5], 99))

    assert golgi(_render(biology=Phenotype(golgi=0.5), batch=False)) > 1.2 * golgi(_render(batch=False))


def test_pixel_scale() -> None:
    assert pixel_scale(512) == 1.0
    assert pixel_scale(128) == 0.5
    assert NEUTRAL.density == 0.0
