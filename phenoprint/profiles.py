"""CellProfiler / pycytominer well profiles (CSV or Parquet, gzip ok) read into phenoprint's embedding table."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenoprint.data.table import METADATA_PREFIX, EmbeddingTable
from phenoprint.errors import EmbeddingTableError

log = logging.getLogger(__name__)

#: pycytominer's ``feature_select(operation="drop_na_columns")`` default: a feature missing in more than this share
#: of the wells is dropped.
DEFAULT_NA_CUTOFF = 0.05
#: How several label columns are joined into one label (e.g. compound and dose: ``BRD-K123@10.0``).
LABEL_JOIN = "@"


@dataclass(frozen=True)
class ProfileColumns:
    """Which profile columns say what (their names as CellProfiler / pycytominer write them)."""

    label: tuple[str, ...]  # the label column(s); several are joined with "@" (e.g. compound and dose)
    experiment: str = "Metadata_batch"  # the batch each well belongs to (centering is fitted per batch)
    plate: str = "Metadata_Plate"  # the plate barcode (numbered 1, 2, ... within each batch)
    well: str = "Metadata_Well"  # the well position (A01 ...)
    controls: str | None = None  # a pandas query selecting the control wells, e.g. 'Metadata_control_type == "negcon"'
    rows: str | None = None  # a pandas query keeping only some wells (e.g. leaving out transfection controls)
    cell_type: str | None = None  # a column naming the cell type (None: every well "unknown")
    control_label: str = "control"  # the label of a control well whose label column is empty (e.g. DMSO wells)
    na_cutoff: float = DEFAULT_NA_CUTOFF  # features missing in more than this share of wells are dropped

    def __post_init__(self) -> None:
        if not self.label:
            raise ValueError("label must name at least one column")
        if not 0 <= self.na_cutoff < 1:
            raise ValueError(f"na_cutoff must be in [0, 1); got {self.na_cutoff}")


@dataclass(frozen=True)
class ProfileImport:
    """An imported profile table and what was left out on the way.

    Attributes:
        table: the embedding table (``Metadata_label`` holds each well's label text, ``Metadata_plate_name`` its
            barcode; ``Metadata_sirna_id`` numbers the labels in ``table.info["labels"]`` order).
        files: the files read, in order.
        not_shared: features present in some files but not all (dropped: a feature must exist in every batch).
        mostly_missing: features missing (NaN or inf) in more than ``na_cutoff`` of the wells (dropped).
        dropped_wells: wells still missing a kept feature (dropped rather than filled with made-up values).
        controls: how many wells the control query selected.
    """

    table: EmbeddingTable
    files: tuple[str, ...]
    not_shared: tuple[str, ...]
    mostly_missing: tuple[str, ...]
    dropped_wells: int
    controls: int
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """What was read and what was dropped, in words (the CLI prints it)."""
        t = self.table
        lines = [
            f"{len(t)} wells of {len(t.experiments)} batch(es), {int(t.meta['Metadata_plate_name'].nunique())} "
            f"plate barcode(s), {t.dim} features, {len(t.info.get('labels', []))} labels, {self.controls} controls "
            f"(from {len(self.files)} file(s))",
            f"dropped {len(self.not_shared)} feature(s) not present in every file"
            + (f" (e.g. {', '.join(self.not_shared[:3])})" if self.not_shared else ""),
            f"dropped {len(self.mostly_missing)} feature(s) missing in more than the na_cutoff share of wells"
            + (f" (e.g. {', '.join(self.mostly_missing[:3])})" if self.mostly_missing else ""),
            f"dropped {self.dropped_wells} well(s) missing a kept feature",
        ]
        return "\n".join(lines + self.notes)


def read_profile_file(path: str | Path) -> pd.DataFrame:
    """One profile file as a frame: ``.parquet``, or CSV (``.csv``, ``.csv.gz``, ``.tsv``...; compression by suffix).

    Raises:
        EmbeddingTableError: missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise EmbeddingTableError(f"{path}: no such profile file (expected a CSV or Parquet file)")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        sep = "\t" if ".tsv" in path.suffixes or ".txt" in path.suffixes else ","
        return pd.read_csv(path, sep=sep, low_memory=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise EmbeddingTableError(f"{path}: not a readable CSV or Parquet profile file ({exc})") from exc


def missing_value_masks(x: np.ndarray, na_cutoff: float = DEFAULT_NA_CUTOFF) -> tuple[np.ndarray, np.ndarray]:
    """Which features to keep and which wells, where values are missing (NaN or inf): a feature missing in more than
    ``na_cutoff`` of the wells goes, as pycytominer's ``feature_select(operation="drop_na_columns")`` drops it, then
    a well still missing a kept feature goes (never filled with zeros, which would be a made-up measurement).

    Returns:
        (features kept, wells kept) boolean masks.

    Raises:
        EmbeddingTableError: every feature is over the cutoff, or every well misses a kept feature.
    """
    missing = ~np.isfinite(x)
    keep = missing.mean(axis=0) <= na_cutoff
    if not keep.any():
        raise EmbeddingTableError(
            f"every one of the {x.shape[1]} shared features is missing in more than {na_cutoff:.0%} of the "
            "wells (raise --na-cutoff, or check the files)"
        )
    good_rows = ~missing[:, keep].any(axis=1)
    if not good_rows.any():
        raise EmbeddingTableError("every well is missing a kept feature; nothing to import")
    return keep, good_rows


def import_profiles(paths: Sequence[str | Path], columns: ProfileColumns) -> ProfileImport:
    """Read profile files and map their columns onto an embedding table.

    Features are the non-``Metadata_`` columns, kept only where every file has them and numeric in all; a feature
    missing (NaN or inf) in more than ``na_cutoff`` of the wells is dropped, as pycytominer's
    ``feature_select(operation="drop_na_columns")`` would; a well still missing a kept feature is dropped (never
    filled with zeros, which would be a made-up measurement).

    Raises:
        EmbeddingTableError: no files, a file without a named column, a non-numeric feature column, a control query
            that is invalid or selects no well, or nothing left after the drops.
    """
    if not paths:
        raise EmbeddingTableError("no profile files given")
    names = tuple(str(p) for p in paths)
    frames = [read_profile_file(p) for p in paths]
    if columns.rows is not None:
        frames = [
            f[_query_mask(f, columns.rows, "--rows", n)].reset_index(drop=True)
            for f, n in zip(frames, names, strict=True)
        ]
    needed = [columns.experiment, columns.plate, columns.well, *columns.label]
    if columns.cell_type:
        needed.append(columns.cell_type)
    for name, frame in zip(names, frames, strict=True):
        _check_columns(name, frame, needed)
    per_file = [[str(c) for c in f.columns if not str(c).startswith(METADATA_PREFIX)] for f in frames]
    shared = set(per_file[0]).intersection(*per_file[1:])
    features = [c for c in per_file[0] if c in shared]
    not_shared = sorted(set().union(*per_file) - shared)
    if not features:
        raise EmbeddingTableError(
            f"no feature column is shared by all {len(frames)} files (features are the non-{METADATA_PREFIX} columns)"
        )
    for name, frame in zip(names, frames, strict=True):
        _check_numeric(name, frame, features)
    frame = pd.concat([f[[*dict.fromkeys(needed + _query_columns(f, columns.controls)), *features]] for f in frames])
    frame = frame.reset_index(drop=True)
    x = frame[features].to_numpy(dtype=np.float64)
    keep, good_rows = missing_value_masks(x, columns.na_cutoff)
    mostly_missing = [c for c, k in zip(features, keep, strict=True) if not k]
    controls = _control_mask(frame, columns.controls)
    meta = _metadata(frame, columns, controls)
    kept = [c for c, k in zip(features, keep, strict=True) if k]
    meta, x, controls = meta[good_rows].reset_index(drop=True), x[good_rows][:, keep], controls[good_rows]
    labels = meta.pop("_label")
    codes, uniques = pd.factorize(labels)
    meta["Metadata_sirna_id"] = pd.array(np.where(codes >= 0, codes, -1), dtype="Int64")
    meta.loc[codes < 0, "Metadata_sirna_id"] = pd.NA
    meta["Metadata_label"] = labels.astype("string")
    info: dict[str, Any] = {
        "source": "profiles",
        "labels": [str(u) for u in uniques],
        "label_columns": list(columns.label),
        "controls": columns.controls,
    }
    table = EmbeddingTable(meta, x.astype(np.float32), tuple(kept), None, info)
    notes = []
    if columns.controls is None:
        notes.append("no --controls given: every well is a treatment (centre on all wells: --center-on all)")
    result = ProfileImport(
        table, names, tuple(not_shared), tuple(mostly_missing), int((~good_rows).sum()), int(controls.sum()), notes
    )
    log.info("imported profiles: %s", result.summary().replace("\n", "; "))
    return result


def _check_columns(name: str, frame: pd.DataFrame, needed: list[str]) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        meta = [str(c) for c in frame.columns if str(c).startswith(METADATA_PREFIX)]
        raise EmbeddingTableError(
            f"{name}: no column {', '.join(repr(c) for c in missing)}; its metadata columns are "
            f"{', '.join(meta[:20]) or 'none'} (name the right ones with --label/--experiment/--plate/--well)"
        )


def _check_numeric(name: str, frame: pd.DataFrame, features: list[str]) -> None:
    bad = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c]) or frame[c].dtype == bool]
    if bad:
        example = frame[bad[0]].dropna().astype(str).head(1).tolist()
        value = example[0] if example else "?"
        raise EmbeddingTableError(
            f"{name}: feature column(s) {', '.join(bad[:5])} are not numeric (e.g. {value!r}); "
            f"features are the non-{METADATA_PREFIX} columns: rename metadata columns with the prefix"
        )


def _query_columns(frame: pd.DataFrame, query: str | None) -> list[str]:
    """The columns a control query may use: every metadata column (the query names which)."""
    if query is None:
        return []
    return [str(c) for c in frame.columns if str(c).startswith(METADATA_PREFIX)]


def _query_mask(
    frame: pd.DataFrame, query: str, option: str, where: str = "the profiles", hint: str = ""
) -> np.ndarray:
    """The rows a pandas query selects (refused, with the option's name, when invalid or when it selects nothing)."""
    try:
        mask = frame.eval(query)
    except Exception as exc:  # pandas raises many kinds (UndefinedVariableError, SyntaxError, TypeError ...)
        raise EmbeddingTableError(
            f"{option} {query!r} is not a valid query on the columns of {where} ({type(exc).__name__}: {exc}); "
            "expected e.g. 'Metadata_control_type == \"negcon\"'"
        ) from exc
    mask = np.asarray(mask)
    if mask.shape != (len(frame),) or mask.dtype != bool:
        raise EmbeddingTableError(f"{option} {query!r} must give one true/false per well; got {mask.dtype}")
    if not mask.any():
        raise EmbeddingTableError(f"{option} {query!r} selects no well of {where}{hint}")
    return mask


def _control_mask(frame: pd.DataFrame, query: str | None) -> np.ndarray:
    """The rows the control query selects (all false without a query)."""
    if query is None:
        return np.zeros(len(frame), dtype=bool)
    hint = "; leave it out for profiles without controls (and centre on all wells: --center-on all)"
    return _query_mask(frame, query, "--controls", hint=hint)


def _metadata(frame: pd.DataFrame, columns: ProfileColumns, controls: np.ndarray) -> pd.DataFrame:
    """The embedding table's metadata: batch, plate numbered within its batch, well, label text, well type."""
    exp = frame[columns.experiment].astype(str)
    plate_name = frame[columns.plate].astype(str)
    plate = pd.Series(0, index=frame.index, dtype=np.int64)
    for _, rows in frame.groupby(exp, sort=False).groups.items():
        plate[rows] = pd.factorize(plate_name[rows], sort=True)[0] + 1
    parts = [frame[c] for c in columns.label]
    label = parts[0].astype("string")
    for part in parts[1:]:
        label = label + LABEL_JOIN + part.astype("string")
    # a control is a class of its own even where the label column is left empty (pycytominer leaves DMSO wells so)
    label = label.mask(controls & label.isna().to_numpy(), columns.control_label)
    meta = pd.DataFrame(
        {
            "Metadata_experiment": exp,
            "Metadata_plate": plate,
            "Metadata_plate_name": plate_name,
            "Metadata_well": frame[columns.well].astype(str),
            "Metadata_cell_type": frame[columns.cell_type].astype(str) if columns.cell_type else "unknown",
            "Metadata_well_type": np.where(controls, "negative_control", "treatment"),
            "_label": label,
        }
    )
    dup = meta.duplicated(["Metadata_experiment", "Metadata_plate", "Metadata_well"])
    if dup.any():
        row = meta[dup].iloc[0]
        raise EmbeddingTableError(
            f"well {row['Metadata_well']} of plate {row['Metadata_plate_name']} in batch {row['Metadata_experiment']} "
            "appears twice; expected one profile per well (aggregate sites first, or name the batch column)"
        )
    return meta
