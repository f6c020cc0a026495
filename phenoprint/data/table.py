"""The embedding table that the embedder and the index exchange: Parquet, ``Metadata_*`` columns, float32 features."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from phenoprint.atomic import atomic_path
from phenoprint.data.layout import WELL_KEY as layout_well_key
from phenoprint.data.layout import WELL_TYPES
from phenoprint.errors import EmbeddingTableError, UnknownExperimentError

log = logging.getLogger(__name__)

#: Parquet key-value metadata key under which phenoprint stores its JSON (fingerprint, format version …).
PARQUET_META_KEY = b"phenoprint"
TABLE_FORMAT_VERSION = 1
#: Columns every table must carry: which well, and its label (nullable where unknown).
REQUIRED_METADATA = ("Metadata_experiment", "Metadata_plate", "Metadata_well", "Metadata_sirna_id")
#: Columns filled with a default (and a logged note) when a foreign table lacks them.
OPTIONAL_METADATA = {"Metadata_cell_type": "unknown", "Metadata_well_type": "treatment"}
METADATA_PREFIX = "Metadata_"
#: Values of ``Metadata_well_type`` that mark controls (told by this column, never by label ranges).
CONTROL_WELL_TYPES = tuple(t for t in WELL_TYPES if t != "treatment")
#: The columns that name one well (the site table's key, prefixed); a table with ``Metadata_site`` holds several rows
#: per well.
WELL_KEY = tuple(METADATA_PREFIX + column for column in layout_well_key)


def feature_names(dim: int) -> list[str]:
    """Our own feature column names: ``emb_0000`` … (zero-padded so they sort)."""
    return [f"emb_{i:04d}" for i in range(dim)]


@dataclass
class EmbeddingTable:
    """Wells (or sites) with their metadata and one feature vector each.

    Attributes:
        meta: ``Metadata_*`` columns, one row per vector (index 0…n-1).
        features: (n, d) float32, finite.
        feature_names: the d column names, in order.
        fingerprint: the model fingerprint the vectors came from (None for foreign profiles).
        info: further JSON metadata stored with the table (e.g. how it was made).
    """

    meta: pd.DataFrame
    features: np.ndarray
    feature_names: tuple[str, ...]
    fingerprint: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, _ = _check_features(self.features, len(self.feature_names))
        if len(self.meta) != n:
            raise EmbeddingTableError(f"{len(self.meta)} metadata rows but {n} feature rows")
        self.features = np.ascontiguousarray(self.features, dtype=np.float32)
        self.meta = _check_metadata(self.meta.reset_index(drop=True))

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def experiments(self) -> list[str]:
        return sorted(self.meta["Metadata_experiment"].unique())

    def subset(self, mask: np.ndarray | pd.Series) -> EmbeddingTable:
        """The rows where ``mask`` is true (a boolean array of length n)."""
        mask = np.asarray(mask, dtype=bool)
        return EmbeddingTable(
            self.meta[mask].reset_index(drop=True),
            self.features[mask],
            self.feature_names,
            self.fingerprint,
            dict(self.info),
        )

    def labels(self) -> np.ndarray:
        """``Metadata_sirna_id`` as int64 with -1 where unknown."""
        return self.meta["Metadata_sirna_id"].fillna(-1).to_numpy(dtype=np.int64)

    def labelled_mask(self) -> np.ndarray:
        """Rows whose ``Metadata_sirna_id`` is known."""
        return self.meta["Metadata_sirna_id"].notna().to_numpy(dtype=bool)

    def control_mask(self) -> np.ndarray:
        """Rows whose ``Metadata_well_type`` is a positive or negative control (whatever their label)."""
        return self.meta["Metadata_well_type"].isin(CONTROL_WELL_TYPES).to_numpy(dtype=bool)

    def experiment_mask(self, experiment: str) -> np.ndarray:
        return (self.meta["Metadata_experiment"] == experiment).to_numpy(dtype=bool)

    def cell_type_of(self, experiment: str) -> str:
        """The cell type of an experiment (its first row's; experiments hold one cell type)."""
        values = self.meta.loc[self.meta["Metadata_experiment"] == experiment, "Metadata_cell_type"]
        if values.empty:
            raise UnknownExperimentError(experiment, self.experiments)
        return str(values.iloc[0])

    @property
    def has_sites(self) -> bool:
        """Whether rows are sites (``Metadata_site`` present) rather than wells."""
        return "Metadata_site" in self.meta.columns

    def aggregate_sites(self) -> EmbeddingTable:
        """One row per well: the mean vector of its sites, the metadata of its first site (no-op for well tables).

        Indexes, plate assignment and evaluation work on wells (one siRNA per well), so site tables are
        averaged first.
        """
        if not self.has_sites:
            return self
        codes = self.meta.groupby(list(WELL_KEY), sort=False).ngroup().to_numpy()
        order = np.argsort(codes, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
        sums = np.add.reduceat(self.features[order].astype(np.float64), starts, axis=0)
        counts = np.diff(np.r_[starts, len(order)])
        meta = self.meta.iloc[order[starts]].drop(columns=["Metadata_site"]).reset_index(drop=True)
        return EmbeddingTable(
            meta, (sums / counts[:, None]).astype(np.float32), self.feature_names, self.fingerprint, dict(self.info)
        )

    def plate_metadata(self) -> pd.DataFrame:
        """The metadata under the canonical names of :mod:`phenoprint.data` (``experiment``, ``plate``,
        ``well``, ``well_type``, ``sirna_id``, ``cell_type``), e.g. for :func:`phenoprint.data.infer_plate_groups`."""
        cols = ["experiment", "plate", "well", "well_type", "sirna_id", "cell_type"]
        return self.meta.rename(columns={f"{METADATA_PREFIX}{c}": c for c in cols})[cols]

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, fingerprint: str | None = None, info: dict | None = None
    ) -> EmbeddingTable:
        """Split a flat frame into metadata and features.

        Feature columns are every numeric column whose name does not start with ``Metadata_`` (so
        pycytominer / CellProfiler profiles load unchanged); non-numeric non-metadata columns are refused.
        """
        meta_cols = [c for c in frame.columns if str(c).startswith(METADATA_PREFIX)]
        other = [c for c in frame.columns if c not in meta_cols]
        non_numeric = [c for c in other if not pd.api.types.is_numeric_dtype(frame[c]) or frame[c].dtype == bool]
        if non_numeric:
            raise EmbeddingTableError(
                f"column(s) {', '.join(map(str, non_numeric[:5]))} are neither Metadata_* nor numeric features; "
                "rename metadata columns with the Metadata_ prefix or drop them"
            )
        if not other:
            raise EmbeddingTableError("no feature columns: expected numeric columns besides the Metadata_* ones")
        features = frame[other].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(features)
        if bad.any():
            col = other[int(np.argwhere(bad.any(axis=0))[0, 0])]
            raise EmbeddingTableError(f"feature column {col!r} holds {int(bad.sum())} non-finite value(s) (NaN or inf)")
        return cls(frame[meta_cols], features.astype(np.float32), tuple(map(str, other)), fingerprint, info or {})

    def to_frame(self) -> pd.DataFrame:
        """The flat frame written to Parquet: metadata columns, then features."""
        feats = pd.DataFrame(self.features, columns=list(self.feature_names))
        return pd.concat([self.meta.reset_index(drop=True), feats], axis=1)


def _check_features(features: np.ndarray, n_names: int) -> tuple[int, int]:
    if not isinstance(features, np.ndarray) or features.ndim != 2:
        shape = getattr(features, "shape", None)
        raise EmbeddingTableError(
            f"features must be a 2-D array (n, d), got {type(features).__name__} of shape {shape}"
        )
    n, d = features.shape
    if d != n_names:
        raise EmbeddingTableError(f"features have {d} columns but {n_names} feature names were given")
    if d == 0:
        raise EmbeddingTableError("features have 0 columns")
    if not np.isfinite(features).all():
        raise EmbeddingTableError("features hold non-finite values (NaN or inf)")
    return n, d


def _check_metadata(meta: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_METADATA if c not in meta.columns]
    if missing:
        raise EmbeddingTableError(
            f"missing metadata column(s) {', '.join(missing)}; an embedding table needs {', '.join(REQUIRED_METADATA)}"
        )
    meta = meta.copy()
    for col, default in OPTIONAL_METADATA.items():
        if col not in meta.columns:
            log.info("embedding table has no %s column; using %r for every row", col, default)
            meta[col] = default
    meta["Metadata_experiment"] = meta["Metadata_experiment"].astype(str)
    meta["Metadata_well"] = meta["Metadata_well"].astype(str)
    meta["Metadata_cell_type"] = meta["Metadata_cell_type"].astype(str)
    meta["Metadata_well_type"] = meta["Metadata_well_type"].astype(str).str.strip().str.lower()
    unknown = ~meta["Metadata_well_type"].isin(WELL_TYPES)
    if unknown.any():
        raise EmbeddingTableError(
            f"column Metadata_well_type holds {meta['Metadata_well_type'][unknown].iloc[0]!r}; "
            f"expected one of {', '.join(WELL_TYPES)} (or drop the column: every row is then a treatment)"
        )
    for col in ("Metadata_plate", "Metadata_site"):
        if col in meta.columns:
            values = pd.to_numeric(meta[col], errors="coerce")
            if values.isna().any():
                raise EmbeddingTableError(
                    f"column {col} must hold integers; found {meta[col][values.isna()].iloc[0]!r}"
                )
            meta[col] = values.astype(np.int64)
    labels = pd.to_numeric(meta["Metadata_sirna_id"], errors="coerce")
    if (labels.isna() & meta["Metadata_sirna_id"].notna()).any() or (labels.dropna() % 1 != 0).any():
        raise EmbeddingTableError("column Metadata_sirna_id must hold integers (or nulls where the label is unknown)")
    meta["Metadata_sirna_id"] = labels.astype("Int64")
    return meta


def write_embeddings(table: EmbeddingTable, path: str | Path) -> Path:
    """Write a table to Parquet atomically (temporary file in the same folder, fsync, rename).

    The fingerprint and ``info`` travel in the Parquet key-value metadata under ``phenoprint``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = pa.Table.from_pandas(table.to_frame(), preserve_index=False)
    extra = {"format_version": TABLE_FORMAT_VERSION, "fingerprint": table.fingerprint, "dim": table.dim, **table.info}
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), PARQUET_META_KEY: json.dumps(extra)})
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)
    return path


def read_embeddings(path: str | Path, columns: Sequence[str] | None = None) -> EmbeddingTable:
    """Read and validate an embedding table (ours or a foreign profile table in the same column convention).

    Args:
        path: a Parquet file, or a folder of Parquet part files (``part-*.parquet``, as written by a
            multi-process export), read in name order.
        columns: restrict to these feature columns (default: all).

    Raises:
        EmbeddingTableError: unreadable file, missing metadata columns, non-finite values, mixed dimensions
            across parts, or parts from different models.
    """
    path = Path(path)
    # hidden names are temporaries and leftovers of interrupted writes, never parts
    files = sorted(f for f in path.glob("*.parquet") if not f.name.startswith(".")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise EmbeddingTableError(f"{path}: no Parquet file found (expected a .parquet file or a folder of them)")
    frames, infos = [], []
    for f in files:
        try:
            arrow = pq.read_table(f)
        except (pa.ArrowInvalid, OSError) as exc:
            raise EmbeddingTableError(f"{f}: not a readable Parquet file ({exc})") from exc
        raw = (arrow.schema.metadata or {}).get(PARQUET_META_KEY)
        infos.append(json.loads(raw) if raw else {})
        frames.append(arrow.to_pandas())
    widths = {len([c for c in fr.columns if not str(c).startswith(METADATA_PREFIX)]) for fr in frames}
    if len(widths) > 1:
        raise EmbeddingTableError(f"{path}: parts have different feature dimensions {sorted(widths)}")
    prints = {i.get("fingerprint") for i in infos}
    if len(prints) > 1:
        raise EmbeddingTableError(f"{path}: parts come from different models (fingerprints {sorted(map(str, prints))})")
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise EmbeddingTableError(f"{path}: no feature column(s) {', '.join(missing)}")
        frame = frame[[c for c in frame.columns if str(c).startswith(METADATA_PREFIX)] + list(columns)]
    info = {k: v for k, v in infos[0].items() if k not in ("format_version", "fingerprint", "dim")}
    try:
        return EmbeddingTable.from_frame(frame, fingerprint=infos[0].get("fingerprint"), info=info)
    except EmbeddingTableError as exc:
        raise EmbeddingTableError(f"{path}: {exc}") from exc


def concat_tables(parts: Sequence[EmbeddingTable], names: Sequence[str] | None = None) -> EmbeddingTable:
    """One table of several made by one model: the metadata columns they all have (and the siRNA name where any
    has it), the vectors stacked in order.

    Raises:
        EmbeddingTableError: no tables, or tables with other feature columns or from another model (named by
            ``names``, e.g. their files, else by position).
    """
    if not parts:
        raise EmbeddingTableError("no embedding tables to put together")
    label = list(names) if names is not None else [f"table {i + 1}" for i in range(len(parts))]
    first = parts[0]
    for name, t in zip(label[1:], parts[1:], strict=True):
        if t.feature_names != first.feature_names:
            raise EmbeddingTableError(
                f"{name} has {t.dim} feature columns ({t.feature_names[0]}…) where {label[0]} has {first.dim} "
                f"({first.feature_names[0]}…): put together only tables of one model and one feature set"
            )
        if t.fingerprint and first.fingerprint and t.fingerprint != first.fingerprint:
            raise EmbeddingTableError(
                f"{name} comes from model {t.fingerprint[:16]}…, {label[0]} from {first.fingerprint[:16]}…: "
                "embed every batch with the same model"
            )
    cols = [c for c in first.meta.columns if all(c in t.meta.columns for t in parts)]
    if "Metadata_sirna" not in cols and any("Metadata_sirna" in t.meta.columns for t in parts):
        cols.append("Metadata_sirna")
    meta = pd.concat([t.meta.reindex(columns=cols) for t in parts], ignore_index=True)
    fingerprint = next((t.fingerprint for t in parts if t.fingerprint), None)
    return EmbeddingTable(meta, np.concatenate([t.features for t in parts]), first.feature_names, fingerprint)
