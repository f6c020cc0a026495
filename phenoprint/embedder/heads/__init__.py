"""Margin heads: a cosine base with one hook, and ArcFace / CosFace / cosine softmax on it."""

from __future__ import annotations

from collections.abc import Callable

from phenoprint.embedder.config import HEADS
from phenoprint.embedder.heads.arcface import ArcFace
from phenoprint.embedder.heads.base import CosineHead
from phenoprint.embedder.heads.cosface import CosFace
from phenoprint.embedder.heads.cosine import CosineSoftmax

#: How each head of :data:`phenoprint.embedder.config.HEADS` is built from (embedding_dim, num_classes, margin, scale).
HEAD_BUILDERS: dict[str, Callable[[int, int, float, float], CosineHead]] = {
    "arcface": lambda d, n, margin, scale: ArcFace(d, n, margin_rad=margin, scale=scale),
    "cosface": lambda d, n, margin, scale: CosFace(d, n, margin=margin, scale=scale),
    "cosine": lambda d, n, margin, scale: CosineSoftmax(d, n, scale=scale),
}


def build_head(name: str, embedding_dim: int, num_classes: int, margin: float, scale: float) -> CosineHead:
    """The head called ``name`` (one of :data:`phenoprint.embedder.config.HEADS`).

    Raises:
        ValueError: an unknown name.
    """
    if name not in HEAD_BUILDERS:
        raise ValueError(f"unknown head {name!r}; expected {', '.join(HEADS[:-1])} or {HEADS[-1]}")
    return HEAD_BUILDERS[name](embedding_dim, num_classes, margin, scale)


__all__ = ["HEAD_BUILDERS", "ArcFace", "CosFace", "CosineHead", "CosineSoftmax", "build_head"]
