"""An index directory on disk: its file names and format version, and what a load refuses (manifest, hashes, arrays)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenoprint.errors import IndexFormatError
from phenoprint.index.centering import CenteringStats
from phenoprint.index.config import IndexConfig
from phenoprint.index.table_centering import ENSEMBLE, VIEW_SEP

#: Bumped whenever the directory layout or the meaning of a stored file changes; older indexes are refused.
#: 2: the manifest records each file's size and SHA-256 (``files: {name: {bytes, sha256}}``), verified at load.
FORMAT_VERSION = 2
ARTIFACT_KIND = "phenoprint.experiment_index"
INDEX_FILE = "index.faiss"
ENTRIES_FILE = "entries.parquet"
CENTERING_FILE = "centering.npz"
PLATE_GROUPS_FILE = "plate_groups.json"
PRODUCER_ARRAYS_FILE = "producer.npz"  # optional: arrays of whoever made the vectors (e.g. adapted BN statistics)
ENTRY_COLUMNS = ("sirna_id", "experiment", "plate", "well", "cell_type", "well_type", "kind")
ENTRY_KINDS = ("control", "training")  # the target's own control wells | labelled wells of other experiments
REQUIRED_FILES = (INDEX_FILE, ENTRIES_FILE, CENTERING_FILE)


def file_record(path: Path) -> dict[str, Any]:
    """What the manifest records of one file: its size and SHA-256."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": h.hexdigest()}


def check_files(path: Path, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's file list, every file present with the size and content hash it records.

    Only listed files are ever read: a file dropped into the folder later is ignored, one replaced later is refused.
    """
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise IndexFormatError(f"{path}: the manifest does not list the index's files with their sizes and hashes")
    unlisted = [f for f in REQUIRED_FILES if f not in files]
    if unlisted:
        raise IndexFormatError(f"{path}: the manifest does not list {', '.join(unlisted)}")
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise IndexFormatError(f"{path}: missing file(s) {', '.join(missing)} listed in the manifest")
    for name, want in files.items():
        size = (path / name).stat().st_size
        if size != want.get("bytes"):
            raise IndexFormatError(
                f"{path}: {name} is {size:,} bytes, the manifest says {want.get('bytes')}; the file was replaced or "
                "damaged after the index was written (rebuild it)"
            )
        if file_record(path / name)["sha256"] != want.get("sha256"):
            raise IndexFormatError(
                f"{path}: {name} does not match the content hash in the manifest; the file was replaced or damaged "
                "after the index was written (rebuild it)"
            )
    return files


def entry_problems(entries: pd.DataFrame) -> list[str]:
    """What is wrong with the entry table's columns: missing ones, wrong dtypes, unknown kinds, missing labels."""
    missing = sorted(set(ENTRY_COLUMNS) - set(entries.columns))
    if missing:
        return [f"{ENTRIES_FILE} lacks column(s) {missing}"]
    problems = []
    for column in ("sirna_id", "plate"):
        dtype = entries[column].dtype
        if not pd.api.types.is_integer_dtype(dtype) or entries[column].isna().any():
            problems.append(f"{ENTRIES_FILE} column {column} is of type {dtype}, expected integers without gaps")
    for column in ("experiment", "well", "cell_type", "well_type", "kind"):
        if not entries[column].map(lambda v: isinstance(v, str)).all():
            problems.append(f"{ENTRIES_FILE} column {column} holds values that are not text")
    unknown = sorted(set(entries["kind"].astype(str)) - set(ENTRY_KINDS))
    if unknown:
        problems.append(f"{ENTRIES_FILE} column kind holds {unknown[0]!r}; expected one of {', '.join(ENTRY_KINDS)}")
    return problems


def centering_problems(
    centering: dict[str, CenteringStats], manifest: dict[str, Any], config: IndexConfig, dim: int
) -> list[str]:
    """Every stored statistic against the manifest: the batch keys, the method, each array's shape, finite values."""
    experiment = str(manifest.get("experiment"))
    recorded = manifest.get("centering") or {}
    expected = sorted((recorded.get("n_reference") or {}).keys())
    if not config.per_plate and expected != [experiment]:
        expected = [experiment]
    if sorted(centering) != expected:
        return [
            f"{CENTERING_FILE} holds centering statistics for {', '.join(sorted(centering)) or 'nothing'}; expected "
            f"{', '.join(expected)}"
        ]
    problems = []
    for key, stats in centering.items():
        where = f"{CENTERING_FILE} [{key}]"
        view, sep, _ = key.rpartition(VIEW_SEP)  # an ensemble's keys are view::batch
        if sep and config.center != ENSEMBLE:
            problems.append(f"{where} is an ensemble's view, the manifest says {config.center!r}")
        elif sep and view.partition("/")[0] != stats.method:
            problems.append(f"{where} was fitted with {stats.method!r}, its key says {view!r}")
        elif not sep and config.center == ENSEMBLE:
            problems.append(f"{where} names no view of the ensemble the manifest says")
        elif not sep and stats.method != config.center:
            problems.append(f"{where} was fitted with {stats.method!r}, the manifest says {config.center!r}")
        p = stats.components.shape[1] if stats.components.ndim == 2 else -1
        for name, array, shape in (
            ("mean", stats.mean, (dim,)),
            ("scale", stats.scale, (dim,)),
            ("components", stats.components, (dim, max(p, 0))),
            ("gains", stats.gains, (max(p, 0),)),
        ):
            if array.shape != shape or not np.issubdtype(array.dtype, np.floating):
                problems.append(f"{where} {name} has shape {array.shape} ({array.dtype}), expected {shape} (float)")
            elif not np.isfinite(array).all():
                problems.append(f"{where} {name} holds non-finite values")
        if not problems and (stats.scale <= 0).any():
            problems.append(f"{where} scale holds values <= 0")
        if not np.isfinite(stats.isotropic):
            problems.append(f"{where} isotropic gain is {stats.isotropic}")
    return problems


def array_problems(arrays: dict[str, np.ndarray]) -> list[str]:
    """Arrays that are not numeric or hold non-finite values (the index cannot know their shapes: its user checks)."""
    problems = []
    for name, array in arrays.items():
        if not np.issubdtype(array.dtype, np.number):
            problems.append(f"{name} is of type {array.dtype}, expected numbers")
        elif not np.isfinite(array).all():
            problems.append(f"{name} holds non-finite values")
    return problems


def check_manifest(
    path: Path, manifest: dict[str, Any], expected_fingerprint: str | None, expected_dim: int | None
) -> None:
    if manifest.get("artifact") != ARTIFACT_KIND:
        raise IndexFormatError(f"{path}: the manifest is not that of a phenoprint experiment index")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: index format version {version}, but this phenoprint reads version {FORMAT_VERSION}; "
            "rebuild the index with `phenoprint index build`"
        )
    if expected_fingerprint is not None and manifest.get("fingerprint") != expected_fingerprint:
        raise IndexFormatError(
            f"{path}: built from embeddings of model {manifest.get('fingerprint')!r}, but the queries come from model "
            f"{expected_fingerprint!r}; rebuild the index from that model's embeddings"
        )
    if expected_dim is not None and manifest.get("dim") != expected_dim:
        raise IndexFormatError(
            f"{path}: index of dimension {manifest.get('dim')}, but the queries have dimension {expected_dim}"
        )
