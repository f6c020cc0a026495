"""Margin heads: a cosine base with one hook, and ArcFace / CosFace / cosine softmax on it."""

from __future__ import annotations

from phenoprint.embedder.heads.arcface import ArcFace
from phenoprint.embedder.heads.base import CosineHead
from phenoprint.embedder.heads.cosface import CosFace
from phenoprint.embedder.heads.cosine import CosineSoftmax


def build_head(name: str, embedding_dim: int, num_classes: int, margin: float, scale: float) -> CosineHead:
    """The head called ``name`` (arcface | cosface | cosine).

    Raises:
        ValueError: an unknown name.
    """
    if name == "arcface":
        return ArcFace(embedding_dim, num_classes, margin_rad=margin, scale=scale)
    if name == "cosface":
        return CosFace(embedding_dim, num_classes, margin=margin, scale=scale)
    if name == "cosine":
        return CosineSoftmax(embedding_dim, num_classes, scale=scale)
    raise ValueError(f"unknown head {name!r}; expected arcface, cosface or cosine")


__all__ = ["ArcFace", "CosFace", "CosineHead", "CosineSoftmax", "build_head"]
