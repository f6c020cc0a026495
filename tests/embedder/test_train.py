"""Training: the loss goes down, interruption + resume equals an uninterrupted run, runs are refused when unsafe."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from phenoprint.embedder.checkpoint import latest_checkpoint, read_run
from phenoprint.embedder.config import ModelConfig, TrainConfig
from phenoprint.embedder.train import lr_factor, train
from phenoprint.errors import CheckpointError, UnknownExperimentError


def _config(**kw) -> TrainConfig:
    base = TrainConfig(
        model=ModelConfig(backbone="resnet10t", embedding_dim=16, num_classes=8, head="cosface", margin=0.1, scale=8.0),
        image_size=24,
        epochs=4,
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        workers=0,
        checkpoint_every=2,
        device="cpu",
        seed=0,
    )
    return replace(base, **kw)


def _losses(run: Path) -> list[float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if r["event"] == "train"]


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    f = [lr_factor(s, 100, 10, 0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1)
    assert f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    assert lr_factor(100, 100, 10, 0.01) == pytest.approx(0.01)


def test_a_tiny_run_lowers_the_loss_and_writes_a_run(fake_source, tmp_path: Path) -> None:
    result = train(_config(epochs=12, checkpoint_every=100), fake_source, tmp_path / "run", progress=False)
    config, info = read_run(tmp_path / "run")
    assert config == _config(epochs=12, checkpoint_every=100)
    assert info["fingerprint"] == result.fingerprint
    assert info["steps"] == result.steps == 12 * 3
    losses = [result.final_loss] if not (tmp_path / "run" / "metrics.jsonl").exists() else _losses(tmp_path / "run")
    assert losses[-1] < 0.7 * losses[0]
    assert (tmp_path / "run" / "model.safetensors").is_file()


def _epochs_logged(run: Path) -> list[tuple[int, int]]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["epoch"]) for r in lines if r["event"] == "train"]


@pytest.mark.parametrize("cut_at", [5, 3])  # 3 steps an epoch: 3 is the last step of the first epoch
def test_resume_after_an_interruption_matches_an_uninterrupted_run(fake_source, tmp_path: Path, cut_at: int) -> None:
    config = _config(epochs=3)
    full = train(config, fake_source, tmp_path / "full", progress=False)

    def interrupt(step: int, loss: float) -> None:
        if step == cut_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, fake_source, tmp_path / "cut", progress=False, on_step=interrupt)
    ckpt = latest_checkpoint(tmp_path / "cut")
    assert ckpt is not None
    assert ckpt.name == f"step-{cut_at:08d}"  # the interrupted step was saved on the way out
    assert not (tmp_path / "cut" / "run.json").exists()
    resumed = train(config, fake_source, tmp_path / "cut", resume=True, progress=False)
    assert resumed.steps == full.steps
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert resumed.fingerprint == full.fingerprint
    assert _epochs_logged(tmp_path / "cut")[-1] == _epochs_logged(tmp_path / "full")[-1]  # the epoch count advanced


def test_an_existing_run_is_not_overwritten(fake_source, tmp_path: Path) -> None:
    train(_config(max_steps=1), fake_source, tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(_config(max_steps=1), fake_source, tmp_path / "run", progress=False)


def test_extending_a_run_killed_before_its_run_json_never_pairs_new_weights_with_the_old_fingerprint(
    fake_source, tmp_path: Path, monkeypatch
) -> None:
    """``--resume`` with more steps rewrites the weights of a finished run, then its run.json: a kill in between used
    to leave the new weights served under the old fingerprint."""
    from phenoprint.embedder import checkpoint
    from phenoprint.embedder.inference import load_model

    run = tmp_path / "run"
    train(_config(max_steps=2), fake_source, run, progress=False)
    old = load_model(run, "cpu").fingerprint
    real = checkpoint.write_json_atomic

    def killed_before_run_json(data, path):
        if Path(path).name == "run.json":
            raise KeyboardInterrupt  # as SIGKILL would, between the weights and the record
        return real(data, path)

    monkeypatch.setattr(checkpoint, "write_json_atomic", killed_before_run_json)
    with pytest.raises(KeyboardInterrupt):
        train(_config(max_steps=4), fake_source, run, resume=True, progress=False)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="--resume"):
        load_model(run, "cpu")
    finished = train(_config(max_steps=4), fake_source, run, resume=True, progress=False)
    model = load_model(run, "cpu")
    assert model.fingerprint == finished.fingerprint != old
    assert finished.steps == 4


def test_resume_with_another_config_is_refused(fake_source, tmp_path: Path) -> None:
    train(_config(max_steps=2), fake_source, tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match=r"lr: 0\.003 → 0\.1"):
        train(_config(max_steps=4, lr=0.1), fake_source, tmp_path / "run", resume=True, progress=False)


def test_unknown_holdout_and_too_small_head_are_refused(fake_source, tmp_path: Path) -> None:
    with pytest.raises(UnknownExperimentError, match="NOPE-01"):
        train(_config(holdout=("NOPE-01",)), fake_source, tmp_path / "a", progress=False)
    small = _config(model=replace(_config().model, num_classes=4))
    with pytest.raises(ValueError, match="--num-classes 8"):
        train(small, fake_source, tmp_path / "b", progress=False)


def test_gradient_accumulation_counts_optimizer_steps(fake_source, tmp_path: Path) -> None:
    result = train(_config(epochs=2, grad_accum=3, checkpoint_every=100), fake_source, tmp_path / "r", progress=False)
    assert result.steps == 2 * (3 // 3)


def test_one_step_alone_accumulates_then_steps_with_the_scheduled_rate(fake_source, tmp_path: Path) -> None:
    from phenoprint.embedder.distributed import init_distributed
    from phenoprint.embedder.train import LoopState, _prepare, micro_step, optimizer_step

    config = _config(grad_accum=2)
    run = _prepare(config, fake_source, tmp_path / "run", init_distributed("cpu"), resume=False)
    state = LoopState(step=0, saved_step=0, micro=0, micro_at_step=0, epoch=0)
    before = [p.detach().clone() for p in run.model.parameters()]
    batches = iter(run.loader)
    due, _ = micro_step(run.net, next(batches), config, torch.device("cpu"), state)
    assert (due, state.micro, state.step) == (False, 1, 0)  # half an accumulation: no step yet
    assert all(torch.equal(a, b) for a, b in zip(before, run.model.parameters(), strict=True))
    due, parts = micro_step(run.net, next(batches), config, torch.device("cpu"), state)
    assert due
    optimizer_step(run, parts, config, state)
    assert (state.step, state.micro_at_step) == (1, 2)
    assert state.last_loss == pytest.approx(float(parts.total.detach()))
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(config.lr * lr_factor(0, run.total_steps, 2, 0.01))
    assert not all(torch.equal(a, b) for a, b in zip(before, run.model.parameters(), strict=True))


def test_the_end_of_an_epoch_alone_validates_only_when_due(fake_source, tmp_path: Path) -> None:
    from phenoprint.embedder.distributed import init_distributed
    from phenoprint.embedder.train import LoopState, _prepare, end_of_epoch

    config = _config(holdout=("HUVEC-02",), epochs=4, val_every=2)
    ctx = init_distributed("cpu")
    run = _prepare(config, fake_source, tmp_path / "run", ctx, resume=False)
    calls: list[tuple[int, tuple[str, ...]]] = []

    def validate(table, holdout: tuple[str, ...]) -> float:
        calls.append((len(table), holdout))
        return 0.25

    state = LoopState(step=5, saved_step=0, micro=7, micro_at_step=7, epoch=0)
    end_of_epoch(run, state, fake_source, config, ctx, None, validate)
    assert (state.epoch, state.micro, state.micro_at_step, state.val_top1, calls) == (1, 0, 0, None, [])
    end_of_epoch(run, state, fake_source, config, ctx, None, validate)
    assert state.epoch == 2
    assert state.val_top1 == 0.25
    assert len(calls) == 1
    assert calls[0][1] == ("HUVEC-02",)
    assert calls[0][0] > len(run.val_w)  # the held-out wells and the reference wells
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {k: v for k, v in records[-1].items() if k != "time"} == {
        "event": "validation",
        "step": 5,
        "epoch": 2,
        "val_top1": 0.25,
    }
