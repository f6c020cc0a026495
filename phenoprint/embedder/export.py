"""Embedding export: a run's vectors for every well of a data root, as the index's embedding table."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from phenoprint.data.source import SiteSource
from phenoprint.data.table import EmbeddingTable, feature_names, write_embeddings
from phenoprint.embedder.data import ChannelStats, well_table
from phenoprint.embedder.inference import LoadedModel, embed_wells

log = logging.getLogger(__name__)

_META = {
    "experiment": "Metadata_experiment",
    "plate": "Metadata_plate",
    "well": "Metadata_well",
    "cell_type": "Metadata_cell_type",
    "well_type": "Metadata_well_type",
    "sirna_id": "Metadata_sirna_id",
}


def wells_to_table(
    wells: pd.DataFrame,
    vectors: np.ndarray,
    fingerprint: str | None = None,
    info: dict | None = None,
    sites: np.ndarray | None = None,
) -> EmbeddingTable:
    """An embedding table from well rows (canonical columns) and their vectors (one row each).

    Args:
        sites: when the rows are sites, their site numbers (adds ``Metadata_site``).
    """
    meta = wells[list(_META)].rename(columns=_META).reset_index(drop=True)
    if "sirna" in wells.columns:  # the siRNA's name, where the metadata gives one (v1.0)
        meta["Metadata_sirna"] = wells["sirna"].astype("string").to_numpy()
    if "dataset" in wells.columns:
        meta["Metadata_dataset"] = wells["dataset"].to_numpy()
    if sites is not None:
        meta["Metadata_site"] = np.asarray(sites, dtype=np.int64)
    return EmbeddingTable(
        meta, vectors.astype(np.float32), tuple(feature_names(vectors.shape[1])), fingerprint, info or {}
    )


def select_wells(
    metadata: pd.DataFrame, experiments: tuple[str, ...] | None = None, controls_only: bool = False
) -> pd.DataFrame:
    """Well rows to embed: optionally only some experiments, optionally only control wells."""
    wells = well_table(metadata)
    if experiments:
        unknown = sorted(set(experiments) - set(wells.experiment))
        if unknown:
            from phenoprint.errors import UnknownExperimentError

            raise UnknownExperimentError(unknown[0], set(wells.experiment))
        wells = wells[wells.experiment.isin(experiments)]
    if controls_only:
        wells = wells[wells.well_type != "treatment"]
    return wells.reset_index(drop=True)


def embed_table(
    model: LoadedModel,
    source: SiteSource,
    wells: pd.DataFrame,
    info: dict[str, Any],
    *,
    embedder: nn.Module | None = None,
    channel_stats: ChannelStats | None = None,
    tta: int = 1,
    per_site: bool = False,
    bn_adapt: bool = False,
    batch_size: int = 64,
    workers: int = 0,
    preprocess_on: str = "auto",
    progress: bool = True,
) -> EmbeddingTable:
    """Wells embedded by a loaded model, as an embedding table (one row per well, or per site) carrying ``info``.

    Args:
        embedder: the network to run instead of the model's own (e.g. one already adapted to the batch).
        channel_stats: per-experiment input statistics instead of the model's.
    """
    emb = embed_wells(
        model.embedder if embedder is None else embedder,
        source,
        wells,
        config=model.config,
        device=model.device,
        batch_size=batch_size,
        tta=tta,
        per_site=per_site,
        bn_adapt=bn_adapt,
        channel_stats=model.channel_stats if channel_stats is None else channel_stats,
        workers=workers,
        progress=progress,
        preprocess_on=preprocess_on,
    )
    if not per_site:
        return wells_to_table(emb.wells, emb.vectors, model.fingerprint, info)
    assert emb.site_vectors is not None
    assert emb.site_rows is not None
    rows = emb.wells.iloc[emb.site_rows.well_index.to_numpy()].reset_index(drop=True)
    return wells_to_table(rows, emb.site_vectors, model.fingerprint, info, sites=emb.site_rows.site.to_numpy())


def export_embeddings(
    model: LoadedModel,
    source: SiteSource,
    out: str | Path,
    *,
    wells: pd.DataFrame | None = None,
    tta: int = 1,
    per_site: bool = False,
    bn_adapt: bool = False,
    batch_size: int = 64,
    workers: int = 0,
    preprocess_on: str = "auto",
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> Path:
    """Embed wells and write the embedding table (fingerprint in the Parquet metadata).

    With ``world_size`` > 1 (torchrun), rank r embeds every ``world_size``-th experiment starting at r, and
    ``out`` is a folder that receives ``part-<r>-of-<n>.parquet``; :func:`phenoprint.data.table.read_embeddings`
    reads the folder as one table. Sharding by experiment keeps BN adaptation per experiment exact.

    Returns:
        The file written by this process.
    """
    if wells is None:
        wells = well_table(source.metadata)
    exps = sorted(wells.experiment.unique())
    mine = exps[rank::world_size]
    wells = wells[wells.experiment.isin(mine)].reset_index(drop=True)
    info = {"tta": tta, "bn_adapt": bn_adapt, "per_site": per_site, "run": os.path.basename(str(model.run_dir))}
    table = embed_table(
        model,
        source,
        wells,
        info,
        tta=tta,
        per_site=per_site,
        bn_adapt=bn_adapt,
        batch_size=batch_size,
        workers=workers,
        preprocess_on=preprocess_on,
        progress=progress,
    )
    out = Path(out)
    target = out / f"part-{rank:05d}-of-{world_size:05d}.parquet" if world_size > 1 else out
    write_embeddings(table, target)
    log.info("wrote %d embeddings of %d experiments to %s", len(table), len(mine), target)
    return target
