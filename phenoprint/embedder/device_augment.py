"""Standardization, random resized crop, dihedral transforms and intensity jitter as batched tensor ops on the device.

The loader's workers then only read uint8 sites and draw each sample's random choices
(:func:`phenoprint.embedder.transforms.draw_augment`); the float work runs here, on the batch, wherever the batch
is (CUDA in training and embedding, the CPU in tests). Given the same draws, the tensors equal those of the
per-sample CPU path (:func:`~phenoprint.embedder.transforms.standardize_site`,
:func:`~phenoprint.embedder.transforms.augment`, :func:`~phenoprint.embedder.transforms.resize`) within float
tolerance: the crop and resize are the same antialiased bilinear filter as ``F.interpolate(antialias=True)``,
written as two batched matrix products so every sample has its own crop window and scale in one call.
"""

from __future__ import annotations

import torch

from phenoprint.embedder.transforms import _STD_FLOOR, dihedral


def site_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-site, per-channel mean and unbiased standard deviation of a (N, C, H, W) batch, each (N, C) float32.

    A one-pixel channel has no unbiased spread: its std is 0 (not NaN), as in ``standardize_site``.
    """
    x = images.float()
    if x.shape[-1] * x.shape[-2] <= 1:
        mean = x.flatten(2).mean(2)
        return mean, torch.zeros_like(mean)
    std, mean = torch.std_mean(x, dim=(2, 3), correction=1)
    return mean, std


def standardize_batch(
    images: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-channel standardization of a (N, C, H, W) uint8 batch (int32 for 16-bit data) to float32, on its device.

    With ``mean`` and ``std`` ((N, C): each sample's experiment statistics) those are used; without, each site is
    standardized by its own statistics. The std is floored like ``standardize_site`` so an empty channel stays
    finite.

    Raises:
        ValueError: not a 4-D uint8 (or int32) batch, or statistics of another shape than (N, C).
    """
    if images.ndim != 4 or images.dtype not in (torch.uint8, torch.int32):
        raise ValueError(
            f"expected a (N, C, H, W) uint8 (or int32) batch, got {images.dtype} of shape {tuple(images.shape)}"
        )
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither (per-site statistics)")
    if mean is None or std is None:
        mean, std = site_statistics(images)
    elif mean.shape != images.shape[:2] or std.shape != images.shape[:2]:
        raise ValueError(
            f"expected (N, C) = {tuple(images.shape[:2])} statistics, got {tuple(mean.shape)} and {tuple(std.shape)}"
        )
    m = mean.to(images.device, torch.float32)[:, :, None, None]
    s = torch.nan_to_num(std.to(images.device, torch.float32), nan=0.0).clamp(min=_STD_FLOOR)[:, :, None, None]
    return images.float().sub_(m).div_(s)


def resample_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """(N, out_size, in_size) weights that resample the window ``[start, start + length)`` of each row to
    ``out_size`` pixels with the antialiased bilinear (triangle) filter.

    The same filter, support and normalization as PyTorch's ``F.interpolate(mode="bilinear", antialias=True,
    align_corners=False)`` (and PIL's): when shrinking, the triangle widens by the scale factor, so every input
    pixel contributes and nothing aliases; when enlarging, it is plain bilinear interpolation.
    """
    start = start.to(torch.float64)[:, None, None]
    length = length.to(torch.float64)[:, None, None]
    scale = length / out_size  # input pixels per output pixel
    support = torch.where(scale >= 1.0, scale, torch.ones_like(scale))
    invscale = torch.where(scale >= 1.0, 1.0 / scale, torch.ones_like(scale))
    i = torch.arange(out_size, dtype=torch.float64, device=start.device)[None, :, None]
    center = scale * (i + 0.5)
    # the filter's taps, in window coordinates; truncation toward zero, as the C++ kernel casts
    lo = torch.clamp(torch.trunc(center - support + 0.5), min=0.0)
    hi = torch.minimum(torch.trunc(center + support + 0.5), length)
    j = torch.arange(in_size, dtype=torch.float64, device=start.device)[None, None, :] - start
    w = torch.clamp(1.0 - torch.abs((j - center + 0.5) * invscale), min=0.0)
    w = torch.where((j >= lo) & (j < hi), w, torch.zeros_like(w))
    w = w / w.sum(dim=2, keepdim=True).clamp(min=1e-12)
    return w.to(torch.float32)


def resized_crop_batch(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor, width: torch.Tensor, size: int
) -> torch.Tensor:
    """Each sample's window ``(top, left, height, width)`` of a (N, C, H, W) float batch, resized to
    ``size`` x ``size`` (antialiased bilinear), as two batched matrix products.

    Raises:
        ValueError: a window that leaves the image, or one count of windows that is not N.
    """
    n, _, h, w = x.shape
    for name, v in (("top", top), ("left", left), ("height", height), ("width", width)):
        if v.shape != (n,):
            raise ValueError(f"expected {n} values of {name}, got shape {tuple(v.shape)}")
    wy = resample_weights(top.to(x.device), height.to(x.device), h, size)  # (N, size, H)
    wx = resample_weights(left.to(x.device), width.to(x.device), w, size)  # (N, size, W)
    return wy[:, None] @ x.float() @ wx[:, None].transpose(-1, -2)


def dihedral_batch(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The ``k[n]``-th dihedral transform of each sample of a square (N, C, S, S) batch.

    ``k`` should live on the CPU: samples are grouped by transform on the host, so no device sync is needed; each
    of the (at most 8) groups is one batched rotation/flip.

    Raises:
        ValueError: a non-square batch, or one index per sample missing.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"dihedral transforms of a batch need square images, got {tuple(x.shape[-2:])}")
    if k.shape != (x.shape[0],):
        raise ValueError(f"expected {x.shape[0]} dihedral indices, got shape {tuple(k.shape)}")
    ks = k.cpu()
    out = torch.empty_like(x)
    for v in torch.unique(ks).tolist():
        rows = torch.nonzero(ks == v).flatten().to(x.device)
        out[rows] = dihedral(x[rows], int(v))
    return out


def jitter_batch(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x * gain + bias`` per sample and channel; ``gain`` and ``bias`` are (N, C)."""
    if gain.shape != x.shape[:2] or bias.shape != x.shape[:2]:
        raise ValueError(f"expected (N, C) = {tuple(x.shape[:2])} gains and biases, got {tuple(gain.shape)}")
    g = gain.to(x.device, x.dtype)[:, :, None, None]
    b = bias.to(x.device, x.dtype)[:, :, None, None]
    return x * g + b


def augment_batch(
    images: torch.Tensor,
    crop: torch.Tensor,
    k: torch.Tensor,
    gain: torch.Tensor,
    bias: torch.Tensor,
    size: int,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> torch.Tensor:
    """Training inputs from a uint8 batch: standardize, crop and resize, dihedral transform, jitter, per sample.

    Args:
        images: (N, C, H, W) uint8 sites.
        crop: (N, 4) int windows ``(top, left, height, width)``.
        k: (N,) dihedral indices (on the CPU, see :func:`dihedral_batch`).
        gain: (N, C) multiplicative jitter.
        bias: (N, C) additive jitter.
        size: output side.
        mean: (N, C) experiment statistics, with ``std``; None: per-site statistics.
        std: (N, C).

    Returns:
        (N, C, size, size) float32 on the device of ``images``.
    """
    if crop.shape != (images.shape[0], 4):
        raise ValueError(f"expected ({images.shape[0]}, 4) crop windows, got shape {tuple(crop.shape)}")
    x = standardize_batch(images, mean, std)
    crop = crop.to(x.device)
    x = resized_crop_batch(x, crop[:, 0], crop[:, 1], crop[:, 2], crop[:, 3], size)
    return jitter_batch(dihedral_batch(x, k), gain, bias)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """A (N, C, H, W) float batch resized to ``size`` x ``size`` like ``transforms.resize``; no-op at that size."""
    n, _, h, w = x.shape
    if (h, w) == (size, size):
        return x
    zeros = torch.zeros(n, dtype=torch.int64, device=x.device)
    return resized_crop_batch(x, zeros, zeros, torch.full_like(zeros, h), torch.full_like(zeros, w), size)
