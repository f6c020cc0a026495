"""CosFace: an additive cosine margin on the target class."""

from __future__ import annotations

import torch

from phenoprint.embedder.heads.base import CosineHead


class CosFace(CosineHead):
    """Target logit ``cos(theta) - m``.

    Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018.

    Args:
        margin: the cosine margin m (0.2-0.4 is usual).
    """

    def __init__(self, embedding_dim: int, num_classes: int, margin: float = 0.2, scale: float = 30.0) -> None:
        super().__init__(embedding_dim, num_classes, scale)
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"margin must lie in [0, 1), got {margin}")
        self.margin = margin

    def target_logit(self, cos_target: torch.Tensor) -> torch.Tensor:
        return cos_target - self.margin
