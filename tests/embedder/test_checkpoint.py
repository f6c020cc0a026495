"""Run directories: safetensors weights, JSON state, fingerprints, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from phenoprint.embedder.checkpoint import (
    Position,
    fingerprint,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    read_run,
    save_checkpoint,
    save_weights,
    write_run,
)
from phenoprint.embedder.config import ModelConfig, TrainConfig
from phenoprint.embedder.model import Embedder, TrainingModel
from phenoprint.errors import CheckpointError

CFG = TrainConfig(model=ModelConfig(backbone="resnet10t", embedding_dim=8, num_classes=4), image_size=16)


def test_checkpoint_round_trip_restores_weights_optimizer_and_rng(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TrainingModel(CFG.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 6, 16, 16), torch.tensor([0, 1, 2, 3])).total.backward()
    opt.step()
    path = save_checkpoint(tmp_path, model, opt, Position(7, 1, 3), CFG)
    expected_next = torch.rand(3)  # what the RNG gives after the checkpoint

    torch.manual_seed(123)
    other = TrainingModel(CFG.model)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    assert latest_checkpoint(tmp_path) == path
    assert load_checkpoint(path, other, other_opt) == Position(7, 1, 3)
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    sa, sb = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for pid in sa:
        for key in sa[pid]:
            torch.testing.assert_close(torch.as_tensor(sa[pid][key]), torch.as_tensor(sb[pid][key]))
    torch.testing.assert_close(torch.rand(3), expected_next)
    assert not list(tmp_path.glob("checkpoints/.step-*"))  # no temporary folder left behind


def test_a_killed_checkpoint_write_is_cleaned_at_the_next_checkpoint_and_folders_get_the_umask(tmp_path: Path) -> None:
    """Checkpoint temporaries are ~60 MB each for a resnet50: a killed write's used to stay forever."""
    import os

    model = TrainingModel(CFG.model)
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path, model, opt, Position(1, 0, 1), CFG)
    leftover = tmp_path / "checkpoints" / ".step-00000002.ab12cd34"  # killed while writing step 2
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"\0" * 1000)
    os.utime(leftover, (1e9, 1e9))
    umask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path, model, opt, Position(2, 0, 2), CFG)
    finally:
        os.umask(umask)
    assert not leftover.exists()
    assert path.stat().st_mode & 0o777 == 0o755
    assert latest_checkpoint(tmp_path) == path


def test_only_the_last_checkpoints_are_kept(tmp_path: Path) -> None:
    model = TrainingModel(CFG.model)
    opt = torch.optim.AdamW(model.parameters())
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, model, opt, Position(step, 0, step), CFG, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000002", "step-00000003"]


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    save_weights(Embedder(CFG.model), tmp_path / "m.safetensors")
    bigger = Embedder(ModelConfig(backbone="resnet10t", embedding_dim=16))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_weights(bigger, tmp_path / "m.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_weights(bigger, tmp_path / "bad.safetensors")


def test_fingerprint_depends_on_weights_and_on_what_shapes_the_vectors() -> None:
    torch.manual_seed(0)
    model = Embedder(CFG.model)
    a = fingerprint(CFG, model)
    assert a == fingerprint(CFG, model)
    assert a != fingerprint(TrainConfig(model=CFG.model, image_size=32), model)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert a != fingerprint(CFG, model)


def test_unfinished_runs_are_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a finished phenoprint run"):
        read_run(tmp_path)
    model = TrainingModel(CFG.model)
    save_checkpoint(tmp_path, model, torch.optim.AdamW(model.parameters()), Position(1, 0, 1), CFG)
    with pytest.raises(CheckpointError, match="--resume"):
        read_run(tmp_path)
    fp = write_run(tmp_path, model.embedder, CFG, {"steps": 1})
    config, info = read_run(tmp_path)
    assert config == CFG
    assert info["fingerprint"] == fp
    info["format_version"] = 99
    (tmp_path / "run.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="run format 99"):
        read_run(tmp_path)


def test_runs_of_rxrx1_channels_keep_the_fingerprint_they_had_before_channels_were_named() -> None:
    """Named channels joined the model config after runs existed: an RxRx1 run (every earlier one) must keep the
    fingerprint written in its run.json, or it no longer loads (the demo's trained model was refused this way). Here
    the fingerprint as it was computed then, re-derived: the model config without ``channels``."""
    import hashlib

    import numpy as np

    from phenoprint.configs import config_to_json
    from phenoprint.embedder.checkpoint import state_dict_to_cpu

    torch.manual_seed(0)
    model = Embedder(CFG.model)
    old_model = {k: v for k, v in config_to_json(CFG.model).items() if k != "channels"}
    h = hashlib.sha256()
    identity = {"model": old_model, "image_size": CFG.image_size, "normalization": CFG.normalization}
    h.update(json.dumps(identity, sort_keys=True).encode())
    for name, tensor in sorted(state_dict_to_cpu(model).items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(np.ascontiguousarray(tensor.numpy()).tobytes())
    assert fingerprint(CFG, model) == h.hexdigest()
    five = ModelConfig(
        backbone="resnet10t", embedding_dim=8, num_classes=4, channels=("DNA", "ER", "RNA", "AGP", "Mito")
    )
    torch.manual_seed(0)
    other = TrainConfig(model=five, image_size=16)
    assert fingerprint(other, Embedder(five)) != fingerprint(CFG, model)  # another channel set is another model
