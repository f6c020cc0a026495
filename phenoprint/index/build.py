"""Building a per-experiment index: which wells of which experiments are indexed, centred how, into FAISS."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

import faiss
import numpy as np
import pandas as pd

from phenoprint import __version__
from phenoprint.data.plate import PlateGroups
from phenoprint.data.table import EmbeddingTable
from phenoprint.errors import EmbeddingTableError, UnknownExperimentError
from phenoprint.index import faiss_backend
from phenoprint.index.centering import CenteringStats
from phenoprint.index.config import SCOPES, IndexConfig
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.index.openset import OpenSetThreshold, calibrate_index
from phenoprint.index.plate_groups import learn_plate_groups
from phenoprint.index.storage import ARTIFACT_KIND, FORMAT_VERSION
from phenoprint.index.table_centering import VIEW_SEP, center_table, fit_configured

log = logging.getLogger(__name__)


def build_experiment_index(
    table: EmbeddingTable,
    experiment: str,
    config: IndexConfig,
    fingerprint: str | None = None,
    producer: dict[str, Any] | None = None,
    producer_arrays: dict[str, np.ndarray] | None = None,
) -> ExperimentIndex:
    """Build the index that names the siRNAs of ``experiment``'s wells.

    The table holds the reference experiments (labelled) and the target experiment. Every experiment is centred
    with its own statistics, fitted on its own reference wells (controls by default), so the target needs only its
    controls: its treatments may be unlabelled (a new batch being onboarded) and are never indexed. Entries are the
    target's labelled control wells plus the labelled wells of the other experiments in scope (same cell type by
    default); the plate groups stored for assignment are learned from those same experiments' treatment labels.
    Site tables are averaged to wells first.

    Args:
        table: embeddings of the target and the reference experiments.
        experiment: the target experiment.
        config: how to centre, what to index, which FAISS index.
        fingerprint: the model the embeddings came from (None: the table's own).
        producer: JSON-serializable facts from whoever made the vectors, stored as the manifest's ``producer``
            (the embedder records the experiment's input normalization there, which serving it needs).
        producer_arrays: named arrays saved beside it (``producer.npz``), e.g. adapted batch-norm statistics.

    Raises:
        UnknownExperimentError: the experiment is not in the table.
        EmbeddingTableError: a batch lacks reference wells, nothing to index, or the fingerprint disagrees with
            the table's.
    """
    started = time.perf_counter()
    if experiment not in set(table.meta["Metadata_experiment"]):
        raise UnknownExperimentError(experiment, table.experiments)
    if fingerprint is not None and table.fingerprint is not None and fingerprint != table.fingerprint:
        raise EmbeddingTableError(
            f"the table was embedded with model {table.fingerprint!r} but fingerprint {fingerprint!r} was given"
        )
    table = table.aggregate_sites()
    table = table.subset(scope_mask(table, experiment, config.scope))
    selection = None
    if config.center == "auto" or config.mode == "auto":  # scored on the batch's own controls
        from phenoprint.index.choose import choose_config

        config, selection = choose_config(table, experiment, config)
    groups = learn_plate_groups(table, exclude=experiment)
    stats = fit_configured(table, config, new_batch=experiment)
    centred = center_table(table, stats, config.per_plate)
    index = assemble_index(
        table, centred, stats, experiment, config, fingerprint or table.fingerprint, plate_groups=groups
    )
    if producer:
        index.manifest["producer"] = producer
    if selection is not None:
        index.manifest["selection"] = selection.to_json()
    index.producer_arrays = dict(producer_arrays or {})
    log.info(
        "built the index of %s: %d wells of %d siRNAs (its own controls and %d other experiments), centering %s "
        "fitted on its %s, %s search, in %.2f s",
        experiment,
        len(index),
        len(index.sirna_ids),
        index.manifest["counts"]["source_experiments"],
        config.center,
        "control wells" if config.reference == "controls" else "wells",
        "exact" if config.kind == "flat" else f"approximate ({config.kind})",
        time.perf_counter() - started,
    )
    return index


def scope_mask(table: EmbeddingTable, experiment: str, scope: str) -> np.ndarray:
    """Rows of the target experiment and of the experiments whose wells may be indexed for it."""
    if scope == "all":
        return np.ones(len(table), dtype=bool)
    if scope != "same_cell_type":
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    cell_type = table.cell_type_of(experiment)
    return (table.meta["Metadata_cell_type"] == cell_type).to_numpy(dtype=bool) | table.experiment_mask(experiment)


def entry_mask(table: EmbeddingTable, experiment: str, scope: str) -> np.ndarray:
    """Which rows are indexed: the target's labelled controls and the labelled wells of in-scope experiments."""
    target = table.experiment_mask(experiment)
    labelled = table.labelled_mask()
    return labelled & ((target & table.control_mask()) | (~target & scope_mask(table, experiment, scope)))


def assemble_index(
    table: EmbeddingTable,
    centred: np.ndarray,
    stats: dict[str, CenteringStats],
    experiment: str,
    config: IndexConfig,
    fingerprint: str | None,
    plate_groups: PlateGroups | None,
) -> ExperimentIndex:
    """Put already-centred rows into an index (shared by :func:`build_experiment_index` and evaluation).

    Args:
        table: well table whose rows ``centred`` holds (the target and any other experiments).
        centred: (n, d) every row centred with its own batch's statistics.
        stats: the statistics of every batch of the table (the target's are kept in the index).
        experiment: the target.
        config: the build configuration.
        fingerprint: recorded in the manifest.
        plate_groups: learned treatment groups (or None).
    """
    mask = entry_mask(table, experiment, config.scope)
    if not mask.any():
        raise EmbeddingTableError(
            f"nothing to index for {experiment}: no labelled control wells of it and no labelled wells of other "
            f"experiments{' of its cell type' if config.scope == 'same_cell_type' else ''}"
            + ("; try --scope all" if config.scope == "same_cell_type" else "")
        )
    target = table.meta["Metadata_experiment"].to_numpy()[mask] == experiment
    entries = _entries(table.meta[mask], target)
    vectors = np.ascontiguousarray(centred[mask], dtype=np.float32)
    index = faiss_backend.make_index(
        vectors,
        config.kind,
        nlist=config.nlist,
        nprobe=config.nprobe,
        hnsw_m=config.hnsw_m,
        ef_construction=config.ef_construction,
        ef_search=config.ef_search,
    )
    open_set = calibrate_index(
        table, centred, experiment, vectors, entries, config.open_set_quantile, config.open_set_calibration
    )
    # an ensemble's keys are view::batch (phenoprint.index.table_centering.split_views)
    batch_of = {k: k.rpartition(VIEW_SEP)[2] for k in stats}
    target_keys = [k for k, b in batch_of.items() if b == experiment or b.startswith(f"{experiment}/")]
    manifest = _manifest(table, experiment, config, fingerprint, stats, target_keys, entries, target, index, open_set)
    manifest["plate_groups"] = None if plate_groups is None else len(plate_groups.groups)  # in its place of the record
    return ExperimentIndex(
        faiss_index=index,
        vectors=vectors,
        entries=entries,
        centering={k: stats[k] for k in target_keys},
        config=config,
        open_set=open_set,
        plate_groups=plate_groups,
        manifest=manifest,
    )


def _entries(meta: pd.DataFrame, target: np.ndarray) -> pd.DataFrame:
    """The entry table of the indexed rows (their metadata): ``kind`` is control for the target's own wells."""
    entries = pd.DataFrame(
        {
            "sirna_id": meta["Metadata_sirna_id"].to_numpy(dtype=np.int64),
            "experiment": meta["Metadata_experiment"].to_numpy(dtype=str),
            "plate": meta["Metadata_plate"].to_numpy(dtype=np.int64),
            "well": meta["Metadata_well"].to_numpy(dtype=str),
            "cell_type": meta["Metadata_cell_type"].to_numpy(dtype=str),
            "well_type": meta["Metadata_well_type"].to_numpy(dtype=str),
            "kind": np.where(target, "control", "training"),
        }
    )
    if "Metadata_sirna" in meta.columns:  # names where the metadata gave them (RxRx1 v1.0), None elsewhere
        names = meta["Metadata_sirna"].astype("string")
        entries["sirna"] = [None if pd.isna(v) else str(v) for v in names]
    return entries


def _counted(key: str) -> bool:
    """Whether a statistics key's reference wells count in the manifest (each batch once, an ensemble's included)."""
    return VIEW_SEP not in key or key.startswith(f"none{VIEW_SEP}")


def _manifest(
    table: EmbeddingTable,
    experiment: str,
    config: IndexConfig,
    fingerprint: str | None,
    stats: dict[str, CenteringStats],
    target_keys: list[str],
    entries: pd.DataFrame,
    target: np.ndarray,
    index: faiss.Index,
    open_set: OpenSetThreshold,
) -> dict[str, Any]:
    """What ``manifest.json`` records of a freshly assembled index (its file list is added when it is saved)."""
    cell_type = table.cell_type_of(experiment)
    sources = sorted(set(entries["experiment"]) - {experiment})
    return {
        "artifact": ARTIFACT_KIND,
        "format_version": FORMAT_VERSION,
        "experiment": experiment,
        "cell_type": cell_type,
        "dim": int(table.dim),  # of the vectors queried; an ensemble's index holds views x dim
        "fingerprint": fingerprint,
        "centering": {
            "method": config.center,
            "reference": config.reference,
            "per_plate": config.per_plate,
            "pca_dim": config.pca_dim,
            "ridge": config.ridge,
            "epsilon": config.epsilon,
            "pool": config.pool,
            "n_reference": {k: stats[k].n_reference for k in target_keys},
        },
        "scope": config.scope,
        "mode": config.mode,
        "index": {"kind": config.kind, "ntotal": int(index.ntotal)},
        "counts": {
            "entries": len(entries),
            "controls": int(target.sum()),
            "training": int((~target).sum()),
            "sirnas": int(entries["sirna_id"].nunique()),
            "source_experiments": len(sources),
            # an ensemble's views share the reference wells: counted once, by its ``none`` view's keys
            "reference_wells": int(sum(stats[k].n_reference for k in target_keys if _counted(k))),
        },
        "source_experiments": sources,
        "open_set": open_set.to_json(),
        "plate_groups": None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "phenoprint_version": __version__,
        "config": config.to_json(),
    }
