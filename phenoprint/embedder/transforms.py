"""Input standardization and training augmentations, with explicit random generators so runs are reproducible."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

#: Keeps the division finite on an empty (constant) channel.
_STD_FLOOR = 1.0


def standardize_site(
    site: np.ndarray | torch.Tensor, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> torch.Tensor:
    """Per-channel standardization of a (C, H, W) uint8 site to float32.

    By default each site is standardized by its own per-channel mean and standard deviation, which
    removes most gain/offset differences between batches before the network sees them. With ``mean`` and
    ``std`` (per-channel, e.g. of a whole experiment) those are used instead.

    Raises:
        ValueError: not a (C, H, W) array.
    """
    array = np.asarray(site)
    if array.ndim != 3:
        raise ValueError(f"expected a (C, H, W) site, got shape {array.shape}")
    x = torch.from_numpy(np.ascontiguousarray(array)).float()
    if mean is not None and std is not None:
        m = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        s = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    elif array.dtype == np.uint8 and array[0].size > 1:
        m, s = _uint8_channel_stats(array)
    else:
        m = x.mean(dim=(1, 2), keepdim=True)
        # one pixel has no (unbiased) spread: torch's std would be NaN; a constant channel becomes all zeros
        s = x.std(dim=(1, 2), keepdim=True) if array[0].size > 1 else torch.zeros_like(m)
    return x.sub_(m).div_(torch.nan_to_num(s, nan=0.0).clamp(min=_STD_FLOOR))


_LEVELS = np.arange(256, dtype=np.float64)
_LEVELS_SQUARED = _LEVELS**2


def _uint8_channel_stats(site: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of a uint8 site from its 256-bin histograms: the same numbers as
    torch's reductions over the float pixels, about 4x faster on one core (the data loader's hot path)."""
    flat = site.reshape(site.shape[0], -1)
    n = flat.shape[1]
    hist = np.stack([np.bincount(channel, minlength=256) for channel in flat]).astype(np.float64)
    mean = hist @ _LEVELS / n
    var = (hist @ _LEVELS_SQUARED - n * mean**2) / (n - 1)
    std = np.sqrt(np.maximum(var, 0.0))
    return _per_channel(mean), _per_channel(std)


def _per_channel(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.float32)).view(-1, 1, 1)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 dihedral transforms (k in 0-7: rotation by 90*(k % 4), then a flip when k >= 4)."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral index must lie in 0-7, got {k}")
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (C, H, W) or (N, C, H, W) to ``size`` x ``size`` (antialiased bilinear); no-op at that size."""
    if x.shape[-2:] == (size, size):
        return x
    batched = x if x.ndim == 4 else x.unsqueeze(0)
    out = F.interpolate(batched, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out if x.ndim == 4 else out.squeeze(0)


@dataclass(frozen=True)
class AugmentDraw:
    """The random choices of one :func:`augment` call, drawn by :func:`draw_augment`.

    Drawn once per sample, wherever the pixels are then transformed: in the loader (:func:`augment`) or on the
    device, batched (``phenoprint.embedder.device_augment``); the same draws give the same tensors.
    """

    top: int  # first row of the square crop
    left: int  # first column of the crop
    side: int  # side of the crop in input pixels
    dihedral: int  # dihedral transform index, 0-7 (see :func:`dihedral`)
    gain: np.ndarray  # (C,) per-channel multiplicative jitter, in 1 ± jitter
    bias: np.ndarray  # (C,) per-channel additive jitter, in ± jitter


def draw_augment(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    crop_scale: tuple[float, float] = (0.6, 1.0),
    jitter: float = 0.1,
) -> AugmentDraw:
    """Draw the random choices of :func:`augment` for a (C, H, W) site, in its fixed order.

    Raises:
        ValueError: ``crop_scale`` outside 0 < low <= high <= 1.
    """
    c, h, w = shape
    lo, hi = crop_scale
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
    side = round(float(np.sqrt(rng.uniform(lo, hi) * h * w)))
    side = max(1, min(side, h, w))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    k = int(rng.integers(8))
    gain = rng.uniform(1.0 - jitter, 1.0 + jitter, size=c)
    bias = rng.uniform(-jitter, jitter, size=c)
    return AugmentDraw(top, left, side, k, gain, bias)


def augment(
    x: torch.Tensor,
    rng: np.random.Generator,
    size: int,
    crop_scale: tuple[float, float] = (0.6, 1.0),
    jitter: float = 0.1,
) -> torch.Tensor:
    """A random resized crop (square, area fraction in ``crop_scale``), a random dihedral transform, and
    per-channel intensity jitter ``x * a + b`` with ``a`` in 1 ± jitter and ``b`` in ± jitter.

    Args:
        x: a standardized (C, H, W) float site.
        rng: the generator every random choice is drawn from (through :func:`draw_augment`).
        size: output side in pixels.
    """
    d = draw_augment(rng, tuple(x.shape), crop_scale, jitter)  # type: ignore[arg-type]
    x = TF.resized_crop(x, d.top, d.left, d.side, d.side, [size, size], antialias=True)
    x = dihedral(x, d.dihedral)
    c = x.shape[0]
    gain = torch.as_tensor(d.gain, dtype=x.dtype).view(c, 1, 1)
    bias = torch.as_tensor(d.bias, dtype=x.dtype).view(c, 1, 1)
    return x * gain + bias
