"""Sources of site pixels: which listed sites they can load."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from phenoprint.data.pack import PackSource, pack
from phenoprint.data.source import PngSource
from tests.embedder.conftest import FakeSource, write_root


def test_a_png_source_drops_listed_sites_whose_pngs_are_missing_and_says_so(tmp_path: Path, caplog) -> None:
    root = tmp_path / "root"
    write_root(FakeSource(), root)
    source = PngSource(root)
    meta = source.metadata
    first = meta.iloc[0]
    source.layout.site_path(first.experiment, first.plate, first.well, first.site, 3).unlink()
    with caplog.at_level(logging.WARNING):
        kept = source.with_images(meta, "left out")
    assert len(kept) == len(meta) - 1
    assert not ((kept.well == first.well) & (kept.site == first.site) & (kept.experiment == first.experiment)).any()
    assert f"1 of {len(meta)} listed sites have no images on disk and are left out" in caplog.text
    packed = PackSource(pack(root, tmp_path / "pack", workers=1, progress=False).path)
    assert len(packed.with_images(packed.metadata, "left out")) == len(meta) - 1


def test_a_complete_png_source_keeps_every_site(tmp_path: Path) -> None:
    write_root(FakeSource(), tmp_path / "root")
    source = PngSource(tmp_path / "root")
    assert source.with_images(source.metadata, "skipped").equals(source.metadata)


@pytest.mark.parametrize("option", ["backbone", "epochs"])
def test_train_config_takes_flat_options_of_both_dataclasses(option: str) -> None:
    from phenoprint.embedder.config import train_config

    config = train_config(backbone="resnet10t", epochs=3, head="cosface")
    assert (config.model.backbone, config.epochs, config.model.head) == ("resnet10t", 3, "cosface")
    with pytest.raises(ValueError, match="unknown training option"):
        train_config(**{option: None, "no_such_option": 1})
