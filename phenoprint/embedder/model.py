"""The embedder: a timm backbone over 6 channels, a BN-Linear-BN neck, L2-normalized output; plus its training heads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from phenoprint.embedder.config import ModelConfig
from phenoprint.embedder.heads import CosineHead, build_head
from phenoprint.logs import warn_once

log = logging.getLogger(__name__)


def create_backbone(name: str, pretrained: bool, in_chans: int) -> tuple[nn.Module, bool]:
    """A timm feature extractor (pooled features, no classifier) over ``in_chans`` channels.

    timm adapts pretrained RGB stems to other channel counts itself (``adapt_input_conv`` repeats and
    rescales the kernels). When the weights cannot be fetched (offline, no cache) the model is built with
    random weights and a warning says so.

    Returns:
        The backbone and whether pretrained weights were actually loaded.

    Raises:
        ValueError: timm does not know the model name.
    """
    if not timm.is_model(name):
        raise ValueError(f"unknown timm backbone {name!r}; see timm.list_models() (e.g. resnet18, densenet121)")
    if pretrained:
        try:
            return timm.create_model(name, pretrained=True, in_chans=in_chans, num_classes=0), True
        except Exception as exc:  # timm raises many kinds (HTTP, hub, file) when weights are unreachable
            warn_once(
                log,
                "pretrained weights for %s could not be fetched (%s: %s); training from random initialization. "
                "Pre-download them into the Hugging Face cache (HF_HOME) on a machine with internet to use them.",
                name,
                type(exc).__name__,
                exc,
            )
    return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0), False


def backbone_width(backbone: nn.Module) -> int:
    """Width of a timm backbone's pooled output (``head_hidden_size`` when the model has a pre-logits layer)."""
    width: Any = getattr(backbone, "head_hidden_size", None) or backbone.num_features
    return int(width)


class Embedder(nn.Module):
    """Maps (N, 6, H, W) standardized images to (N, embedding_dim) unit vectors.

    Args:
        config: the model configuration.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone, self.pretrained_loaded = create_backbone(config.backbone, config.pretrained, config.in_chans)
        width = backbone_width(self.backbone) + (len(config.cell_types) if config.cell_type_context else 0)
        self.neck = nn.Sequential(
            nn.BatchNorm1d(width),
            nn.Dropout(config.dropout),
            nn.Linear(width, config.embedding_dim, bias=False),
            nn.BatchNorm1d(config.embedding_dim),
        )

    def features(self, images: torch.Tensor, cell_type: torch.Tensor | None = None) -> torch.Tensor:
        """The neck output before normalization (what the plain-CE head, when mixed in, sees)."""
        if images.ndim != 4 or images.shape[1] != self.config.in_chans:
            raise ValueError(f"expected images of shape (N, {self.config.in_chans}, H, W), got {tuple(images.shape)}")
        pooled = self.backbone(images)
        if self.config.cell_type_context:
            if cell_type is None:
                raise ValueError("this model was built with cell_type_context: pass the cell-type index of each image")
            pooled = torch.cat([pooled, F.one_hot(cell_type, len(self.config.cell_types)).to(pooled.dtype)], dim=1)
        return self.neck(pooled)

    def forward(self, images: torch.Tensor, cell_type: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(self.features(images, cell_type).float(), dim=1)


@dataclass(frozen=True)
class LossParts:
    """The training loss and its parts (for logging)."""

    total: torch.Tensor
    margin: torch.Tensor
    ce: torch.Tensor | None


class TrainingModel(nn.Module):
    """The embedder with its training heads: a margin head on the unit vectors, optionally mixed with plain CE.

    Only ``embedder`` is exported; the heads exist for training.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {config.num_classes}")
        if not 0.0 <= config.ce_weight <= 1.0:
            raise ValueError(f"ce_weight must lie in [0, 1], got {config.ce_weight}")
        self.config = config
        self.embedder = Embedder(config)
        self.margin_head: CosineHead = build_head(
            config.head, config.embedding_dim, config.num_classes, config.margin, config.scale
        )
        self.ce_head = nn.Linear(config.embedding_dim, config.num_classes) if config.ce_weight > 0 else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor, cell_type: torch.Tensor | None = None) -> LossParts:
        feats = self.embedder.features(images, cell_type).float()
        margin_loss = F.cross_entropy(self.margin_head(feats, labels), labels)
        if self.ce_head is None:
            return LossParts(margin_loss, margin_loss.detach(), None)
        ce_loss = F.cross_entropy(self.ce_head(feats), labels)
        w = self.config.ce_weight
        return LossParts(w * ce_loss + (1.0 - w) * margin_loss, margin_loss.detach(), ce_loss.detach())
