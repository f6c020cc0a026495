"""The LoadData layout: detection, the site table, channel files, and the errors for bad CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from phenoprint.data.images import load_site
from phenoprint.data.layout import RxRx1Layout, detect_layout, read_metadata
from phenoprint.data.loaddata import LoadDataLayout, channel_name
from phenoprint.data.pack import PackSource, pack
from phenoprint.data.source import PngSource, open_source
from phenoprint.errors import ImageFormatError, LayoutError, MetadataError

CHANNELS = ("DNA", "ER", "Mito")


def write_plate(
    root: Path,
    wells: tuple[str, ...] = ("A01", "A02", "B01", "H12"),
    sites: int = 2,
    dtype: type = np.uint16,
    size: int = 16,
) -> pd.DataFrame:
    """A small LoadData root: one TIFF per channel and site, a CSV listing them; returns the pixels written."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows, pixels = [], []
    for i, well in enumerate(wells):
        for site in range(1, sites + 1):
            row = {
                "Metadata_Batch": "b1",
                "Metadata_Plate": "PLATE_X",
                "Metadata_Well": well,
                "Metadata_Site": site,
                "Metadata_label": "DMSO" if i == 0 else f"cmpd{i}",
                "Metadata_control_type": "negcon" if i == 0 else "trt",
            }
            planes = rng.integers(0, np.iinfo(dtype).max, size=(len(CHANNELS), size, size)).astype(dtype)
            for ch, plane in zip(CHANNELS, planes, strict=True):
                name = f"{well}_s{site}_{ch}.tif"
                tifffile.imwrite(root / "img" / name, plane)
                row[f"FileName_Orig{ch}"] = name
                row[f"PathName_Orig{ch}"] = "img"
            rows.append(row)
            pixels.append({"well": well, "site": site, "pixels": planes})
    pd.DataFrame(rows).to_csv(root / "load_data.csv", index=False)
    return pd.DataFrame(pixels)


def test_detects_loaddata_and_says_why(tmp_path: Path) -> None:
    write_plate(tmp_path)
    layout = detect_layout(tmp_path)
    assert isinstance(layout, LoadDataLayout)
    assert "load_data.csv" in layout.reason
    assert "LoadData" in layout.reason
    assert layout.channels == CHANNELS  # FileName_OrigDNA -> DNA, in the CSV's order


def test_site_table_and_pixels(tmp_path: Path) -> None:
    written = write_plate(tmp_path)
    meta = read_metadata(tmp_path)
    assert len(meta) == 8
    assert set(meta.site) == {1, 2}
    assert set(meta.experiment) == {"b1"}
    assert set(meta.plate) == {1}
    assert dict(zip(meta.well, meta.well_type, strict=False))["A01"] == "negative_control"
    assert meta.sirna_id.notna().all()
    assert meta["sirna"].tolist()[0] == "DMSO"
    for r in written.itertuples():
        site = load_site(tmp_path, "b1", 1, r.well, r.site)
        assert site.dtype == np.uint16  # 16-bit kept as decoded, nothing rescaled
        np.testing.assert_array_equal(site, r.pixels)


def test_layout_override(tmp_path: Path) -> None:
    write_plate(tmp_path)
    pd.DataFrame({"experiment": ["HUVEC-01"]}).to_csv(tmp_path / "metadata.csv", index=False)
    assert isinstance(detect_layout(tmp_path), RxRx1Layout)  # metadata.csv wins the guess ...
    assert isinstance(detect_layout(tmp_path, "loaddata"), LoadDataLayout)  # ... and --layout overrides it
    with pytest.raises(LayoutError, match="--layout kaggle"):
        detect_layout(tmp_path, "kaggle")


def test_channel_name() -> None:
    assert channel_name("FileName_OrigDNA") == "DNA"
    assert channel_name("FileName_Brightfield") == "Brightfield"


def test_plate_sizes_from_well_names(tmp_path: Path) -> None:
    write_plate(tmp_path / "p96")
    assert detect_layout(tmp_path / "p96").describe()["columns"]
    write_plate(tmp_path / "p1536", wells=("A01", "AF48"), sites=1)
    meta = read_metadata(tmp_path / "p1536")
    assert set(meta.well) == {"A01", "AF48"}


def test_multipage_tiff_per_site(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    stack = np.arange(3 * 16 * 16, dtype=np.uint16).reshape(3, 16, 16)
    tifffile.imwrite(tmp_path / "img" / "A01_s1.tif", stack, photometric="minisblack")
    row = {"Metadata_Plate": "P", "Metadata_Well": "A01", "Metadata_Site": 1}
    for ch in CHANNELS:
        row |= {f"FileName_{ch}": "A01_s1.tif", f"PathName_{ch}": "img"}
    pd.DataFrame([row]).to_csv(tmp_path / "ld.csv", index=False)
    np.testing.assert_array_equal(load_site(tmp_path, "P", 1, "A01", 1), stack)


# --- bad layouts: each error names the file and the column ---


def _edit_csv(root: Path, edit) -> None:  # type: ignore[no-untyped-def]
    frame = pd.read_csv(root / "load_data.csv")
    frame = edit(frame)
    frame.to_csv(root / "load_data.csv", index=False)


def test_missing_pathname_column(tmp_path: Path) -> None:
    write_plate(tmp_path)
    _edit_csv(tmp_path, lambda f: f.drop(columns=["PathName_OrigER"]))
    with pytest.raises(MetadataError, match=r"load_data\.csv: column FileName_OrigER has no PathName_OrigER"):
        read_metadata(tmp_path)


def test_channel_missing_for_one_site(tmp_path: Path) -> None:
    write_plate(tmp_path)

    def blank(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[3, "FileName_OrigMito"] = None
        return f

    _edit_csv(tmp_path, blank)
    with pytest.raises(MetadataError, match=r"load_data\.csv line 5, column FileName_OrigMito: empty; channel Mito"):
        read_metadata(tmp_path)


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    write_plate(tmp_path)
    (tmp_path / "img" / "B01_s2_DNA.tif").unlink()
    with pytest.raises(
        LayoutError,
        match=r"load_data\.csv line \d+, columns PathName_OrigDNA / FileName_OrigDNA: .*"
        r"B01_s2_DNA\.tif does not exist",
    ):
        read_metadata(tmp_path)


def test_well_outside_the_plate_size(tmp_path: Path) -> None:
    write_plate(tmp_path, wells=("A01", "M05"), sites=1)
    (tmp_path / "layout.toml").write_text("[loaddata]\nplate_size = 96\n")
    with pytest.raises(
        MetadataError,
        match=r"load_data\.csv line 3, column Metadata_Well: well M05 lies outside a "
        r"96-well plate \(rows A-H, columns 01-12\)",
    ):
        read_metadata(tmp_path)


def test_mixed_bit_depths_in_one_channel(tmp_path: Path) -> None:
    write_plate(tmp_path)
    tifffile.imwrite(tmp_path / "img" / "B01_s1_ER.tif", np.zeros((16, 16), dtype=np.uint8))
    source = PngSource(tmp_path)
    source.load("b1", 1, "A01", 1)
    with pytest.raises(
        ImageFormatError,
        match=r"B01_s1_ER\.tif: 8-bit, but channel ER \(column FileName_OrigER\) is "
        r"16-bit in .*A01_s1_ER\.tif",
    ):
        source.load("b1", 1, "B01", 1)


def test_unknown_spec_key(tmp_path: Path) -> None:
    write_plate(tmp_path)
    (tmp_path / "layout.toml").write_text("[loaddata]\nplates = 'x'\n")
    with pytest.raises(LayoutError, match=r"layout\.toml: \[loaddata\]: unknown LoadDataSpec field\(s\) plates"):
        detect_layout(tmp_path)


# --- the pack keeps 16 bits; channels are chosen by name ---


def test_pack_keeps_16_bits_and_channel_names(tmp_path: Path) -> None:
    root = tmp_path / "root"
    written = write_plate(root)
    pack(root, tmp_path / "pack", workers=1, progress=False)
    packed = PackSource(tmp_path / "pack")
    assert packed.images.dtype == np.uint16
    assert packed.channel_names == CHANNELS
    for r in written.itertuples():
        np.testing.assert_array_equal(packed.load("b1", 1, r.well, r.site), r.pixels)


def test_channel_subset_by_name(tmp_path: Path) -> None:
    written = write_plate(tmp_path)
    source = open_source(tmp_path, channels=("Mito", "DNA"))
    assert source.channel_names == ("Mito", "DNA")
    first = written.iloc[0]
    np.testing.assert_array_equal(source.load("b1", 1, first.well, first.site), first.pixels[[2, 0]])
    with pytest.raises(ValueError, match="unknown: Brightfield"):
        open_source(tmp_path, channels=("DNA", "Brightfield"))


# --- the same pixels as the Kaggle reader, through a LoadData CSV of the real RxRx1 PNGs ---


def test_loaddata_csv_of_the_real_rxrx1_pngs_reads_as_kaggle(rxrx1_root: Path, tmp_path: Path) -> None:
    kaggle = PngSource(rxrx1_root)
    listed = kaggle.metadata
    # the sample ships images of B02 only; two cell types keep the test short
    chosen = listed[(listed.well == "B02") & listed.experiment.isin(["HUVEC-01", "HEPG2-01"])]
    sites = kaggle.with_images(chosen, "skipped")
    assert len(sites) > 0
    layout = kaggle.layout
    assert isinstance(layout, RxRx1Layout)
    rows = []
    for r in sites.itertuples():
        row = {
            "Metadata_Batch": r.experiment,
            "Metadata_Plate": r.plate,
            "Metadata_Well": r.well,
            "Metadata_Site": r.site,
        }
        for ch, name in enumerate(("nuclei", "er", "actin", "rna", "mito", "golgi"), start=1):
            path = layout.site_path(r.experiment, r.plate, r.well, r.site, ch)
            row |= {f"FileName_{name}": path.name, f"PathName_{name}": str(path.parent)}
        rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "load_data.csv", index=False)
    loaddata = PngSource(tmp_path)
    assert len(loaddata.metadata) == len(sites)
    for r in sites.itertuples():
        expected = kaggle.load(r.experiment, r.plate, r.well, r.site)
        got = loaddata.load(r.experiment, r.plate, r.well, r.site)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)
        # and both are exactly what PIL decodes
        first = layout.site_path(r.experiment, r.plate, r.well, r.site, 1)
        np.testing.assert_array_equal(got[0], np.asarray(Image.open(first)))
