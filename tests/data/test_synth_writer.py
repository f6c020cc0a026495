"""Writing a synthetic data root: the v1.0 layout, same bytes for a seed, resumable, refuses foreign folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import phenoprint.data.synth.writer as writer
from phenoprint import __version__
from phenoprint.cli import main
from phenoprint.data import load_site, read_metadata
from phenoprint.data.synth import SYNTH_RECORD, preset_config, synthesize
from phenoprint.data.synth.design import V1_COLUMNS
from phenoprint.errors import LayoutError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    assert main(["-q", "synth", "--preset", "tiny", "--out", str(out), "--workers", "1", "--seed", "7"]) == 0
    return out


def test_cli_writes_the_v1_layout(tiny_root: Path) -> None:
    csv = pd.read_csv(tiny_root / "metadata.csv")
    assert tuple(csv.columns) == V1_COLUMNS
    meta = read_metadata(tiny_root)
    assert len(meta) == len(csv) == 2 * 2 * 4 * 8 * 2  # cell types x experiments x plates x wells x sites
    assert set(meta.dataset) == {"train", "test"}
    pngs = list((tiny_root / "images").rglob("*.png"))
    assert len(pngs) == 6 * len(meta)
    assert not list(tiny_root.rglob(".*.tmp"))
    assert (tiny_root / "images" / "HUVEC-01" / "Plate1" / "B02_s1_w1.png").is_file()
    with Image.open(pngs[0]) as im:
        assert (im.mode, im.size) == ("L", (64, 64))
    site = load_site(tiny_root, "RPE-02", 3, "B02", 2)
    assert site.shape == (6, 64, 64)
    record = json.loads((tiny_root / SYNTH_RECORD).read_text())
    assert (record["preset"], record["seed"], record["batch_effects"]) == ("tiny", 7, True)
    assert record["phenoprint_version"] == __version__
    assert record["config"]["image_size"] == 64
    assert not (tiny_root / writer.PENDING_RECORD).exists()


def test_same_seed_gives_the_same_bytes_with_any_worker_count(tiny_root: Path, tmp_path: Path) -> None:
    result = synthesize(preset_config("tiny", seed=7), tmp_path / "again", workers=2, progress=False)
    assert result.n_rendered == result.n_sites
    assert _files(tmp_path / "again") == _files(tiny_root)


def test_interrupted_run_is_incomplete_and_resumes(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = writer.render_site

    def failing(*args: Any, **kwargs: Any) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] > 40:
            raise RuntimeError("power cut")
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "render_site", failing)
    out = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="power cut"):
        synthesize(preset_config("tiny", seed=7), out, workers=1, progress=False)
    assert not (out / SYNTH_RECORD).exists()
    assert (out / writer.PENDING_RECORD).is_file()
    with pytest.raises(LayoutError, match="no RxRx1 metadata"):
        read_metadata(out)  # an interrupted run is not a data root yet
    with pytest.raises(LayoutError, match="another configuration"):
        synthesize(preset_config("tiny", seed=8), out, workers=1, progress=False)

    monkeypatch.setattr(writer, "render_site", real)
    result = synthesize(preset_config("tiny", seed=7), out, workers=1, progress=False)
    assert (result.n_skipped, result.n_rendered) == (40, result.n_sites - 40)
    assert _files(out) == _files(tiny_root)


def test_rerun_of_a_complete_root_renders_nothing(tiny_root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_root, copy)
    (copy / "images" / "RPE-01" / "Plate2" / "B02_s1_w4.png").unlink()
    result = synthesize(preset_config("tiny", seed=7), copy, workers=1, progress=False)
    assert (result.n_rendered, result.n_skipped) == (1, result.n_sites - 1)
    assert _files(copy) == _files(tiny_root)


def test_refuses_another_config_or_a_foreign_folder(tiny_root: Path, tmp_path: Path) -> None:
    before = (tiny_root / SYNTH_RECORD).read_bytes()
    with pytest.raises(LayoutError, match=r"differs in: .*seed"):
        synthesize(preset_config("tiny", seed=8), tiny_root, workers=1, progress=False)
    assert (tiny_root / SYNTH_RECORD).read_bytes() == before
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LayoutError, match="not a phenoprint synth output"):
        synthesize(preset_config("tiny"), tmp_path, workers=1, progress=False)
    with pytest.raises(ValueError, match="workers"):
        synthesize(preset_config("tiny"), tmp_path / "new", workers=0)


def test_no_batch_effects_renders_the_same_wells_and_cells(tiny_root: Path, tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    assert (
        main(
            [
                "-q",
                "synth",
                "--preset",
                "tiny",
                "--out",
                str(twin),
                "--workers",
                "1",
                "--seed",
                "7",
                "--no-batch-effects",
            ]
        )
        == 0
    )
    assert (twin / "metadata.csv").read_bytes() == (tiny_root / "metadata.csv").read_bytes()
    assert json.loads((twin / SYNTH_RECORD).read_text())["batch_effects"] is False
    meta = read_metadata(tiny_root)
    keys = list(meta[["experiment", "plate", "well", "site"]].itertuples(index=False))
    twins, others = [], []
    for i, key in enumerate(keys):
        a = load_site(tiny_root, *key)[0].ravel().astype(float)
        b = load_site(twin, *key)[0].ravel().astype(float)
        c = load_site(twin, *keys[(i + 5) % len(keys)])[0].ravel().astype(float)
        assert not np.array_equal(a, b)
        twins.append(np.corrcoef(a, b)[0, 1])
        others.append(np.corrcoef(a, c)[0, 1])
    # the nuclei stay where they were: the twin's nuclear channel correlates with the original's
    assert np.median(twins) > 0.8
    assert np.min(twins) > 0.3
    assert np.median(np.abs(others)) < 0.2


def test_cli_refuses_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["synth", "--preset", "huge", "--out", str(tmp_path)])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", "--preset", "tiny", "--out", str(tmp_path), "--workers", "0"])
    assert "expected a number >= 1" in capsys.readouterr().err
    assert main(["synth", "--preset", "tiny", "--out", str(tmp_path / "x"), "--image-size", "8"]) == 2
    assert "image size must be 32-2048" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_layout_from_renders_the_real_plate_map(rxrx1_root: Path, tmp_path: Path) -> None:
    for name in ("train", "train_controls"):
        frame = pd.read_csv(rxrx1_root / f"{name}.csv")
        keep = (frame.experiment == "U2OS-01") & (frame.plate == 2) & frame.well.isin(["B02", "C03", "D04", "E05"])
        frame[keep].to_csv(tmp_path / f"{name}.csv", index=False)
    out = tmp_path / "out"
    argv = ["-q", "synth", "--preset", "tiny", "--out", str(out), "--workers", "1"]
    assert main([*argv, "--layout-from", str(tmp_path / "train.csv"), "--image-size", "32"]) == 0
    meta = read_metadata(out)
    real = read_metadata(rxrx1_root)
    real = real[(real.experiment == "U2OS-01") & (real.plate == 2) & real.well.isin(["B02", "C03", "D04", "E05"])]
    assert meta["sirna"].notna().all()  # the synthetic v1.0 metadata names its siRNAs; the Kaggle files do not
    pd.testing.assert_frame_equal(meta.drop(columns="sirna"), real.reset_index(drop=True))
    assert load_site(out, "U2OS-01", 2, "C03", 1).shape == (6, 32, 32)
    assert json.loads((out / SYNTH_RECORD).read_text())["layout_sha256"]


def test_an_image_writer_that_fails_leaves_neither_the_file_nor_its_temporary(tmp_path: Path) -> None:
    """PNGs and the LoadData TIFFs share one unsynced write-then-rename (:func:`writer.write_image_file`)."""
    target = tmp_path / "a.tif"
    target.write_bytes(b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        writer.write_image_file(target, half_then_fail)
    assert target.read_bytes() == b"old"  # the earlier file is left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]
    writer.write_image_file(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]
