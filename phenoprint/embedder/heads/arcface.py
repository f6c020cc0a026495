"""ArcFace: an additive angular margin on the target class."""

from __future__ import annotations

import math

import torch

from phenoprint.embedder.heads.base import CosineHead

#: Floor of 1 - cos² before the square root: keeps sin(theta) differentiable at theta = 0.
_SIN2_FLOOR = 1e-7


class ArcFace(CosineHead):
    """Target logit ``cos(theta + m)``.

    Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019.
    Where ``theta + m`` would pass pi the cosine stops decreasing, so beyond ``theta = pi - m`` the
    paper's implementation continues linearly, ``cos(theta) - m * sin(m)``, keeping the logit monotonic.

    Args:
        margin_rad: the angular margin m, in radians (0.1-0.5 is usual).
    """

    def __init__(self, embedding_dim: int, num_classes: int, margin_rad: float = 0.2, scale: float = 30.0) -> None:
        super().__init__(embedding_dim, num_classes, scale)
        if not 0.0 <= margin_rad < math.pi / 2:
            raise ValueError(f"margin_rad must lie in [0, pi/2), got {margin_rad}")
        self.margin_rad = margin_rad
        self._cos_m = math.cos(margin_rad)
        self._sin_m = math.sin(margin_rad)
        self._threshold = math.cos(math.pi - margin_rad)  # cos(theta) below this means theta + m > pi
        self._linear_drop = math.sin(math.pi - margin_rad) * margin_rad

    def target_logit(self, cos_target: torch.Tensor) -> torch.Tensor:
        cos_t = cos_target.clamp(-1.0, 1.0)
        sin_t = (1.0 - cos_t * cos_t).clamp(min=_SIN2_FLOOR).sqrt()
        shifted = cos_t * self._cos_m - sin_t * self._sin_m  # cos(theta + m)
        return torch.where(cos_t > self._threshold, shifted, cos_t - self._linear_drop)
