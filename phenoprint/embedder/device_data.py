"""Well datasets that deliver uint8 sites and each sample's random draws, finished on the device in batches.

With ``preprocess_on="device"`` (the default on CUDA) the loader's workers read a site (a memory-mapped copy
from a pack, or a PNG decode) and draw the sample's augmentation from the same seeded generator as the CPU
path; the batch crosses the bus as uint8 in pinned memory (a quarter of the float32 bytes), and
:class:`TrainPrepare` / :class:`InferencePrepare` standardize, crop, resize, transform and jitter it there
(``phenoprint.embedder.device_augment``), one batch ahead of the compute (``phenoprint.embedder.prefetch``).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import torch

from phenoprint.embedder.data import WellDataset
from phenoprint.embedder.device_augment import augment_batch, resize_batch, standardize_batch
from phenoprint.embedder.transforms import draw_augment

log = logging.getLogger(__name__)

PreprocessOn = Literal["auto", "loader", "device"]
PREPROCESS_CHOICES = ("auto", "loader", "device")


def preprocess_on_device(setting: str, device: torch.device) -> bool:
    """Whether standardization and augmentation run on ``device`` (batched) rather than in the loader's workers.

    ``auto`` picks the device on CUDA, where the workers' float work was the wall, and the workers on the CPU,
    where they run in parallel beside the network; ``device`` on a CPU runs the batched code there (tests).

    Raises:
        ValueError: another setting than auto, loader or device.
    """
    if setting not in PREPROCESS_CHOICES:
        raise ValueError(f"preprocess_on must be one of {', '.join(PREPROCESS_CHOICES)}; got {setting!r}")
    return setting == "device" or (setting == "auto" and device.type == "cuda")


class RawWellDataset(WellDataset):
    """:class:`~phenoprint.embedder.data.WellDataset` items left as uint8, with what the device needs to finish
    them: the same site choice and augmentation draws as the loader path for the same ``(seed, epoch, i)``.

    Training items: ``image`` (C, H, W) uint8, ``crop`` (top, left, height, width), ``dihedral``, ``gain`` and
    ``bias`` (C,). Inference items: ``image`` (S, C, H, W) uint8. Both carry ``mean`` and ``std`` per site when
    ``channel_stats`` is given (per-experiment normalization).
    """

    def _raw(self, i: int, site: int) -> np.ndarray:
        exp, plate, well = self._key[i]
        raw = self.source.load(exp, int(plate), well, int(site))
        # 16-bit sites cross the bus as int32: torch's uint16 is a storage type with few kernels (half of float32)
        return np.ascontiguousarray(raw if raw.dtype == np.uint8 else raw.astype(np.int32))

    def _stats(self, i: int, channels: int) -> dict[str, torch.Tensor]:
        """The experiment's (C,) mean and std as float32, as ``standardize_site`` applies them; {} per-site."""
        if self.channel_stats is None:
            return {}
        mean, std = self.channel_stats[self._key[i][0]]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"channel statistics of {self._key[i][0]} have {len(mean)} values for {channels} channels")
        return {
            "mean": torch.as_tensor(np.asarray(mean), dtype=torch.float32),
            "std": torch.as_tensor(np.asarray(std), dtype=torch.float32),
        }

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if self.train:
            epoch, i = key if isinstance(key, tuple) else (0, key)
            rng = np.random.default_rng([self.seed, epoch, i])
            sites = self._sites[i]
            raw = self._raw(i, sites[int(rng.integers(len(sites)))])
            c, h, w = raw.shape
            if self.augment:
                d = draw_augment(rng, (c, h, w), self.crop_scale, self.jitter)
                crop, k, gain, bias = (d.top, d.left, d.side, d.side), d.dihedral, d.gain, d.bias
            else:
                crop, k, gain, bias = (0, 0, h, w), 0, np.ones(c), np.zeros(c)
            item: dict[str, Any] = {
                "image": torch.from_numpy(raw),
                "crop": torch.tensor(crop, dtype=torch.int64),
                "dihedral": k,
                "gain": torch.as_tensor(gain, dtype=torch.float32),
                "bias": torch.as_tensor(bias, dtype=torch.float32),
                **self._stats(i, c),
            }
        else:
            i = int(key[1] if isinstance(key, tuple) else key)
            images = torch.from_numpy(np.stack([self._raw(i, s) for s in self._sites[i]]))
            stats = self._stats(i, images.shape[1])
            item = {"image": images, **{k: v.expand(len(images), -1) for k, v in stats.items()}}  # one row per site
        item.update({"label": int(self._labels[i]), "cell_type": int(self._cells[i]), "index": i})
        return item


def _same_shape(images: list[torch.Tensor]) -> None:
    shapes = sorted({tuple(x.shape[-3:]) for x in images})
    if len(shapes) > 1:
        raise ValueError(
            f"sites of different sizes {shapes} in one batch: device-side preprocessing moves whole uint8 sites, "
            "which must share a size; pack the data at one size (phenoprint pack --size) or pass --preprocess-on loader"
        )


def collate_raw_train(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack uint8 training items and their draws (the DataLoader then pins them).

    Raises:
        ValueError: sites of different sizes.
    """
    _same_shape([it["image"] for it in items])
    out = {
        "image": torch.stack([it["image"] for it in items]),
        "crop": torch.stack([it["crop"] for it in items]),
        "dihedral": torch.tensor([it["dihedral"] for it in items], dtype=torch.int64),
        "gain": torch.stack([it["gain"] for it in items]),
        "bias": torch.stack([it["bias"] for it in items]),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.int64),
        "cell_type": torch.tensor([it["cell_type"] for it in items], dtype=torch.int64),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
    }
    if "mean" in items[0]:
        out["mean"] = torch.stack([it["mean"] for it in items])
        out["std"] = torch.stack([it["std"] for it in items])
    return out


def collate_raw_sites(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Concatenate the uint8 sites of several wells, remembering which well each came from (as ``collate_sites``).

    Raises:
        ValueError: sites of different sizes.
    """
    _same_shape([it["image"] for it in items])
    images = torch.cat([it["image"] for it in items])
    owner = torch.cat([torch.full((len(it["image"]),), k, dtype=torch.int64) for k, it in enumerate(items)])
    out = {
        "image": images,
        "well_of_site": owner,
        "cell_type": torch.tensor([it["cell_type"] for it in items], dtype=torch.int64)[owner],
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
    }
    if "mean" in items[0]:
        out["mean"] = torch.cat([it["mean"] for it in items])
        out["std"] = torch.cat([it["std"] for it in items])
    return out


def _stats_on(batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if "mean" not in batch:
        return None, None
    return batch["mean"].to(device, non_blocking=True), batch["std"].to(device, non_blocking=True)


class TrainPrepare:
    """``prepare`` of a :class:`~phenoprint.embedder.prefetch.DevicePrefetcher` over :func:`collate_raw_train`
    batches: the copy to the device and every float operation of the training input, batched there.

    Args:
        image_size: side of the network input.
        channels_last: hand the images out in NHWC memory format (CUDA).
    """

    def __init__(self, image_size: int, channels_last: bool = False) -> None:
        self.image_size = image_size
        self.channels_last = channels_last

    def __call__(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        images = batch["image"].to(device, non_blocking=True)
        x = augment_batch(
            images,
            batch["crop"].to(device, non_blocking=True),
            batch["dihedral"],  # stays on the host: samples are grouped by transform without a device sync
            batch["gain"].to(device, non_blocking=True),
            batch["bias"].to(device, non_blocking=True),
            self.image_size,
            *_stats_on(batch, device),
        )
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return {
            "image": x,
            "label": batch["label"].to(device, non_blocking=True),
            "cell_type": batch["cell_type"].to(device, non_blocking=True),
            "index": batch["index"],
        }


class InferencePrepare:
    """``prepare`` over :func:`collate_raw_sites` batches: copy, standardize and resize on the device; the site-to-well
    bookkeeping (``well_of_site``, ``index``) stays on the host where the caller uses it."""

    def __init__(self, image_size: int, channels_last: bool = False) -> None:
        self.image_size = image_size
        self.channels_last = channels_last

    def __call__(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        images = batch["image"].to(device, non_blocking=True)
        x = resize_batch(standardize_batch(images, *_stats_on(batch, device)), self.image_size)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return {**batch, "image": x, "cell_type": batch["cell_type"].to(device, non_blocking=True)}
