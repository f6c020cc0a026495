"""What a running service holds: the model, the index registry, the micro-batcher, and how they are started."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import anyio.to_thread
import numpy as np
import torch

from phenoprint.api.batcher import MicroBatcher
from phenoprint.api.metrics import ServiceMetrics
from phenoprint.api.predictions import PredictionStore
from phenoprint.api.registry import IndexRegistry, LoadedIndex, ReloadReport
from phenoprint.api.settings import Settings
from phenoprint.data.source import SiteSource
from phenoprint.embedder.inference import LoadedModel, WellImages, WellVectors, batchnorm_state, load_model
from phenoprint.errors import CheckpointError, IndexFormatError
from phenoprint.index.folders import inspect_index_folder
from phenoprint.index.storage import PRODUCER_ARRAYS_FILE

log = logging.getLogger(__name__)


@dataclass
class Service:
    """The loaded state of one app, created in its lifespan (never at import) and kept in ``app.state.service``."""

    settings: Settings
    model: LoadedModel
    registry: IndexRegistry
    batcher: MicroBatcher[WellImages, WellVectors]
    metrics: ServiceMetrics
    started_at: float
    predictions: PredictionStore
    images: SiteSource | None = None  # the --data root's sites (None: no composites of served wells)

    def input_stats(self, loaded: LoadedIndex) -> tuple[np.ndarray, np.ndarray] | None:
        """The experiment's input (mean, std) for a model trained with per-experiment normalization, else None."""
        return _input_stats(self.model, loaded)

    def well_images(self, sites: np.ndarray, loaded: LoadedIndex | None, cell_type: str | None) -> WellImages:
        """A well to embed the way its experiment's index embedded its own wells: the same input statistics,
        adapted batch-norm statistics and test-time augmentation (``--tta`` overrides the last)."""
        if loaded is None:
            return WellImages(sites, cell_type, None, None, self.settings.tta)
        tta = self.settings.tta or loaded.record.tta
        assert isinstance(tta, int)  # checked when the index was loaded (_check_index)
        bn_state = None if loaded.record.bn_state is None else dict(loaded.record.bn_state)
        return WellImages(sites, cell_type, self.input_stats(loaded), bn_state, tta)

    def refresh_indexes(self) -> ReloadReport:
        """Scan the index folder and the predictions once (blocking: call it in a worker thread), record the outcome."""
        report = self.registry.refresh()
        self.predictions.refresh()
        self.metrics.indexes_loaded.set(len(self.registry.snapshot()))
        for result, names in (("loaded", report.loaded), ("removed", report.removed), ("refused", report.failed)):
            if names:
                self.metrics.index_reloads.labels(result).inc(len(names))
        return report

    async def warm_up(self) -> None:
        """One forward pass in the batch thread, so the first request does not pay for lazy initialization."""
        await self.batcher.run_now([_blank_well(self.model)])

    async def reload_forever(self, interval_s: float) -> None:
        """Rescan the index folder every ``interval_s`` seconds until cancelled; a failed scan is logged, not fatal."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await anyio.to_thread.run_sync(self.refresh_indexes)
            except Exception:
                log.exception("scanning the index folder %s failed; retrying in %.1f s", self.registry.root, interval_s)


def start_service(settings: Settings, metrics: ServiceMetrics, model: LoadedModel | None = None) -> Service:
    """Load the model (unless given one) and the indexes (blocking; the lifespan runs it in a worker thread).

    Raises:
        CheckpointError: no model configured, or its run directory is not a finished run.
        IndexFormatError: no index folder configured, or one that does not exist or holds something else than
            indexes (the message says what to pass).
    """
    if settings.model is None:
        raise CheckpointError(
            "no model to serve: pass --model RUN (a `phenoprint train --out` folder) or set PHENOPRINT_MODEL"
        )
    if settings.indexes is None:
        raise IndexFormatError(
            "no index folder to serve: pass --indexes DIR (one `scripts/build_index.py --out DIR/<EXPERIMENT>` folder "
            "per experiment) or set PHENOPRINT_INDEXES"
        )
    folder = inspect_index_folder(settings.indexes)
    if folder.problem is not None:
        raise IndexFormatError(folder.problem)
    root, only = settings.indexes, None
    if folder.kind == "index":  # one index directory: serve it (its siblings, if any, stay unserved)
        root, only = settings.indexes.parent, settings.indexes.name
        log.info(
            "--indexes names one index directory: serving %s only (pass its parent %s to serve every index there)",
            only,
            root,
        )
    elif folder.kind == "empty":
        if settings.reload_interval_s <= 0:
            raise IndexFormatError(
                f"{settings.indexes} holds no index and --reload-interval-s 0 never rescans it: build one there "
                f"first (scripts/build_index.py --out {settings.indexes}/<EXPERIMENT>)"
            )
        log.warning(
            "the index folder %s holds no index yet: not ready until one is written there (%s)",
            settings.indexes,
            f"rescanned every {settings.reload_interval_s:g} s",
        )
    started = time.perf_counter()
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)  # process-wide; the batch thread picks it up
    if model is None:
        model = load_model(settings.model, settings.device)
    metrics.model_info.labels(model.fingerprint, str(model.device)).set(1)
    registry = IndexRegistry(
        root, model.fingerprint, model.embedding_dim, check=lambda loaded: _check_index(model, loaded), only=only
    )
    tta = settings.tta or 1  # for wells that name none (an /embed without experiment)

    def embed(wells: list[WellImages]) -> list[WellVectors]:
        return model.embed_batch(wells, tta=tta)

    def on_batch(size: int, seconds: float) -> None:
        metrics.batch_wells.observe(size)
        metrics.batch_seconds.observe(seconds)

    batcher: MicroBatcher[WellImages, WellVectors] = MicroBatcher(
        embed, max_batch=settings.max_batch_wells, wait_s=settings.batch_wait_ms / 1000, on_batch=on_batch
    )
    service = Service(
        settings, model, registry, batcher, metrics, time.time(), _prediction_store(settings), _images(settings)
    )
    service.refresh_indexes()
    log.info(
        "serving model %s… on %s with %d indexes (%s) after %.1f s",
        model.fingerprint[:12],
        model.device,
        len(registry.snapshot()),
        ", ".join(registry.snapshot()) or "none yet",
        time.perf_counter() - started,
    )
    return service


def _prediction_store(settings: Settings) -> PredictionStore:
    """The predictions to serve: --predictions, else those written next to the indexes."""
    assert settings.indexes is not None
    return PredictionStore((settings.predictions or settings.indexes,))


def _images(settings: Settings) -> SiteSource | None:
    """The --data root's sites, opened once (its metadata is read when a composite is first asked for).

    Raises:
        LayoutError: the root is no RxRx1 data root (what it holds instead).
    """
    if settings.data is None:
        return None
    from phenoprint.data.source import PngSource

    return PngSource(settings.data)


def _blank_well(model: LoadedModel) -> WellImages:
    """A well of one black site that the model accepts (cell type and input statistics included)."""
    cfg = model.config.model
    blank = np.zeros((1, cfg.in_chans, model.image_size, model.image_size), dtype=np.uint8)
    cell_type = cfg.cell_types[0] if cfg.cell_type_context else None
    stats = (np.zeros(cfg.in_chans), np.ones(cfg.in_chans)) if model.config.normalization == "experiment" else None
    return WellImages(blank, cell_type, stats)


def _input_stats(model: LoadedModel, loaded: LoadedIndex) -> tuple[np.ndarray, np.ndarray] | None:
    if model.config.normalization != "experiment":
        return None
    if loaded.record.channel_stats is not None:
        return loaded.record.channel_stats
    return (model.channel_stats or {}).get(loaded.experiment)


def _check_index(model: LoadedModel, loaded: LoadedIndex) -> None:
    """Refuse an index the model cannot query: unknown cell type, or an embedder record that does not fit the model
    (TTA outside 1-8, missing or non-finite per-experiment input statistics, adapted batch-norm statistics of another
    architecture); each of these used to be accepted, then fail every query."""
    index, where = loaded.index, str(loaded.path)
    loaded.record.check_tta(where)
    if model.config.model.cell_type_context and index.cell_type not in model.config.model.cell_types:
        raise IndexFormatError(
            f"{where}: cell type {index.cell_type!r} is unknown to the model (it knows "
            f"{', '.join(model.config.model.cell_types)})"
        )
    if model.config.normalization == "experiment":
        stats = _input_stats(model, loaded)
        if stats is None:
            raise IndexFormatError(
                f"{where}: the model standardizes images by per-experiment statistics, but this index does "
                "not record them; rebuild it with scripts/build_index.py from this model"
            )
        loaded.record.check_input_stats(where, model.config.model.in_chans, stats)
    loaded.record.check_bn_state(where, batchnorm_state(model.embedder), PRODUCER_ARRAYS_FILE)
