"""What a run says about itself: MODEL_CARD.md and the training curve; the warnings on data the config does not fit."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from phenoprint.embedder.config import ModelConfig, TrainConfig
from phenoprint.embedder.data import well_table
from phenoprint.embedder.report import CURVE_FILE, MODEL_CARD, training_curve_figure
from phenoprint.embedder.train import DEMO_RECIPE, data_fit_warnings, split_wells, train
from phenoprint.index.evaluate import validation_top1


def _config(**kw) -> TrainConfig:
    base = TrainConfig(
        model=ModelConfig(backbone="resnet10t", embedding_dim=16, num_classes=8),
        image_size=24,
        epochs=2,
        batch_size=8,
        workers=0,
        checkpoint_every=100,
        device="cpu",
    )
    return replace(base, **kw)


def test_every_run_has_a_model_card_and_a_training_curve(fake_source, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_config(holdout=("HUVEC-02",)), fake_source, run, progress=False, validate=validation_top1)
    card = (run / MODEL_CARD).read_text()
    fingerprint = json.loads((run / "run.json").read_text())["fingerprint"]
    for section in ("## Data", "## Recipe", "## Held-out figures", "## Intended use", "## Limits"):
        assert section in card
    assert fingerprint in card
    assert "trained on 2 experiments (HUVEC-01, RPE-01)" in card
    assert "validation top-1 on HUVEC-02: **" in card
    assert "backbone `resnet10t`" in card
    assert (run / CURVE_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = training_curve_figure(run / "metrics.jsonl")
    loss_ax, lr_ax = fig.axes[0], fig.axes[1]
    assert loss_ax.get_xlabel() == "optimizer step"
    assert loss_ax.get_ylabel() == "loss"
    assert lr_ax.get_ylabel() == "learning rate"
    assert loss_ax.get_legend() is not None
    legend = [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert legend == ["training loss (margin head)", "validation top-1 (held-out experiments)"]


def test_a_run_without_holdout_says_so_in_its_card(fake_source, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_config(epochs=1), fake_source, run, progress=False)
    assert "- none: no experiment was held out" in (run / MODEL_CARD).read_text()


def test_warnings_when_the_config_does_not_fit_the_data(fake_source) -> None:
    """FakeSource sites are 32 px with 8 labels; the defaults (224 px, 1,139 classes, nothing held out) fit neither."""
    train_w, val_w = split_wells(fake_source.metadata, ())
    warnings = data_fit_warnings(
        _config(image_size=224, model=ModelConfig(backbone="resnet10t")), fake_source, train_w, val_w
    )
    assert len(warnings) == 3
    upscale, no_val, classes = warnings
    assert "--image-size 224 enlarges the 32-px sites" in upscale
    assert "pass --image-size 32 or less" in upscale
    assert "nothing is held out (--holdout)" in no_val
    assert "the head has 1,139 classes but the labels use ids 0-7: pass --num-classes 8" in classes
    assert all(DEMO_RECIPE in w for w in warnings)
    train_w, val_w = split_wells(fake_source.metadata, ("HUVEC-02",))
    assert data_fit_warnings(_config(), fake_source, train_w, val_w) == []


def test_the_recipe_the_warnings_point_to_is_the_demos() -> None:
    from phenoprint.pipeline import DemoConfig

    d = DemoConfig()
    for option in (
        f"--backbone {d.backbone}",
        f"--image-size {d.image_size}",
        f"--embedding-dim {d.embedding_dim}",
        f"--normalization {d.normalization}",
        f"--epochs {d.epochs}",
        f"--batch-size {d.batch_size}",
        f"--lr {d.lr:g}",
    ):
        assert option in DEMO_RECIPE


@pytest.mark.parametrize("bad", ["", "not json\n"])
def test_a_curve_needs_training_steps(tmp_path: Path, bad: str) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(bad)
    with pytest.raises(ValueError, match="no training step recorded"):
        training_curve_figure(metrics)


def test_well_table_keeps_the_sirna_name(fake_source) -> None:
    assert well_table(fake_source.metadata)["sirna"].iloc[0] == "s0"
