"""scripts/bench_gpu.py without a GPU (fails fast, or skips for `make bench`), and the GPU table written from it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import PROJECT_ROOT


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA device")
def test_a_gpu_run_without_cuda_stops_at_once_and_leaves_the_results_alone(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench_gpu.json"
    out.write_text('{"benchmark": "bench_gpu", "configs": {}}')
    assert _script("bench_gpu").main(["--device", "cuda", "--out", str(out), "--work", str(tmp_path / "w")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert json.loads(out.read_text()) == {"benchmark": "bench_gpu", "configs": {}}
    assert not (tmp_path / "w").exists()  # nothing rendered or packed before the check


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA device")
def test_make_bench_without_cuda_skips_and_keeps_an_earlier_gpu_result(tmp_path: Path) -> None:
    bench = _script("bench_gpu")
    fresh = tmp_path / "fresh.json"
    assert bench.main(["--out", str(fresh)]) == 0
    assert "no CUDA device" in json.loads(fresh.read_text())["skipped"]
    kept = tmp_path / "kept.json"
    kept.write_text('{"benchmark": "bench_gpu", "configs": {}}')
    assert bench.main(["--out", str(kept)]) == 0
    assert "skipped" not in json.loads(kept.read_text())


def test_configs_must_name_a_backbone_and_a_size() -> None:
    bench = _script("bench_gpu")
    assert bench.parse_args(["--configs", "densenet121@512, resnet50@256"]).configs == [
        ("densenet121", 512),
        ("resnet50", 256),
    ]
    with pytest.raises(SystemExit):
        bench.parse_args(["--configs", "resnet50"])


def test_the_headline_compares_with_the_faster_limit_and_checks_the_goals() -> None:
    bench = _script("bench_gpu")
    util = {"mean_pct": 90.0}
    r = {
        "train_model_only": {"images_per_s": 400.0},
        "train_model_only_compiled": {"images_per_s": 500.0},
        "train_from_pack": {"images_per_s": 380.0, "gpu_utilization": util},
        "train_from_pack_compiled": {"images_per_s": 460.0, "gpu_utilization": util},
        "embed_tta1": {"pipeline_sites_per_s": 700.0, "forward_only_sites_per_s": 720.0},
        "embed_tta8": {"pipeline_sites_per_s": 95.0, "forward_only_sites_per_s": 100.0},
    }
    h = bench.headline(r)
    assert h["limit_compiled"]
    assert h["train_pack_over_limit"] == pytest.approx(0.92)
    assert h["embed_tta8_over_forward"] == pytest.approx(0.95)
    assert h["goals_met"] is True
    del r["train_from_pack_compiled"]  # compiled limit, only the eager pipeline measured: the conservative ratio
    assert bench.headline(r)["train_pack_over_limit"] == pytest.approx(0.76)
    assert bench.headline(r)["goals_met"] is False


def test_the_gpu_table_says_when_it_is_pending_or_incomplete() -> None:
    write = _script("write_benchmarks")
    old = {"date": "2026-11-26T09:28:56+0000", "train_from_pack": {"images_per_s": 276.0}}
    assert "pending a GPU measurement" in write.gpu_note(old)
    assert write.gpu_rows(old)[1].value == 276.0
    new = {"configs": {"resnet50@256": {"headline": {"train_pack_images_per_s": 1000.0}}}, "complete": False}
    assert "stopped before its last section" in write.gpu_note(new)
    rows = write.gpu_rows(new)
    assert rows[0].figure.startswith("resnet50@256: training images/s from the pack")
    assert rows[0].value == 1000.0
    assert write.gpu_note({**new, "complete": True}) is None
