"""Embedding wells with a trained model: both sites averaged, optional dihedral TTA and per-experiment BN adaptation.

Kept as one module although long: loading a run, BN adaptation and embedding share the loaders and the TTA forward.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from phenoprint.data.source import SiteSource
from phenoprint.embedder.checkpoint import MODEL_FILE, RUN_FILE, fingerprint, load_weights, read_run
from phenoprint.embedder.config import TrainConfig, check_channels
from phenoprint.embedder.data import ChannelStats, WellDataset, collate_sites, experiment_channel_stats
from phenoprint.embedder.device_data import InferencePrepare, RawWellDataset, collate_raw_sites, preprocess_on_device
from phenoprint.embedder.distributed import resolve_device
from phenoprint.embedder.model import Embedder
from phenoprint.embedder.prefetch import DevicePrefetcher
from phenoprint.embedder.transforms import dihedral, resize, standardize_site
from phenoprint.errors import CheckpointError

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A finished run's embedder, ready for inference."""

    embedder: Embedder
    config: TrainConfig
    fingerprint: str
    run_dir: Path
    device: torch.device
    channel_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # per-experiment, from training
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # one forward at a time

    @property
    def embedding_dim(self) -> int:
        return self.config.model.embedding_dim

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def cell_type_index(self, cell_type: str | None) -> int:
        """Index of a cell type in the model's one-hot order (-1 when unknown)."""
        names = self.config.model.cell_types
        return names.index(cell_type) if cell_type in names else -1

    def embed_sites(
        self,
        sites: np.ndarray | Sequence[np.ndarray],
        cell_type: str | None = None,
        tta: int = 1,
        channel_stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embed the sites of one well held in memory; see :meth:`embed_batch`.

        Returns:
            The well's unit vector (d,) and the per-site unit vectors (S, d).
        """
        out = self.embed_batch([WellImages(np.asarray(sites), cell_type, channel_stats)], tta=tta)[0]
        return out.well, out.sites

    @torch.no_grad()
    def embed_batch(self, wells: Sequence[WellImages], tta: int = 1) -> list[WellVectors]:
        """Embed several wells held in memory in one forward pass (the HTTP service's micro-batches).

        Each site is standardized like in training (by itself, or by its experiment's channel statistics
        when the model was trained that way), resized to the model's input size, embedded (averaged over
        ``tta`` dihedral transforms); a well's vector is the normalized mean of its sites'. Wells that carry
        an experiment's adapted batch-norm statistics are embedded with them (see :func:`adapt_batchnorm`).

        Raises:
            ValueError: a well without sites, sites that are not (C, H, W) with the model's channel count, a
                missing cell type for a cell-type-context model, or missing channel statistics for a model
                trained with per-experiment normalization.
        """
        if not wells:
            return []
        images, cells, owner = [], [], []
        for k, w in enumerate(wells):
            sites = np.asarray(w.sites)
            if sites.ndim != 4 or sites.shape[0] == 0 or sites.shape[1] != self.config.model.in_chans:
                raise ValueError(
                    f"expected (S, {self.config.model.in_chans}, H, W) sites with S >= 1, got shape {sites.shape}"
                )
            if self.config.normalization == "experiment" and w.channel_stats is None:
                raise ValueError(
                    "this model standardizes images by per-experiment channel statistics: pass the experiment's "
                    "(mean, std), e.g. from its index manifest"
                )
            mean, std = (None, None)
            if self.config.normalization == "experiment" and w.channel_stats is not None:
                mean, std = w.channel_stats
            for site in sites:
                images.append(resize(standardize_site(site, mean, std), self.image_size))
                owner.append(k)
            if self.config.model.cell_type_context:
                idx = self.cell_type_index(w.cell_type)
                if idx < 0:
                    raise ValueError(
                        f"this model needs a cell type among {self.config.model.cell_types}, got {w.cell_type!r}"
                    )
                cells += [idx] * len(sites)
        ct = torch.tensor(cells, dtype=torch.int64) if self.config.model.cell_type_context else None
        owners = torch.tensor(owner)
        stacked = torch.stack(images)
        per_site = torch.empty(len(images), self.embedding_dim)
        groups: dict[tuple[int, int], list[int]] = {}  # wells sharing batch-norm statistics and TTA run together
        for k, w in enumerate(wells):
            groups.setdefault((id(w.bn_state), w.tta or tta), []).append(k)
        with self._lock:
            for (_, group_tta), members in groups.items():
                rows = torch.isin(owners, torch.tensor(members))
                with using_batchnorm_state(self.embedder, wells[members[0]].bn_state):
                    per_site[rows] = embed_tensor(
                        self.embedder, stacked[rows], None if ct is None else ct[rows], self.device, tta=group_tta
                    )
        out = []
        for k in range(len(wells)):
            mine = per_site[owners == k]
            well = F.normalize(mine.mean(0, keepdim=True), dim=1)[0]
            out.append(WellVectors(well.numpy(), mine.numpy()))
        return out


@dataclass(frozen=True)
class WellImages:
    """One well's sites held in memory, for :meth:`LoadedModel.embed_batch`."""

    sites: np.ndarray  # (S, C, H, W) uint8
    cell_type: str | None = None  # needed by cell-type-context models
    channel_stats: tuple[np.ndarray, np.ndarray] | None = None  # (mean, std) per channel, per-experiment models
    bn_state: Mapping[str, np.ndarray] | None = None  # the experiment's adapted batch-norm statistics, if any
    tta: int | None = None  # dihedral transforms for this well; None: the ``tta`` of the call


@dataclass(frozen=True)
class WellVectors:
    """What :meth:`LoadedModel.embed_batch` returns per well."""

    well: np.ndarray  # (d,) unit vector: the normalized mean of the site vectors
    sites: np.ndarray  # (S, d) unit vectors


def load_model(run_dir: str | Path, device: str = "auto") -> LoadedModel:
    """Load a finished run (``model.safetensors`` + ``config.json`` + ``run.json``) for inference.

    The fingerprint served is verified against the weights themselves (it is recomputed from them), so another run's
    ``model.safetensors`` copied in, or weights written without their run.json, are refused rather than served
    under the old fingerprint.

    Raises:
        CheckpointError: not a finished run, weights that do not fit its config, hold NaN or infinite values, or do
            not match the fingerprint recorded in run.json.
    """
    run_dir = Path(run_dir)
    config, info = read_run(run_dir)
    model_cfg = config.model
    if model_cfg.pretrained:  # weights come from the file; never fetch at load time
        from dataclasses import replace

        model_cfg = replace(model_cfg, pretrained=False)
    embedder = Embedder(model_cfg)
    load_weights(embedder, run_dir / MODEL_FILE)
    recorded = str(info["fingerprint"])
    actual = fingerprint(config, embedder)  # of the weights as loaded: what indexes and tables are matched by
    if actual != recorded:
        raise CheckpointError(
            f"{run_dir / MODEL_FILE}: these weights are not the model run.json describes (fingerprint "
            f"{actual[:16]}…, run.json says {recorded[:16]}…): the file was replaced after the run was written, or "
            "the run was interrupted while being written (finish it with `phenoprint train … --resume`)"
        )
    dev = resolve_device(device)
    embedder.to(dev).eval()
    return LoadedModel(embedder, config, recorded, run_dir, dev, _channel_stats(run_dir, info.get("channel_stats")))


def _channel_stats(run_dir: Path, stats: object) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The per-experiment input statistics of run.json, checked: finite (mean, std) per channel, std >= 0."""
    if not stats:
        return None
    shape = f"{run_dir / RUN_FILE}: channel_stats is not {{experiment: [mean, std]}}"
    if not isinstance(stats, dict):
        raise CheckpointError(shape)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        for k, (m, s) in stats.items():
            out[str(k)] = np.asarray(m, dtype=np.float64), np.asarray(s, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(shape) from exc
    bad = [
        k
        for k, (m, s) in out.items()
        if m.ndim != 1 or m.shape != s.shape or not (np.isfinite(m).all() and np.isfinite(s).all() and (s >= 0).all())
    ]
    if bad:
        raise CheckpointError(
            f"{run_dir / RUN_FILE}: the input statistics of {', '.join(bad[:3])} are not finite per-channel "
            "(mean, std) values"
        )
    return out


@torch.no_grad()
def embed_tensor(
    embedder: nn.Module, images: torch.Tensor, cell_type: torch.Tensor | None, device: torch.device, tta: int = 1
) -> torch.Tensor:
    """Unit vectors of a batch of standardized images, averaged over ``tta`` dihedral transforms (CPU float32)."""
    if not 1 <= tta <= 8:
        raise ValueError(f"tta must lie in 1-8, got {tta}")
    images = images.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    ct = None if cell_type is None else cell_type.to(device)
    total = None
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for k in range(tta):
            out = embedder(dihedral(images, k) if k else images, ct).float()
            total = out if total is None else total + out
    assert total is not None
    return F.normalize(total, dim=1).cpu()


def _batchnorms(module: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    return {n: m for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def adapt_batchnorm(
    embedder: nn.Module, loader: Iterable[dict], device: torch.device, use_cell_type: bool, max_batches: int = 50
) -> nn.Module:
    """A copy of ``embedder`` whose batch-norm statistics are re-estimated on ``loader``'s images.

    Test-time adaptation: the running means and variances become those of one experiment (cumulative
    average over up to ``max_batches`` batches), the weights are untouched. Only the batch-norm layers
    run in training mode while it does so (dropout stays off).
    """
    adapted = copy.deepcopy(embedder).eval()
    bns = _batchnorms(adapted)
    if not bns:
        log.warning("the model has no batch-norm layers: BN adaptation does nothing")
        return adapted
    for m in bns.values():
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
        m.train()
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= max_batches:
                break
            ct = batch["cell_type"].to(device) if use_cell_type else None
            adapted(batch["image"].to(device), ct)
    return adapted.eval()


def adapt_to_wells(
    embedder: nn.Module,
    source: SiteSource,
    wells: pd.DataFrame,
    config: TrainConfig,
    device: torch.device,
    channel_stats: ChannelStats | None = None,
    batch_size: int = 64,
    workers: int = 0,
    preprocess_on: str = "auto",
) -> nn.Module:
    """:func:`adapt_batchnorm` on the sites of some wells (one experiment's), read like for embedding."""
    stats = channel_stats if config.normalization == "experiment" else None
    ds = (RawWellDataset if preprocess_on_device(preprocess_on, device) else WellDataset)(
        source,
        wells,
        image_size=config.image_size,
        train=False,
        channel_stats=stats,
        cell_types=config.model.cell_types,
    )
    loader = _site_batches(
        ds, device, batch_size, workers, shuffle=True, generator=torch.Generator().manual_seed(config.seed)
    )
    return adapt_batchnorm(embedder, loader, device, config.model.cell_type_context)


def _site_batches(
    ds: WellDataset,
    device: torch.device,
    batch_size: int,
    workers: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
) -> Iterable[dict[str, torch.Tensor]]:
    """Batches of every site of ``ds``'s wells; uint8 ones (a :class:`RawWellDataset`) are finished on the device, one
    batch ahead of the network."""
    cuda = device.type == "cuda"
    raw = isinstance(ds, RawWellDataset)
    collate = collate_raw_sites if raw else collate_sites
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=cuda,
        generator=generator,
    )
    return DevicePrefetcher(loader, device, InferencePrepare(ds.image_size, cuda)) if raw else loader


def batchnorm_state(module: nn.Module) -> dict[str, np.ndarray]:
    """The running means and variances of every batch-norm layer (``<layer>.running_mean`` …) as float32 arrays."""
    out = {}
    for name, m in _batchnorms(module).items():
        assert m.running_mean is not None
        assert m.running_var is not None
        out[f"{name}.running_mean"] = m.running_mean.detach().cpu().numpy().astype(np.float32)
        out[f"{name}.running_var"] = m.running_var.detach().cpu().numpy().astype(np.float32)
    return out


@contextmanager
def using_batchnorm_state(module: nn.Module, state: Mapping[str, np.ndarray] | None) -> Iterator[None]:
    """Run ``module`` with other batch-norm statistics (e.g. an experiment's adapted ones), then restore its own.

    Raises:
        ValueError: ``state`` does not hold exactly the module's batch-norm statistics.
    """
    if not state:
        yield
        return
    own = batchnorm_state(module)
    if set(state) != set(own) or any(np.shape(state[k]) != own[k].shape for k in own):
        raise ValueError("batch-norm statistics of another architecture; re-onboard the experiment with this model")
    buffers = dict(module.named_buffers())
    with torch.no_grad():
        for k, v in state.items():
            buffers[k].copy_(torch.as_tensor(v))
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in own.items():
                buffers[k].copy_(torch.as_tensor(v))


@dataclass
class WellEmbeddings:
    """Embeddings of a set of wells: one unit vector per well, and optionally per site."""

    wells: pd.DataFrame  # the input well rows, in order
    vectors: np.ndarray  # (n_wells, d) float32
    site_vectors: np.ndarray | None  # (n_sites, d) float32, when asked for
    site_rows: pd.DataFrame | None  # which well and site each row of site_vectors is


def embed_wells(
    embedder: nn.Module,
    source: SiteSource,
    wells: pd.DataFrame,
    *,
    config: TrainConfig,
    device: torch.device,
    batch_size: int = 64,
    tta: int = 1,
    per_site: bool = False,
    bn_adapt: bool = False,
    channel_stats: ChannelStats | None = None,
    workers: int = 0,
    progress: bool = True,
    preprocess_on: str = "auto",
) -> WellEmbeddings:
    """Embed wells (both sites averaged; experiment by experiment with ``bn_adapt``).

    Args:
        embedder: the network (left in eval mode).
        source: where pixels come from.
        wells: :func:`phenoprint.embedder.data.well_table` rows.
        config: the run's config (image size, normalization, cell-type context).
        device: where to run.
        batch_size: wells per forward pass.
        tta: dihedral transforms averaged (1-8).
        per_site: also return one vector per site.
        bn_adapt: re-estimate batch-norm statistics on each experiment's wells before embedding it.
        channel_stats: per-experiment (mean, std) when the model uses per-experiment normalization; those of
            experiments missing from it are computed from their wells.
        workers: data-loading processes.
        progress: show a progress bar.
        preprocess_on: where standardization and resizing run: ``device`` (uint8 sites over the bus, batched on
            the device), ``loader`` (in the workers), ``auto`` (the device on CUDA).
    """
    embedder.eval()
    check_channels(config.model, source.channel_names, repr(source))
    stats = _stats_for(source, wells, config, channel_stats)
    wells = wells.reset_index(drop=True)
    dim = config.model.embedding_dim
    vectors = np.zeros((len(wells), dim), dtype=np.float32)
    site_vecs: list[np.ndarray] = []
    site_rows: list[tuple[int, int]] = []
    bar = tqdm(total=len(wells), desc="embedding", unit="well", disable=not progress)
    # one loader over every well, unless each experiment needs its own adapted batch-norm statistics
    parts = wells.groupby("experiment", sort=False).indices.values() if bn_adapt else [np.arange(len(wells))]
    for idx in parts:
        sub = wells.iloc[idx]
        model = embedder
        if bn_adapt:
            model = adapt_to_wells(embedder, source, sub, config, device, stats, batch_size, workers, preprocess_on)
        ds = (RawWellDataset if preprocess_on_device(preprocess_on, device) else WellDataset)(
            source,
            sub,
            image_size=config.image_size,
            train=False,
            channel_stats=stats,
            cell_types=config.model.cell_types,
        )
        loader = _site_batches(ds, device, batch_size, workers, shuffle=False)
        site_unit, owner = _embed_sites(model, loader, device, tta, config.model.cell_type_context, bar)
        well_sum = np.zeros((len(sub), dim), dtype=np.float64)
        np.add.at(well_sum, owner, site_unit)
        vectors[idx] = _unit(well_sum)
        if per_site:
            site_vecs.append(site_unit.astype(np.float32))
            site_rows += [(int(idx[o]), int(s)) for o, s in zip(owner, _site_numbers(sub, owner), strict=True)]
    bar.close()
    if not per_site:
        return WellEmbeddings(wells, vectors, None, None)
    rows = pd.DataFrame(site_rows, columns=["well_index", "site"])
    return WellEmbeddings(wells, vectors, np.concatenate(site_vecs), rows)


def _stats_for(
    source: SiteSource, wells: pd.DataFrame, config: TrainConfig, channel_stats: ChannelStats | None
) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Per-experiment channel statistics for the wells (those given, the others computed), when the model needs
    them."""
    if config.normalization != "experiment":
        return None
    stats = dict(channel_stats or {})
    missing = wells[~wells.experiment.isin(list(stats))]
    if len(missing):
        stats.update(experiment_channel_stats(source, missing, seed=config.seed))
    return stats


def _embed_sites(
    model: nn.Module, loader: Iterable[dict[str, Any]], device: torch.device, tta: int, use_ct: bool, bar: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Every site of the loader embedded (float64 unit rows) and the position of its well in the loader's wells."""
    outs, owners = [], []
    for batch in loader:  # each site is read once; the TTA transforms run on the device
        ct = batch["cell_type"] if use_ct else None
        outs.append(embed_tensor(model, batch["image"], ct, device, tta=tta))
        owners.append(batch["index"][batch["well_of_site"]])  # position of the well within `sub`
        bar.update(len(batch["index"]))
    site_unit = torch.cat(outs).numpy().astype(np.float64)  # the normalized mean of each site's transforms
    return site_unit, torch.cat(owners).numpy()


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)).astype(np.float32)


def _site_numbers(sub: pd.DataFrame, owner: np.ndarray) -> list[int]:
    """Site number of each embedded site row (sites of a well come in the order of its ``sites`` tuple)."""
    seen: dict[int, int] = {}
    numbers = []
    sites = sub["sites"].tolist()
    for o in owner.tolist():
        k = seen.get(o, 0)
        numbers.append(int(sites[o][k]))
        seen[o] = k + 1
    return numbers
