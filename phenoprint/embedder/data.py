"""Well datasets over a :class:`~phenoprint.data.source.SiteSource`, and a sampler that fills batches from one group."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from phenoprint.data.layout import CELL_TYPES, WELL_KEY
from phenoprint.data.source import SiteSource
from phenoprint.embedder.transforms import augment, resize, standardize_site

log = logging.getLogger(__name__)

ChannelStats = Mapping[str, tuple[np.ndarray, np.ndarray]]


def well_table(metadata: pd.DataFrame) -> pd.DataFrame:
    """One row per well of a canonical site table, with a ``sites`` column (the tuple of its site numbers).

    Raises:
        ValueError: the table lacks the canonical columns.
    """
    needed = {*WELL_KEY, "site", "cell_type", "well_type", "sirna_id"}
    missing = sorted(needed - set(metadata.columns))
    if missing:
        raise ValueError(f"site table lacks column(s) {', '.join(missing)}; expected read_metadata() output")
    sites = metadata.groupby(list(WELL_KEY), sort=False)["site"].agg(lambda s: tuple(sorted(int(v) for v in s)))
    wells = metadata.drop_duplicates(list(WELL_KEY)).drop(columns=["site"]).set_index(list(WELL_KEY))
    wells["sites"] = sites
    return wells.reset_index()


class WellDataset(Dataset):
    """Wells as standardized image tensors.

    Training items (``train=True``) are one random site of the well, augmented; the dataset is indexed by
    ``(epoch, i)`` so every random choice follows from ``(seed, epoch, i)`` whatever the worker layout.
    Inference items (``train=False``) hold every site of the well, resized to ``image_size`` (optionally
    under one dihedral transform, for test-time augmentation).

    Args:
        source: where pixels come from (PNGs or a pack).
        wells: :func:`well_table` rows.
        image_size: side of the network input.
        train: training items (one random augmented site) or inference items (all sites).
        seed: the run's seed.
        augment: apply augmentations in training.
        crop_scale: area range of the random resized crop.
        jitter: per-channel intensity jitter amplitude.
        channel_stats: per-experiment (mean, std) per channel; None: standardize each site by itself.
        cell_types: order of the cell-type index returned with each item.
    """

    def __init__(
        self,
        source: SiteSource,
        wells: pd.DataFrame,
        *,
        image_size: int,
        train: bool,
        seed: int = 0,
        augment: bool = True,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        jitter: float = 0.1,
        channel_stats: ChannelStats | None = None,
        cell_types: Sequence[str] = CELL_TYPES,
    ) -> None:
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
        self.source = source
        self.wells = wells.reset_index(drop=True)
        self.image_size = image_size
        self.train = train
        self.seed = seed
        self.augment = augment
        self.crop_scale = crop_scale
        self.jitter = jitter
        self.channel_stats = channel_stats
        self._cell_index = {c: i for i, c in enumerate(cell_types)}
        self._key = self.wells[list(WELL_KEY)].to_numpy(dtype=object)
        self._sites = self.wells["sites"].tolist()
        self._labels = self.wells["sirna_id"].fillna(-1).to_numpy(dtype=np.int64)
        self._cells = np.array([self._cell_index.get(c, -1) for c in self.wells["cell_type"]], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.wells)

    def _standardized(self, i: int, site: int) -> torch.Tensor:
        exp, plate, well = self._key[i]
        raw = self.source.load(exp, int(plate), well, int(site))
        if self.channel_stats is None:
            return standardize_site(raw)
        mean, std = self.channel_stats[exp]
        return standardize_site(raw, mean, std)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if self.train:
            epoch, i = key if isinstance(key, tuple) else (0, key)
            rng = np.random.default_rng([self.seed, epoch, i])
            sites = self._sites[i]
            x = self._standardized(i, sites[int(rng.integers(len(sites)))])
            if self.augment:
                x = augment(x, rng, self.image_size, self.crop_scale, self.jitter)
            else:
                x = resize(x, self.image_size)
            images = x
        else:
            i = int(key[1] if isinstance(key, tuple) else key)
            images = torch.stack([resize(self._standardized(i, s), self.image_size) for s in self._sites[i]])
        return {"image": images, "label": int(self._labels[i]), "cell_type": int(self._cells[i]), "index": i}


def collate_train(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack training items (one image each)."""
    return {
        "image": torch.stack([it["image"] for it in items]),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.int64),
        "cell_type": torch.tensor([it["cell_type"] for it in items], dtype=torch.int64),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
    }


def collate_sites(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Concatenate the sites of several wells, remembering which well each site came from."""
    images = torch.cat([it["image"] for it in items])
    owner = torch.cat([torch.full((len(it["image"]),), k, dtype=torch.int64) for k, it in enumerate(items)])
    return {
        "image": images,
        "well_of_site": owner,
        "cell_type": torch.tensor([it["cell_type"] for it in items], dtype=torch.int64)[owner],
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
    }


class GroupBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches whose wells all come from one group (experiment or plate), in a seeded random order.

    With per-group batches, batch-norm statistics are those of one experiment, which the 5th place of the
    RxRx1 competition reported to be worth about 20 points of accuracy. A group smaller than a batch, or
    the remainder of a group, is filled up with other wells of the same group drawn at random, so every
    batch is full and single-group. Under DDP each rank takes every ``world_size``-th batch.

    Args:
        groups: group label of each dataset item (None: one group, i.e. plain shuffling).
        batch_size: items per batch.
        seed: base seed; the order of epoch e follows from ``(seed, e)``.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(
        self,
        groups: Sequence[object] | np.ndarray | None,
        n_items: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if n_items < 1:
            raise ValueError("no items to sample from")
        codes = np.zeros(n_items, dtype=np.int64) if groups is None else pd.factorize(np.asarray(groups))[0]
        if len(codes) != n_items:
            raise ValueError(f"{len(codes)} group labels for {n_items} items")
        self.members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        total = sum(math.ceil(len(m) / batch_size) for m in self.members)
        self._per_rank = max(1, total // world_size)
        self.set_epoch(0)

    def set_epoch(
        self, epoch: int, start_batch: int = 0, *, through: int | None = None, per_epoch: int | None = None
    ) -> None:
        """Choose the epoch (its order follows from the seed) and skip its first ``start_batch`` batches.

        With ``through``, one pass runs on through the epochs after it up to ``through - 1``, each cut to its first
        ``per_epoch`` batches: the training loop uses one loader iterator for the whole run, so the workers keep
        prefetching across epoch boundaries instead of draining and refilling at each one.
        """
        self.epoch = epoch
        self.start_batch = start_batch
        self.through = epoch + 1 if through is None else max(through, epoch + 1)
        self.per_epoch = self._per_rank if per_epoch is None else min(per_epoch, self._per_rank)

    @property
    def batches_per_epoch(self) -> int:
        """Batches of one epoch on this rank."""
        return self._per_rank

    def batches(self, epoch: int) -> list[np.ndarray]:
        """Every batch of an epoch, before splitting among ranks."""
        rng = np.random.default_rng([self.seed, epoch, 7])
        out = []
        for m in self.members:
            order = rng.permutation(m)
            n_batches = math.ceil(len(order) / self.batch_size)
            short = n_batches * self.batch_size - len(order)
            if short:
                order = np.concatenate([order, rng.choice(m, size=short, replace=len(m) < short)])
            out += np.split(order, n_batches)
        return [out[i] for i in rng.permutation(len(out))]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch in range(self.epoch, self.through):
            mine = self.batches(epoch)[self.rank :: self.world_size][: self.per_epoch]
            for b in mine[self.start_batch if epoch == self.epoch else 0 :]:
                yield [(epoch, int(i)) for i in b]

    def __len__(self) -> int:
        return (self.through - self.epoch) * self.per_epoch - self.start_batch


def experiment_channel_stats(
    source: SiteSource, wells: pd.DataFrame, max_sites: int = 64, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-experiment per-channel (mean, std) of the raw pixels, from up to ``max_sites`` sites each."""
    rng = np.random.default_rng(seed)
    stats = {}
    for exp, sub in wells.groupby("experiment", sort=True):
        picks = sub.iloc[rng.permutation(len(sub))[:max_sites]]
        planes = [
            source.load(exp, int(r.plate), r.well, int(r.sites[0])).astype(np.float64) for r in picks.itertuples()
        ]
        stack = np.stack(planes)  # (n, C, H, W)
        stats[str(exp)] = (stack.mean(axis=(0, 2, 3)), stack.std(axis=(0, 2, 3)))
    return stats
