"""to_rgb against a per-pixel re-derivation of rxrx1-utils' convert_tensor_to_rgb; previews of the real sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from phenoprint.data import RGB_MAP, load_site, to_rgb, write_previews


def _reference_pixel(values: np.ndarray, channels: tuple[int, ...]) -> list[int]:
    """One pixel, written the slow way from the published formula."""
    total = [0, 0, 0]
    for v, ch in zip(values, channels, strict=True):
        colour, (lo, hi) = RGB_MAP[ch]
        x = (float(v) / 255) / ((hi - lo) / 255) + lo / 255
        x = min(x, 1.0)
        for k in range(3):
            total[k] += int(x * colour[k])
    return [min(t, 255) for t in total]


def test_colour_map_is_the_published_one() -> None:
    assert RGB_MAP[1] == ((19, 0, 249), (0, 51))
    assert RGB_MAP[6] == ((254, 255, 40), (0, 191))


def test_to_rgb_matches_reference_on_a_real_crop(rxrx1_root: Path) -> None:
    site = load_site(rxrx1_root, "HUVEC-01", 1, "B02", 1)[:, 200:232, 300:332]
    rgb = to_rgb(site)
    assert rgb.dtype == np.uint8
    assert rgb.shape == (32, 32, 3)
    for i in range(32):
        for j in range(32):
            assert rgb[i, j].tolist() == _reference_pixel(site[:, i, j], (1, 2, 3, 4, 5, 6))


def test_to_rgb_on_a_channel_subset_and_extremes() -> None:
    rng = np.random.default_rng(0)
    site = rng.integers(0, 256, size=(2, 8, 8), dtype=np.uint8)
    site[:, 0, 0] = 255
    site[:, 0, 1] = 0
    rgb = to_rgb(site, channels=(3, 5))
    for i in range(8):
        for j in range(8):
            assert rgb[i, j].tolist() == _reference_pixel(site[:, i, j], (3, 5))
    assert rgb[0, 1].tolist() == [0, 0, 0]


def test_to_rgb_refuses_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"C=6 channels, got shape \(5, 4, 4\)"):
        to_rgb(np.zeros((5, 4, 4), dtype=np.uint8))


def test_write_previews_writes_one_png_per_site_with_images(rxrx1_root: Path, tmp_path: Path) -> None:
    written = write_previews(rxrx1_root, tmp_path, experiments=["U2OS-01"])
    assert len(written) == 8  # 4 plates x 2 sites of B02; the other listed wells have no images
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    first = np.array(Image.open(tmp_path / "U2OS-01_Plate1_B02_s1.png"))
    np.testing.assert_array_equal(first, to_rgb(load_site(rxrx1_root, "U2OS-01", 1, "B02", 1)))


def test_write_previews_refuses_unknown_experiments(rxrx1_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NOPE-01"):
        write_previews(rxrx1_root, tmp_path, experiments=["NOPE-01"])
