"""The packed store: pixel-identical to the PNGs, box-filtered resizing, atomic and resumable packing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import phenoprint.data.pack as packmod
from phenoprint.cli import main
from phenoprint.data import load_site, read_metadata
from phenoprint.data.pack import PackSource, pack, resize_site
from phenoprint.data.source import PngSource, SiteSource, open_source
from phenoprint.data.synth import preset_config, synthesize
from phenoprint.errors import ImageFormatError, LayoutError

KEY = ["experiment", "plate", "well", "site"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack") / "tiny"
    synthesize(preset_config("tiny", seed=2), out, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_pack(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack") / "tiny.pack"
    assert main(["-q", "pack", str(tiny_root), "--out", str(out), "--workers", "1"]) == 0
    return out


def test_pack_round_trips_the_pngs(tiny_root: Path, tiny_pack: Path) -> None:
    source = PackSource(tiny_pack)
    assert isinstance(source, SiteSource)
    meta = read_metadata(tiny_root)
    assert source.metadata.equals(meta)
    assert source.metadata["sirna"].notna().all()  # the siRNA names of the v1.0 metadata travel with the pack
    assert source.images.shape == (len(meta), 6, 64, 64)
    for key in meta[KEY].itertuples(index=False):
        np.testing.assert_array_equal(source.load(*key), load_site(tiny_root, *key))
    rows = np.array([5, 0, 17, 5])
    batch = source.load_rows(rows)
    for i, r in enumerate(rows):
        np.testing.assert_array_equal(batch[i], load_site(tiny_root, *meta.loc[r, KEY]))
    manifest = json.loads((tiny_pack / "manifest.json").read_text())
    assert (manifest["shape"], manifest["dtype"], manifest["size"]) == ([len(meta), 6, 64, 64], "uint8", None)
    assert manifest["source_root"] == str(tiny_root)
    assert not (tiny_pack / "build.json").exists()
    assert isinstance(open_source(tiny_root, pack=tiny_pack), PackSource)


def test_pack_of_the_real_sample_is_pixel_identical(rxrx1_root: Path, tmp_path: Path) -> None:
    result = pack(rxrx1_root, tmp_path / "real", workers=1, progress=False)
    assert result.n_sites == 32  # B02 of 4 experiments x 4 plates x 2 sites: only these have images
    assert result.n_missing == len(read_metadata(rxrx1_root)) - 32
    packed, png = PackSource(tmp_path / "real"), PngSource(rxrx1_root)
    for key in packed.metadata[KEY].itertuples(index=False):
        np.testing.assert_array_equal(packed.load(*key), png.load(*key))


def test_size_resizes_with_an_area_filter(tiny_root: Path, tmp_path: Path) -> None:
    pack(tiny_root, tmp_path / "p32", size=32, workers=1, progress=False)
    source = PackSource(tmp_path / "p32")
    assert source.images.shape[1:] == (6, 32, 32)
    assert source.image_size == (32, 32)
    key = tuple(source.metadata.loc[3, KEY])
    original = load_site(tiny_root, *key).astype(float)
    block_mean = original.reshape(6, 32, 2, 32, 2).mean(axis=(2, 4))
    assert np.abs(source.load(*key) - block_mean).max() <= 0.5 + 1e-9  # the 2x2 average, rounded


def test_resize_site_keeps_same_size_and_dtype() -> None:
    x = np.random.default_rng(0).integers(0, 255, (6, 12, 12), dtype=np.uint8)
    assert resize_site(x, 12) is x
    assert resize_site(x, 5).shape == (6, 5, 5)
    assert resize_site(x, 5).dtype == np.uint8


def test_interrupted_pack_is_refused_then_resumed(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = packmod.load_site

    def failing(*args: Any, **kwargs: Any) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] > 100:
            raise ImageFormatError("B02_s1_w1.png", "truncated or corrupt PNG (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(packmod, "load_site", failing)
    out = tmp_path / "cut"
    with pytest.raises(ImageFormatError, match="simulated"):
        pack(tiny_root, out, workers=1, chunk=32, progress=False)
    assert not (out / "manifest.json").exists()
    with pytest.raises(LayoutError, match="incomplete pack"):
        PackSource(out)
    with pytest.raises(LayoutError, match="another source or size"):
        pack(tiny_root, out, size=32, workers=1, progress=False)

    monkeypatch.setattr(packmod, "load_site", real)
    result = pack(tiny_root, out, workers=1, chunk=32, progress=False)
    assert result.n_resumed == 96  # three chunks of 32 were flushed and flagged before the failure
    assert result.n_decoded == result.n_sites - 96
    source = PackSource(out)
    for key in source.metadata[KEY].itertuples(index=False):
        np.testing.assert_array_equal(source.load(*key), load_site(tiny_root, *key))


def test_a_kill_during_the_last_progress_save_leaves_no_temporary(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row done, then killed before the manifest: the rerun writes no more progress, so no later save of
    done.npy would remove the temporary the kill left; the completion does."""
    import os

    real = packmod.write_json_atomic

    def killed_before_the_manifest(data: Any, path: Any) -> Any:
        if Path(path).name == "manifest.json":
            raise KeyboardInterrupt
        return real(data, path)

    monkeypatch.setattr(packmod, "write_json_atomic", killed_before_the_manifest)
    out = tmp_path / "p"
    with pytest.raises(KeyboardInterrupt):
        pack(tiny_root, out, workers=1, progress=False)
    monkeypatch.undo()
    leftover = out / ".done.npy.k2j4h5g6.tmp"
    leftover.write_bytes(b"half of a save")
    os.utime(leftover, (1e9, 1e9))
    assert pack(tiny_root, out, workers=1, progress=False).n_decoded == 0
    assert sorted(p.name for p in out.iterdir()) == ["images.npy", "index.parquet", "manifest.json"]


def test_parallel_pack_equals_serial(tiny_root: Path, tiny_pack: Path, tmp_path: Path) -> None:
    pack(tiny_root, tmp_path / "par", workers=2, chunk=64, progress=False)
    np.testing.assert_array_equal(PackSource(tmp_path / "par").images, PackSource(tiny_pack).images)


def test_rerun_of_a_complete_pack_does_nothing(tiny_root: Path, tiny_pack: Path) -> None:
    before = (tiny_pack / "manifest.json").read_bytes()
    result = pack(tiny_root, tiny_pack, workers=1, progress=False)
    assert (result.n_decoded, result.n_resumed) == (0, result.n_sites)
    assert (tiny_pack / "manifest.json").read_bytes() == before


def test_refusals(tiny_root: Path, tiny_pack: Path, tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="not a phenoprint pack"):
        PackSource(tmp_path)
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(LayoutError, match="not a phenoprint pack"):
        pack(tiny_root, tmp_path, workers=1)
    with pytest.raises(ValueError, match="size"):
        pack(tiny_root, tmp_path / "s", size=2)
    source = PackSource(tiny_pack)
    with pytest.raises(ImageFormatError, match="not in this pack"):
        source.load("HUVEC-01", 1, "A01", 1)
    with pytest.raises(ValueError, match="rows must be in"):
        source.load_rows([len(source)])


def test_cli_pack_with_size(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pack", str(tiny_root), "--out", str(tmp_path / "p"), "--size", "16", "--workers", "1"]) == 0
    assert "packed 256 sites" in capsys.readouterr().out
    assert PackSource(tmp_path / "p").images.shape == (256, 6, 16, 16)
    assert main(["pack", str(tiny_root), "--out", str(tmp_path / "p"), "--size", "8", "--workers", "1"]) == 2
    assert "another source or size" in capsys.readouterr().err
