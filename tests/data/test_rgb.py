"""to_rgb against a per-pixel re-derivation of rxrx1-utils' convert_tensor_to_rgb, per-image contrast on the real
sample (HEPG2 is not blown out), previews and preview sheets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from phenoprint.data import RGB_MAP, load_site, to_rgb, write_previews
from phenoprint.data.rgb import PreviewPanel, write_preview_sheet
from phenoprint.errors import UnknownExperimentError


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
    rgb = to_rgb(site, contrast="rxrx1")
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
    rgb = to_rgb(site, channels=(3, 5), contrast="rxrx1")
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
    with pytest.raises(UnknownExperimentError, match="unknown experiment 'NOPE-01'; known: HEPG2-01"):
        write_previews(rxrx1_root, tmp_path, experiments=["NOPE-01"])


@pytest.mark.parametrize("experiment", ["HUVEC-01", "RPE-01", "HEPG2-01", "U2OS-01"])
def test_default_contrast_does_not_blow_out_any_cell_type(rxrx1_root: Path, experiment: str) -> None:
    """The published fixed ranges suit HUVEC; on the real HEPG2 site they saturate nearly every pixel."""
    site = load_site(rxrx1_root, experiment, 1, "B02", 1)
    saturated = (to_rgb(site) == 255).any(axis=-1).mean()
    assert saturated < 0.02
    assert to_rgb(site).mean() > 30  # stretched, not merely darkened
    if experiment == "HEPG2-01":
        assert (to_rgb(site, contrast="rxrx1") == 255).any(axis=-1).mean() > 0.5


def test_percentile_contrast_follows_its_definition() -> None:
    rng = np.random.default_rng(1)
    site = rng.integers(0, 40, size=(6, 64, 64)).astype(np.uint8)
    site[:, 20:30, 20:30] = 200  # a bright cell
    rgb = to_rgb(site)
    assert rgb[25, 25].max() == 255  # the brightest pixels reach full brightness
    assert (rgb == 255).any(axis=-1).mean() <= 0.03  # only the cell (2.4 % of the pixels) saturates
    assert rgb[5, 5].max() < 200  # the background stays dark
    dimmer = to_rgb((site // 2).astype(np.uint8))  # the same picture, half as bright: stretched alike
    assert np.abs(dimmer.astype(int) - rgb.astype(int)).mean() < 12
    with pytest.raises(ValueError, match="contrast must be one of percentile, rxrx1"):
        to_rgb(site, contrast="auto")  # type: ignore[arg-type]


def test_preview_of_an_unknown_experiment_is_one_line_and_status_2(rxrx1_root: Path, tmp_path: Path, capsys) -> None:
    from phenoprint.cli import main

    assert main(["-q", "preview", str(rxrx1_root), "--out", str(tmp_path / "p"), "--experiment", "HUVEC-99"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("phenoprint preview: error: unknown experiment 'HUVEC-99'; known: HEPG2-01")
    assert "Traceback" not in err
    assert not (tmp_path / "p").exists()


def test_a_preview_sheet_is_one_labelled_png(rxrx1_root: Path, tmp_path: Path) -> None:
    panels = [
        PreviewPanel("HUVEC-01 B02: untreated", "HUVEC-01", 1, "B02", 1),
        PreviewPanel("HEPG2-01 B02: untreated", "HEPG2-01", 1, "B02", 1),
    ]
    path = write_preview_sheet(rxrx1_root, panels, tmp_path / "sheet.png", title="two cell types")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 400
    with pytest.raises(ValueError, match="at least one site"):
        write_preview_sheet(rxrx1_root, [], tmp_path / "none.png")


def test_stain_colours_by_name_keep_rxrx1s_map() -> None:
    from phenoprint.data.rgb import RGB_MAP, channel_colours, stain_colour, to_rgb

    assert channel_colours([1, 2, 3, 4, 5, 6]) == [RGB_MAP[c][0] for c in range(1, 7)]
    assert stain_colour("DNA") == RGB_MAP[1][0]  # blue, as RxRx1's nuclei
    assert stain_colour("Hoechst") == RGB_MAP[1][0]
    assert stain_colour("ER") == RGB_MAP[2][0]
    assert stain_colour("AGP") == RGB_MAP[3][0]
    assert stain_colour("RNA") == RGB_MAP[4][0]
    assert stain_colour("Mito") == RGB_MAP[5][0]
    site = np.zeros((2, 4, 4), dtype=np.uint16)
    site[0, 0, 0] = 40000  # a 16-bit DNA spot shows blue
    rgb = to_rgb(site, channels=("DNA", "Brightfield"))
    assert rgb.shape == (4, 4, 3)
    assert rgb[0, 0, 2] > rgb[0, 0, 0]
