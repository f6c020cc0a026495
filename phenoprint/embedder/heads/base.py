"""Shared base of the margin heads: cosine logits between normalized embeddings and class weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosineHead(nn.Module):
    """Cosine-similarity classifier with one hook, :meth:`target_logit`, for margin variants.

    Logits are ``s * cos(theta_j)`` for every class j, where ``theta_j`` is the angle between the
    L2-normalized embedding and the L2-normalized weight of class j. During training a subclass may
    change the target class's cosine (the margin); at inference all classes are treated alike.

    Args:
        embedding_dim: width of the incoming embedding.
        num_classes: number of classes.
        scale: the logit scale ``s``.
        learn_scale: learn ``s`` (as its logarithm, so it stays positive) instead of fixing it.
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 30.0, learn_scale: bool = False) -> None:
        super().__init__()
        if embedding_dim <= 0 or num_classes <= 0:
            raise ValueError(f"embedding_dim and num_classes must be positive, got {embedding_dim}, {num_classes}")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        log_scale = torch.tensor(float(scale)).log()
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, C) cosines between embeddings and class weights, in [-1, 1]."""
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def target_logit(self, cos_target: torch.Tensor) -> torch.Tensor:
        """The hook: the (unscaled) logit of each sample's target class from its cosine. Identity here."""
        return cos_target

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled logits; with ``labels`` the target column goes through :meth:`target_logit`.

        Raises:
            ValueError: a label outside ``[0, num_classes)``.
        """
        cos = self.cosine(embeddings)
        if labels is not None:
            _check_labels(labels, cos.shape[1])
            rows = torch.arange(cos.shape[0], device=cos.device)
            target = self.target_logit(cos[rows, labels])
            cos = cos.clone()
            cos[rows, labels] = target
        return cos * self.scale


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """Refuse labels outside ``[0, num_classes)``.

    On the CPU the check reads the range and raises a ValueError that names it. On an accelerator reading it
    back would make the host wait for the device in the middle of every training step (and break the graph
    under ``torch.compile``), so there the check is queued on the device (``torch._assert_async``) and fails
    at the next synchronisation instead.
    """
    if not labels.numel():
        return
    if labels.device.type == "cpu":
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}), got range [{low}, {high}]")
        return
    torch._assert_async(((labels >= 0) & (labels < num_classes)).all(), "labels must lie in [0, num_classes)")
