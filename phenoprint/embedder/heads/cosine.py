"""Cosine softmax: normalized weights and a learned scale, no margin."""

from __future__ import annotations

from phenoprint.embedder.heads.base import CosineHead


class CosineSoftmax(CosineHead):
    """Logits ``s * cos(theta_j)`` with ``s`` learned.

    Wang et al., "NormFace: L2 Hypersphere Embedding for Face Verification", ACM MM 2017, showed that a
    normalized softmax needs a scale and that it can be learned.
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 16.0) -> None:
        super().__init__(embedding_dim, num_classes, scale, learn_scale=True)
