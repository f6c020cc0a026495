"""The embedder network: two timm backbones over 6 channels, the neck, cell-type context, the training heads."""

from __future__ import annotations

import logging

import pytest
import torch

from phenoprint.embedder.config import ModelConfig
from phenoprint.embedder.model import Embedder, TrainingModel, create_backbone


@pytest.mark.parametrize("backbone", ["resnet10t", "mobilenetv3_small_050"])
def test_forward_shapes_on_six_channels(backbone: str) -> None:
    model = Embedder(ModelConfig(backbone=backbone, embedding_dim=24)).eval()
    out = model(torch.randn(3, 6, 48, 48))
    assert out.shape == (3, 24)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_cell_type_context_changes_the_vector_and_is_required() -> None:
    torch.manual_seed(0)
    model = Embedder(ModelConfig(backbone="resnet10t", embedding_dim=16, cell_type_context=True)).eval()
    x = torch.randn(2, 6, 32, 32)
    a = model(x, torch.tensor([0, 0]))
    b = model(x, torch.tensor([1, 1]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="cell-type index"):
        model(x)


def test_wrong_channel_count_is_refused() -> None:
    model = Embedder(ModelConfig(backbone="resnet10t", embedding_dim=8))
    with pytest.raises(ValueError, match=r"\(N, 6, H, W\)"):
        model(torch.randn(2, 3, 32, 32))


def test_unknown_backbone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown timm backbone"):
        create_backbone("not_a_network", False, 6)


def test_pretrained_weights_unreachable_fall_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("no internet")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with caplog.at_level(logging.WARNING):
        _, loaded = create_backbone("resnet10t", True, 6)
    assert loaded is False
    assert "could not be fetched" in caplog.text


def test_training_model_mixes_ce_and_margin_loss() -> None:
    torch.manual_seed(0)
    model = TrainingModel(ModelConfig(backbone="resnet10t", embedding_dim=16, num_classes=5, ce_weight=0.8))
    parts = model(torch.randn(4, 6, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert parts.ce is not None
    total = float(parts.total.detach())
    assert total == pytest.approx(0.8 * float(parts.ce) + 0.2 * float(parts.margin), rel=1e-5)
    parts.total.backward()
    assert model.ce_head is not None
    assert model.ce_head.weight.grad is not None
