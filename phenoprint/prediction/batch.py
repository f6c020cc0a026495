"""The `predict` job: load experiments' indexes, name every well of their embedding tables, write the answers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from phenoprint.atomic import atomic_path
from phenoprint.data.table import EmbeddingTable
from phenoprint.errors import EmbeddingTableError, IndexFormatError, UnknownExperimentError
from phenoprint.index.decode import BatchPrediction, predict_experiment
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.index.folders import inspect_index_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionRun:
    """The answers for every experiment asked for.

    Attributes:
        wells: one row per well of every experiment (:class:`phenoprint.index.decode.BatchPrediction` columns).
        plates: one row per (experiment, plate): the chosen group, its margin and, with labels, the accuracies.
        per_experiment: experiment → its :class:`BatchPrediction`.
    """

    wells: pd.DataFrame
    plates: pd.DataFrame
    per_experiment: dict[str, BatchPrediction]

    def summary(self) -> str:
        """What was decoded and, where the table carries labels, top-1 per well against the joint answer."""
        lines = []
        for exp, bp in self.per_experiment.items():
            how = "jointly by plate design" if bp.used_design else "per well (no plate design)"
            lines.append(f"{exp}: {len(bp.wells)} wells named {how}, mode {bp.mode}; {bp.note}")
            frame = bp.plates
            if "top1" in frame.columns:
                for row in frame.itertuples():
                    lines.append(
                        f"  plate {row.plate}: group {row.group} (margin {row.margin:.3f}), {row.labelled} labelled "
                        f"wells: top-1 per well {row.top1:.3f}, assigned {row.assigned_top1:.3f}"
                    )
                w = bp.wells
                known = w["true_sirna_id"].notna().to_numpy()
                truth = w.loc[known, "true_sirna_id"].to_numpy(dtype=np.int64)
                lines.append(
                    f"  all labelled wells: top-1 per well {np.mean(w.loc[known, 'top1_sirna_id'] == truth):.3f}, "
                    f"assigned {np.mean(w.loc[known, 'assigned_sirna_id'] == truth):.3f}"
                )
            else:
                for row in frame.itertuples():
                    lines.append(f"  plate {row.plate}: group {row.group} (margin {row.margin:.3f}), {row.wells} wells")
        return "\n".join(lines)


def index_dirs(indexes: Path, experiments: tuple[str, ...] = ()) -> list[Path]:
    """The index directories to predict with: ``indexes`` itself when it is one, else its sub-folders named by
    ``experiments`` (all of them when none is named).

    Raises:
        IndexFormatError: ``indexes`` is neither an index nor a folder of indexes (what it is, and what to pass).
        UnknownExperimentError: a named experiment has no index there.
    """
    folder = inspect_index_folder(indexes)
    if folder.kind == "index":
        return [Path(indexes)]
    if folder.kind != "root":
        raise IndexFormatError(
            folder.problem
            or f"{indexes} holds no index directory: pass an experiment's index (indexes/EXP) or the folder of them"
        )
    found = {p.name: p for p in folder.indexes}
    if not experiments:
        return [found[k] for k in sorted(found)]
    missing = [e for e in experiments if e not in found]
    if missing:
        raise UnknownExperimentError(missing[0], found)
    return [found[e] for e in experiments]


def predict_tables(
    indexes: list[ExperimentIndex],
    table: EmbeddingTable,
    *,
    k: int = 5,
    mode: str | None = None,
    treatments_only: bool = False,
) -> PredictionRun:
    """Name every well of each index's experiment in ``table`` (see :func:`phenoprint.index.decode.predict_experiment`).

    Raises:
        EmbeddingTableError: the table's model or dimension differs from an index's, or lacks an experiment's wells.
    """
    per: dict[str, BatchPrediction] = {}
    for index in indexes:
        if table.dim != index.dim:
            raise EmbeddingTableError(
                f"the embedding table has dimension {table.dim} but the index of {index.experiment} {index.dim}"
            )
        if table.fingerprint and index.fingerprint and table.fingerprint != index.fingerprint:
            raise EmbeddingTableError(
                f"the embedding table comes from model {table.fingerprint[:16]}…, the index of {index.experiment} "
                f"from {index.fingerprint[:16]}…; embed the batch with the index's model"
            )
        per[index.experiment] = predict_experiment(index, table, k=k, mode=mode, treatments_only=treatments_only)
    wells = pd.concat([bp.wells for bp in per.values()], ignore_index=True)
    plates = pd.concat([bp.plates.assign(experiment=e) for e, bp in per.items()], ignore_index=True)
    plates = plates[["experiment", *[c for c in plates.columns if c != "experiment"]]]
    return PredictionRun(wells, plates, per)


def write_predictions(wells: pd.DataFrame, out: str | Path) -> tuple[Path, Path]:
    """Write the predictions as Parquet (``out``, suffix .parquet) and CSV (same name, suffix .csv), atomically."""
    out = Path(out)
    parquet = out if out.suffix == ".parquet" else out.with_name(out.name + ".parquet")
    csv = parquet.with_suffix(".csv")
    parquet.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(parquet) as tmp:
        wells.to_parquet(tmp, index=False)
    with atomic_path(csv) as tmp:
        wells.to_csv(tmp, index=False)
    return parquet, csv


def embed_batch(
    model_dir: Path,
    data: Path,
    pack: Path | None,
    index: ExperimentIndex,
    workers: int = 0,
    layout: str | None = None,
    channels: tuple[str, ...] | None = None,
) -> EmbeddingTable:
    """Embed every well of the index's experiment from its images, as onboarding embedded it (the TTA, input
    statistics and adapted batch-norm statistics its index recorded)."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.export import select_wells, wells_to_table
    from phenoprint.embedder.inference import embed_wells, load_model, using_batchnorm_state
    from phenoprint.embedder.record import EmbedderRecord

    model = load_model(model_dir)
    if index.fingerprint is not None and model.fingerprint != index.fingerprint:
        raise EmbeddingTableError(
            f"the index of {index.experiment} was built from model {index.fingerprint[:16]}…, not from "
            f"{model.fingerprint[:16]}… ({model_dir})"
        )
    source = open_source(data, pack, layout=layout, channels=channels)
    wells = select_wells(source.metadata, (index.experiment,))
    record = EmbedderRecord.read(index.manifest.get("producer"), index.producer_arrays)
    record.check_tta(f"the index of {index.experiment}")
    tta = int(record.tta)  # type: ignore[call-overload]
    stats = record.channel_stats
    with using_batchnorm_state(model.embedder, record.bn_state):
        emb = embed_wells(
            model.embedder,
            source,
            wells,
            config=model.config,
            device=model.device,
            tta=tta,
            channel_stats=None if stats is None else {index.experiment: stats},
            workers=workers,
        )
    return wells_to_table(emb.wells, emb.vectors, model.fingerprint, {"tta": tta, "bn_adapt": record.bn_adapt})


def table_from_parquet_bytes(data: bytes) -> EmbeddingTable:
    """An embedding table sent as the bytes of a Parquet file (what ``phenoprint embed`` and ``build-index
    --queries-out`` write), with the model fingerprint its writer stored.

    Raises:
        EmbeddingTableError: not a Parquet file, or not an embedding table (what is missing, as for a file).
    """
    import io
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from phenoprint.data.table import PARQUET_META_KEY

    try:
        arrow = pq.read_table(io.BytesIO(data))
        frame = arrow.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise EmbeddingTableError(f"not a readable Parquet file ({exc})") from exc
    raw = (arrow.schema.metadata or {}).get(PARQUET_META_KEY)
    try:
        info = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise EmbeddingTableError(f"the table's phenoprint metadata is not JSON ({exc})") from exc
    fingerprint = info.get("fingerprint") if isinstance(info, dict) else None
    return EmbeddingTable.from_frame(frame, fingerprint=fingerprint if isinstance(fingerprint, str) else None)


def kaggle_predictions(
    indexes: list[ExperimentIndex], table: EmbeddingTable, test: pd.DataFrame, k: int, mode: str | None
) -> pd.DataFrame:
    """The joint answer for the test wells alone: known to be treatments, so assigned among their plate's group."""
    table = table.aggregate_sites()
    keys = set(zip(test.experiment, test.plate.astype(int), test.well, strict=True))
    meta = table.meta
    rows = np.array(
        [
            (e, int(p), w) in keys
            for e, p, w in zip(meta.Metadata_experiment, meta.Metadata_plate, meta.Metadata_well, strict=True)
        ],
        dtype=bool,
    )
    return predict_tables(indexes, table.subset(rows), k=k, mode=mode, treatments_only=True).wells
