"""Device choice, and a real 2-process gloo DDP run through torchrun on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from phenoprint.embedder.distributed import init_distributed, resolve_device


def test_auto_falls_back_to_cpu_with_a_warning(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert "no CUDA device" in caplog.text
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("tpu")


def test_cuda_is_chosen_per_local_rank_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 1)


def test_single_process_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)


@pytest.mark.slow
def test_two_process_gloo_ddp_training_and_sharded_export(fake_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    common = ["--device", "cpu", "--workers", "0"]
    subprocess.run(
        [
            *torchrun,
            "-m",
            "phenoprint",
            "-q",
            "train",
            "--data",
            str(fake_root),
            "--out",
            str(tmp_path / "run"),
            "--backbone",
            "resnet10t",
            "--embedding-dim",
            "16",
            "--num-classes",
            "8",
            "--image-size",
            "24",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--warmup-steps",
            "1",
            *common,
        ],
        check=True,
        env=env,
        timeout=300,
    )
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["world_size"] == 2
    # 3 experiments x 8 wells in per-experiment batches of 4: 6 batches an epoch, 3 on each rank
    assert info["steps"] == 2 * 3
    subprocess.run(
        [
            *torchrun,
            "-m",
            "phenoprint",
            "-q",
            "embed",
            "--model",
            str(tmp_path / "run"),
            "--data",
            str(fake_root),
            "--out",
            str(tmp_path / "emb"),
            *common,
        ],
        check=True,
        env=env,
        timeout=300,
    )
    parts = sorted(p.name for p in (tmp_path / "emb").iterdir())
    assert parts == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    from phenoprint.data.table import read_embeddings

    table = read_embeddings(tmp_path / "emb")
    assert len(table) == 24
    assert table.fingerprint == info["fingerprint"]
