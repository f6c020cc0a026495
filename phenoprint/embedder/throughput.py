"""Is the loader or the network the wall? Embedding throughput of the whole pipeline beside the forward pass alone."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import torch

from phenoprint.data.source import SiteSource
from phenoprint.embedder.inference import LoadedModel, embed_tensor, embed_wells


def embedding_throughput(
    model: LoadedModel, source: SiteSource, wells: pd.DataFrame, *, batch_size: int = 64, workers: int = 0
) -> dict[str, Any]:
    """Wells and sites per second of :func:`embed_wells` (read, standardize, resize, network) on ``wells``, and of
    the network alone on random tensors of the same batch shape already in memory, measured back to back.

    The ratio pipeline / network-only says how much the input side costs: near 1, the network is the wall.

    Raises:
        ValueError: no wells.
    """
    if wells.empty:
        raise ValueError("no wells to embed")
    device = model.device

    def pipeline(some: pd.DataFrame, loaders: int) -> None:
        embed_wells(
            model.embedder,
            source,
            some,
            config=model.config,
            device=device,
            batch_size=batch_size,
            channel_stats=model.channel_stats,
            workers=loaders,
            progress=False,
        )
        _sync(device)

    pipeline(wells.head(batch_size), 0)  # warm-up
    started = time.perf_counter()
    pipeline(wells, workers)
    pipeline_s = time.perf_counter() - started
    sites = int(sum(len(s) for s in wells.sites))
    x = torch.randn(2 * batch_size, model.config.model.in_chans, model.image_size, model.image_size)
    cells = torch.zeros(len(x), dtype=torch.int64) if model.config.model.cell_type_context else None
    embed_tensor(model.embedder, x, cells, device)  # warm-up
    _sync(device)
    started = time.perf_counter()
    done = 0
    while done < sites:
        embed_tensor(model.embedder, x, cells, device)
        done += len(x)
    _sync(device)
    model_s = (time.perf_counter() - started) * sites / done
    return {
        "wells": len(wells),
        "sites": sites,
        "batch_size_wells": batch_size,
        "workers": workers,
        "pipeline_wells_per_s": round(len(wells) / pipeline_s, 1),
        "pipeline_sites_per_s": round(sites / pipeline_s, 1),
        "model_only_wells_per_s": round(len(wells) / model_s, 1),
        "model_only_sites_per_s": round(sites / model_s, 1),
        "ratio_pipeline_to_model": round(model_s / pipeline_s, 3),
        "threads": torch.get_num_threads(),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
