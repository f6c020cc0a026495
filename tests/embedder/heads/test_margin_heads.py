"""Margin heads against a per-element loop re-derivation from the papers' formulas."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
import torch.nn.functional as F

from phenoprint.embedder.config import HEADS, HeadName
from phenoprint.embedder.heads import HEAD_BUILDERS, ArcFace, CosFace, CosineHead, CosineSoftmax, build_head


def _reference_logits(emb, weight, labels, scale, target_fn):
    out = torch.zeros(emb.shape[0], weight.shape[0], dtype=torch.float64)
    for i in range(emb.shape[0]):
        e = emb[i].double()
        e = e / math.sqrt(float((e * e).sum()))
        for j in range(weight.shape[0]):
            w = weight[j].double()
            w = w / math.sqrt(float((w * w).sum()))
            cos = float((e * w).sum())
            out[i, j] = scale * (target_fn(cos) if labels is not None and j == int(labels[i]) else cos)
    return out


def _arcface_target(m):
    def f(cos):
        theta = math.acos(max(-1.0, min(1.0, cos)))
        if theta + m <= math.pi:
            return math.cos(theta + m)
        return cos - m * math.sin(m)  # the paper code's monotonic continuation past pi

    return f


@pytest.mark.parametrize("margin", [0.0, 0.2, 0.5])
def test_arcface_matches_reference(margin: float) -> None:
    torch.manual_seed(0)
    head = ArcFace(8, 5, margin_rad=margin, scale=30.0)
    emb = torch.randn(7, 8)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    got = head(emb, labels).double()
    want = _reference_logits(emb, head.weight.detach(), labels, 30.0, _arcface_target(margin))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_arcface_uses_the_linear_continuation_beyond_pi_minus_m() -> None:
    head = ArcFace(2, 2, margin_rad=0.5, scale=1.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    emb = torch.tensor([[-1.0, 0.05]])  # almost opposite class 0: theta close to pi
    got = float(head(emb, torch.tensor([0])).detach()[0, 0])
    cos = float(F.normalize(emb, dim=1)[0, 0])
    assert got == pytest.approx(_arcface_target(0.5)(cos), abs=1e-5)


@pytest.mark.parametrize("margin", [0.0, 0.35])
def test_cosface_matches_reference(margin: float) -> None:
    torch.manual_seed(1)
    head = CosFace(6, 4, margin=margin, scale=20.0)
    emb = torch.randn(5, 6)
    labels = torch.tensor([3, 2, 1, 0, 3])
    want = _reference_logits(emb, head.weight.detach(), labels, 20.0, lambda c: c - margin)
    torch.testing.assert_close(head(emb, labels).double(), want, atol=1e-4, rtol=1e-4)


def test_cosine_softmax_has_no_margin_and_learns_its_scale() -> None:
    torch.manual_seed(2)
    head = CosineSoftmax(6, 4, scale=16.0)
    emb = torch.randn(5, 6)
    labels = torch.tensor([3, 2, 1, 0, 3])
    want = _reference_logits(emb, head.weight.detach(), labels, 16.0, lambda c: c)
    torch.testing.assert_close(head(emb, labels).double(), want, atol=1e-4, rtol=1e-4)
    assert any(p is head.log_scale for p in head.parameters())
    F.cross_entropy(head(emb, labels), labels).backward()
    assert head.log_scale.grad is not None


def test_inference_logits_ignore_the_margin() -> None:
    torch.manual_seed(3)
    head = ArcFace(4, 3, margin_rad=0.4)
    emb = torch.randn(2, 4)
    torch.testing.assert_close(head(emb), head.cosine(emb) * 30.0)


@pytest.mark.parametrize("head_cls", [ArcFace, CosFace, CosineSoftmax])
def test_gradients_stay_finite_at_cos_one(head_cls: type[CosineHead]) -> None:
    head = head_cls(3, 2)
    emb = head.weight.detach()[:1].clone().requires_grad_(True)  # cos = 1 with class 0: theta = 0
    loss = F.cross_entropy(head(emb, torch.tensor([0])), torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(emb.grad).all()
    assert torch.isfinite(head.weight.grad).all()


def test_labels_out_of_range_are_refused() -> None:
    head = CosFace(4, 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        head(torch.randn(2, 4), torch.tensor([0, 3]))


def test_build_head_by_name() -> None:
    assert isinstance(build_head("arcface", 4, 3, 0.2, 30.0), ArcFace)
    assert isinstance(build_head("cosface", 4, 3, 0.2, 30.0), CosFace)
    assert isinstance(build_head("cosine", 4, 3, 0.2, 30.0), CosineSoftmax)
    with pytest.raises(ValueError, match="arcface, cosface or cosine"):
        build_head("sphereface", 4, 3, 0.2, 30.0)
    with pytest.raises(ValueError, match="margin_rad"):
        ArcFace(4, 3, margin_rad=2.0)


def test_the_label_check_reads_nothing_back_from_an_accelerator(monkeypatch) -> None:
    """On a device the range check is queued (``torch._assert_async``), not read back: a read would make the host
    wait for the device in every training step. A meta tensor stands in for a device one (it has no values to read:
    ``int()`` of it raises)."""
    from phenoprint.embedder.heads.base import _check_labels

    queued: list[tuple[torch.Tensor, str]] = []
    monkeypatch.setattr(torch, "_assert_async", lambda cond, msg: queued.append((cond, msg)))
    labels = torch.empty(8, dtype=torch.long, device="meta")
    _check_labels(labels, 5)
    assert len(queued) == 1
    assert queued[0][0].device.type == "meta"
    assert queued[0][0].dtype == torch.bool
    assert "labels must lie in [0, num_classes)" in queued[0][1]
    with pytest.raises(ValueError, match=r"got range \[0, 5\]"):
        _check_labels(torch.tensor([0, 5]), 5)  # the CPU path still names the range


def test_one_registry_of_heads() -> None:
    """The ``HeadName`` type, the builder and the command line's choices name the same heads, in one order."""
    from phenoprint.cli import build_parser

    assert get_args(HeadName) == HEADS
    assert tuple(HEAD_BUILDERS) == HEADS
    train = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--head", "cosface"])
    assert train.head == "cosface"
    (action,) = [a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions if a.dest == "head"]
    assert tuple(action.choices) == HEADS
    assert all(name in action.help for name in HEADS)
