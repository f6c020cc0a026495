"""What ``phenoprint predict`` wrote, as served: its Parquet files read per experiment, reloaded when rewritten."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import pandas as pd

from phenoprint.index.decode import PREDICTION_KEY

log = logging.getLogger(__name__)

#: The columns that make a Parquet file a predictions table (``phenoprint predict --out``); others are skipped.
REQUIRED_COLUMNS = (
    *PREDICTION_KEY,
    "top1_sirna_id",
    "top1_score",
    "unknown",
    "plate_group",
    "plate_group_margin",
    "assigned_sirna_id",
    "assigned_score",
    "confidence",
    "assigned",
)
#: The file an experiment's own predictions may have inside a folder of the scanned one (``<DIR>/<EXP>/``).
NESTED_NAME = "predictions.parquet"

#: (inode, mtime in ns, size) of one written version of a file: ``atomic_path`` renames a new file into place.
FileStamp = tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class ExperimentPredictions:
    """One experiment's rows of a predictions file.

    Attributes:
        experiment: the experiment.
        wells: its rows (``phenoprint.index.decode.BatchPrediction.wells`` columns), sorted by plate and well.
        path: the file they came from.
        modified: the file's modification time (Unix time), which decides between two files of one experiment.
        loaded_at: when this service read them (Unix time).
    """

    experiment: str
    wells: pd.DataFrame
    path: Path
    modified: float
    loaded_at: float

    @property
    def k(self) -> int:
        """Per-well candidates the file reports (``top1…topk``)."""
        return sum(1 for c in self.wells.columns if c.startswith("top") and c.endswith("_sirna_id"))

    @property
    def labelled(self) -> bool:
        """Whether any well carries its true siRNA (a labelled or synthetic batch)."""
        return "true_sirna_id" in self.wells.columns and bool(self.wells["true_sirna_id"].notna().any())


@dataclass(frozen=True)
class _FileEntry:
    stamp: FileStamp
    experiments: Mapping[str, ExperimentPredictions] = field(default_factory=dict)
    problem: str | None = None  # why a predictions file was refused (None: read, or not a predictions file)


class PredictionStore:
    """The predictions files found under ``sources``, swapped in atomically when one is written, replaced or removed.

    A source is a Parquet file, or a folder whose ``*.parquet`` files and ``<sub-folder>/predictions.parquet`` files
    are read (files whose schema lacks :data:`REQUIRED_COLUMNS`, such as an index's ``entries.parquet`` or an
    embedding table, are skipped without reading their data; names starting with ``.`` are temporaries). When two
    files hold the same experiment, the newer one is served. Readers take :meth:`snapshot` once per request.

    Args:
        sources: files or folders to scan.
    """

    def __init__(self, sources: tuple[Path, ...]) -> None:
        self.sources = sources
        self._files: dict[Path, _FileEntry] = {}
        self._by_experiment: Mapping[str, ExperimentPredictions] = MappingProxyType({})
        self._lock = threading.Lock()

    def snapshot(self) -> Mapping[str, ExperimentPredictions]:
        """Experiment → its predictions, as served now (immutable)."""
        return self._by_experiment

    def get(self, experiment: str) -> ExperimentPredictions | None:
        return self._by_experiment.get(experiment)

    @property
    def refused(self) -> dict[str, str]:
        """Predictions files that could not be read, and why (by file name)."""
        return {str(path): entry.problem for path, entry in self._files.items() if entry.problem is not None}

    def refresh(self) -> tuple[str, ...]:
        """Scan the sources once (blocking); returns the experiments whose predictions changed or appeared."""
        with self._lock:
            files = self._candidates()
            fresh: dict[Path, _FileEntry] = {}
            for path in files:
                try:
                    stamp = _stamp(path)
                except OSError:
                    continue  # vanished between the listing and the stat
                old = self._files.get(path)
                fresh[path] = old if old is not None and old.stamp == stamp else _read(path, stamp)
            self._files = fresh
            merged: dict[str, ExperimentPredictions] = {}
            for entry in fresh.values():
                for name, preds in entry.experiments.items():
                    other = merged.get(name)
                    if other is None or preds.modified > other.modified:
                        if other is not None:
                            log.info("predictions of %s: serving %s, newer than %s", name, preds.path, other.path)
                        merged[name] = preds
            changed = tuple(sorted(n for n, p in merged.items() if self._by_experiment.get(n) is not p))
            self._by_experiment = MappingProxyType(merged)
            return changed

    def _candidates(self) -> list[Path]:
        found: list[Path] = []
        for source in self.sources:
            if source.is_file():
                found.append(source)
                continue
            try:
                with os.scandir(source) as it:
                    entries = sorted((e.name, e.is_dir()) for e in it if not e.name.startswith("."))
            except OSError:
                continue
            for name, is_dir in entries:
                if is_dir:
                    nested = source / name / NESTED_NAME
                    if nested.is_file():
                        found.append(nested)
                elif name.endswith(".parquet"):
                    found.append(source / name)
        return list(dict.fromkeys(found))


def _stamp(path: Path) -> FileStamp:
    st = os.stat(path)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read(path: Path, stamp: FileStamp) -> _FileEntry:
    """One file: skipped when it is no predictions table, refused (logged once per version) when it cannot be read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        problem = f"{path}: not a readable Parquet file ({exc})"
        log.warning("predictions file refused: %s", problem)
        return _FileEntry(stamp, problem=problem)
    if not set(REQUIRED_COLUMNS) <= names:
        log.debug("%s is not a predictions table (no %s columns): skipped", path, ", ".join(REQUIRED_COLUMNS))
        return _FileEntry(stamp)
    try:
        frame = pd.read_parquet(path)
        frame = _checked(frame)
    except (OSError, pa.ArrowException, ValueError) as exc:
        problem = f"{path}: {exc}"
        log.warning("predictions file refused: %s", problem)
        return _FileEntry(stamp, problem=problem)
    now = time.time()
    modified = stamp[1] / 1e9
    experiments = {
        str(name): ExperimentPredictions(str(name), rows.reset_index(drop=True), path, modified, now)
        for name, rows in frame.groupby("Metadata_experiment", sort=True)
    }
    log.info("read predictions of %s from %s", ", ".join(experiments) or "no experiment", path)
    return _FileEntry(stamp, MappingProxyType(experiments))


def _checked(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with typed keys, sorted by plate and well.

    Raises:
        ValueError: a key that is not an integer plate or a well name, or a well listed twice.
    """
    frame = frame.copy()
    try:
        frame["Metadata_plate"] = frame["Metadata_plate"].astype("int64")
        frame["assigned_sirna_id"] = frame["assigned_sirna_id"].astype("int64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"plates and siRNA ids must be integers ({exc})") from None
    frame["Metadata_experiment"] = frame["Metadata_experiment"].astype(str)
    frame["Metadata_well"] = frame["Metadata_well"].astype(str).str.strip().str.upper()
    bad = ~frame["Metadata_well"].str.fullmatch(r"[A-Z]{1,2}\d{1,2}")
    if bad.any():
        raise ValueError(f"well {frame['Metadata_well'][bad].iloc[0]!r} is not a well name like B02")
    dup = frame.duplicated(list(PREDICTION_KEY))
    if dup.any():
        row = frame[dup].iloc[0]
        raise ValueError(f"{row.Metadata_experiment} plate {row.Metadata_plate} well {row.Metadata_well} listed twice")
    return frame.sort_values(list(PREDICTION_KEY), kind="stable").reset_index(drop=True)
