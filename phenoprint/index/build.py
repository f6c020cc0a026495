"""Per-experiment index: batch-centred control and training wells in FAISS, saved as an atomic directory."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import faiss
import numpy as np
import pandas as pd

from phenoprint import __version__
from phenoprint.data.plate import PlateGroups, infer_plate_groups
from phenoprint.errors import EmbeddingTableError, IndexFormatError, MetadataError, UnknownExperimentError
from phenoprint.index import faiss_backend
from phenoprint.index.artifact import MANIFEST_NAME, read_json, write_artifact_dir, write_json
from phenoprint.index.centering import (
    CENTER_METHODS,
    DEFAULT_RIDGE,
    REFERENCES,
    CenteringStats,
    apply_centering,
    apply_centering_by,
    fit_centering_by,
    load_centering,
    save_centering,
)
from phenoprint.index.classify import MODES, Prediction
from phenoprint.index.faiss_backend import INDEX_KINDS, Neighbors
from phenoprint.index.openset import (
    DEFAULT_QUANTILE,
    MAX_TRAINING_CALIBRATION,
    OpenSetThreshold,
    calibrate_open_set,
    cross_batch_centroid_similarity,
)
from phenoprint.index.table import EmbeddingTable

log = logging.getLogger(__name__)

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

Scope = Literal["same_cell_type", "all"]
SCOPES: tuple[str, ...] = get_args(Scope)
CalibrationSource = Literal["controls", "training"]
CALIBRATION_SOURCES: tuple[str, ...] = get_args(CalibrationSource)


@dataclass(frozen=True)
class IndexConfig:
    """How a per-experiment index is built and queried (saved resolved in every index's manifest)."""

    center: str = "tvn"  # none | center | center_scale | tvn (fitted per experiment on its reference wells) | auto
    reference: str = "controls"  # controls | all: which wells the centering statistics are fitted on
    pca_dim: int | None = None  # TVN: components estimated one by one (None: half the reference wells, at most d)
    ridge: float = DEFAULT_RIDGE  # TVN: λ of (Σ + λI)^(-1/2) as a fraction of the mean eigenvalue
    per_plate: bool = False  # fit the statistics per (experiment, plate) instead of per experiment
    scope: str = "same_cell_type"  # same_cell_type | all: which other experiments' labelled wells are indexed
    kind: str = "flat"  # flat (exact) | ivf | hnsw (approximate, for large references)
    nlist: int | None = None  # IVF: inverted lists (None: about 4·sqrt(entries))
    nprobe: int = 16  # IVF: lists visited per query
    hnsw_m: int = 32  # HNSW: neighbours per node
    ef_construction: int = 200  # HNSW: candidate list while building
    ef_search: int = 128  # HNSW: candidate list while searching
    n_neighbors: int = 50  # kNN classification: neighbours that vote
    temperature: float = 0.1  # kNN classification: vote weight exp((cos - best cos) / temperature)
    open_set_quantile: float = DEFAULT_QUANTILE  # accepted false-unknown rate on the calibration wells (0: off)
    open_set_calibration: str = "training"  # training (other experiments' treatments) | controls (the target's own)
    mode: str = "centroid"  # knn | centroid: how the service and `predict` name wells (auto: chosen on the controls)

    def __post_init__(self) -> None:
        for name, allowed in (
            ("center", (*CENTER_METHODS, "auto")),
            ("mode", (*MODES, "auto")),
            ("reference", REFERENCES),
            ("scope", SCOPES),
            ("kind", INDEX_KINDS),
            ("open_set_calibration", CALIBRATION_SOURCES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        positive = ("nprobe", "hnsw_m", "ef_construction", "ef_search", "n_neighbors")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        for name in ("pca_dim", "nlist"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1 or None; got {value}")
        if not self.ridge > 0:
            raise ValueError(f"ridge must be > 0; got {self.ridge}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature}")
        if not 0 <= self.open_set_quantile < 1:
            raise ValueError(f"open_set_quantile must be in [0, 1); got {self.open_set_quantile}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndexConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown IndexConfig field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------------------------------
# centering a whole table


def batch_keys(meta: pd.DataFrame, per_plate: bool) -> np.ndarray:
    """The centering batch of each row: its experiment, or ``experiment/plate`` when fitting per plate."""
    exp = meta["Metadata_experiment"].astype(str)
    if per_plate:
        return (exp + "/" + meta["Metadata_plate"].astype(str)).to_numpy(dtype=str)
    return exp.to_numpy(dtype=str)


def reference_mask(table: EmbeddingTable, reference: str) -> np.ndarray:
    """The rows centering statistics are fitted on: control wells (by ``Metadata_well_type``) or all wells."""
    if reference == "controls":
        return table.control_mask()
    if reference == "all":
        return np.ones(len(table), dtype=bool)
    raise ValueError(f"reference must be one of {', '.join(REFERENCES)}; got {reference!r}")


def fit_table_centering(
    table: EmbeddingTable, method: str, reference: str, *, pca_dim: int | None, ridge: float, per_plate: bool
) -> dict[str, CenteringStats]:
    """Fit every batch of the table on its own reference wells (one set of statistics per experiment or plate).

    Raises:
        EmbeddingTableError: a batch has no (or too few) reference wells; the message suggests ``--center-on all``.
    """
    keys = batch_keys(table.meta, per_plate)
    ref = reference_mask(table, reference)
    if method != "none":
        need = 1 if method == "center" else 2
        counts = pd.Series(ref).groupby(keys).sum()
        short = counts[counts < need]
        if len(short):
            controls = reference == "controls"
            what = "control wells (Metadata_well_type positive_control/negative_control)" if controls else "wells"
            hint = "; use --center-on all to centre on all its wells (for data without controls)" if controls else ""
            others = f" ({len(short)} batches are short)" if len(short) > 1 else ""
            raise EmbeddingTableError(
                f"batch {short.index[0]} has {int(short.iloc[0])} {what} but centering {method!r} needs at least "
                f"{need}{others}{hint}"
            )
    return fit_centering_by(table.features, keys, ref, method, pca_dim=pca_dim, ridge=ridge)


def center_table(table: EmbeddingTable, stats: dict[str, CenteringStats], per_plate: bool) -> np.ndarray:
    """Every row centred with its own batch's statistics: (n, d) L2-normalized float32."""
    return apply_centering_by(table.features, batch_keys(table.meta, per_plate), stats)


# ---------------------------------------------------------------------------------------------------------------------
# the index


class ExperimentIndex:
    """The searchable reference of one experiment: centred entries in FAISS, their labels, and how to centre queries.

    Built by :func:`build_experiment_index` or read by :meth:`load`; queries are centred with the experiment's own
    stored statistics (:meth:`center`), never with statistics recomputed per query.

    Attributes:
        entries: one row per indexed well (:data:`ENTRY_COLUMNS`, plus ``sirna``, the siRNA's name, when the
            embedding table had ``Metadata_sirna``); row i is FAISS id i.
        vectors: (n, d) float32 centred unit vectors of the entries.
        centering: batch key (``experiment`` or ``experiment/plate``) → the experiment's fitted statistics.
        config: the resolved build configuration.
        open_set: the calibrated unknown threshold.
        plate_groups: treatment groups learned from the labelled wells of the other experiments in scope (None
            when there were no labelled treatments to learn them from).
        manifest: what ``manifest.json`` says (format version, dims, counts, fingerprint, creation time …).
        producer_arrays: named arrays stored for whoever made the vectors (``producer.npz``; opaque to the index:
            the embedder keeps the experiment's adapted batch-norm statistics there).
    """

    def __init__(
        self,
        *,
        faiss_index: faiss.Index,
        vectors: np.ndarray,
        entries: pd.DataFrame,
        centering: dict[str, CenteringStats],
        config: IndexConfig,
        open_set: OpenSetThreshold,
        plate_groups: PlateGroups | None,
        manifest: dict[str, Any],
        producer_arrays: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.entries = entries
        self.producer_arrays = dict(producer_arrays or {})
        self.vectors = vectors
        self.centering = centering
        self.config = config
        self.open_set = open_set
        self.plate_groups = plate_groups
        self.manifest = manifest
        self._cpu_index = faiss_index
        self._device_index: faiss.Index | None = None

    @property
    def experiment(self) -> str:
        return str(self.manifest["experiment"])

    @property
    def cell_type(self) -> str:
        return str(self.manifest["cell_type"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def fingerprint(self) -> str | None:
        return self.manifest.get("fingerprint")

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return (
            f"ExperimentIndex({self.experiment!r}, {len(self)} entries, {len(self.sirna_ids)} siRNAs, dim {self.dim}, "
            f"{self.config.center}/{self.config.reference}, {self.config.kind})"
        )

    # -- queries ------------------------------------------------------------------------------------------------------

    def center(self, x_raw: np.ndarray, plates: np.ndarray | None = None) -> np.ndarray:
        """Centre raw vectors of this experiment with its stored statistics; (n, d) L2-normalized float32.

        Args:
            x_raw: (n, d) raw embeddings of wells of this experiment.
            plates: (n,) plate numbers, required when the index was fitted per plate.
        """
        x = np.asarray(x_raw)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x_raw must have shape (n, {self.dim}); got {x.shape}")
        if not self.config.per_plate:
            return apply_centering(x, self.centering[self.experiment])
        if plates is None:
            raise ValueError(f"the index of {self.experiment} was centred per plate: pass plates=(n,) plate numbers")
        keys = np.array([f"{self.experiment}/{int(p)}" for p in np.asarray(plates).ravel()])
        if keys.shape != (len(x),):
            raise ValueError(f"plates must have shape ({len(x)},); got {np.asarray(plates).shape}")
        unknown = sorted(set(keys.tolist()) - set(self.centering))
        if unknown:
            raise ValueError(f"no centering statistics for {', '.join(unknown)}; known: {', '.join(self.centering)}")
        out = np.empty(x.shape, dtype=np.float32)
        for key in np.unique(keys):
            out[keys == key] = apply_centering(x[keys == key], self.centering[str(key)])
        return out

    def search(self, x_centred: np.ndarray, k: int) -> Neighbors:
        """The k nearest entries (cosine) of each centred query; ``ids`` index :attr:`entries`."""
        if self._device_index is None:
            self._device_index = faiss_backend.to_device(self._cpu_index, faiss_backend.choose_device(self.config.kind))
        return faiss_backend.search(self._device_index, x_centred, k)

    @cached_property
    def entry_labels(self) -> np.ndarray:
        """(n,) int64 siRNA id of each entry."""
        return self.entries["sirna_id"].to_numpy(dtype=np.int64)

    @cached_property
    def entry_codes(self) -> np.ndarray:
        """(n,) position of each entry's siRNA in :attr:`sirna_ids`."""
        return np.searchsorted(self.sirna_ids, self.entry_labels)

    @cached_property
    def sirna_ids(self) -> np.ndarray:
        """The siRNA ids present in the index, sorted (the columns of :attr:`centroids`)."""
        return np.unique(self.entry_labels)

    @cached_property
    def centroids(self) -> np.ndarray:
        """(n_sirnas, d) float32 unit mean vector of each siRNA's entries, rows in :attr:`sirna_ids` order."""
        sums = np.zeros((len(self.sirna_ids), self.vectors.shape[1]), dtype=np.float64)
        np.add.at(sums, self.entry_codes, self.vectors)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    @cached_property
    def control_ids(self) -> frozenset[int]:
        """The siRNA ids whose entries are control wells (by ``well_type``)."""
        controls = self.entries["well_type"] != "treatment"
        return frozenset(int(s) for s in self.entries.loc[controls, "sirna_id"].unique())

    def centroid(self, sirna_id: int) -> np.ndarray:
        """The (d,) centroid of one siRNA."""
        i = int(np.searchsorted(self.sirna_ids, sirna_id))
        if i >= len(self.sirna_ids) or self.sirna_ids[i] != sirna_id:
            raise KeyError(f"siRNA {sirna_id} has no entry in the index of {self.experiment}")
        return self.centroids[i]

    def similar_sirnas(self, sirna_id: int, k: int = 10) -> list[Prediction]:
        """The k siRNAs whose centroids are nearest (cosine) to that of ``sirna_id``, itself excluded."""
        sims = self.centroids @ self.centroid(sirna_id)
        sims[self.sirna_ids == sirna_id] = -np.inf
        order = np.argsort(-sims, kind="stable")[: min(k, len(sims) - 1)]
        return [Prediction(int(self.sirna_ids[j]), float(sims[j]), r + 1) for r, j in enumerate(order)]

    # -- persistence --------------------------------------------------------------------------------------------------

    def save(self, out: str | Path) -> Path:
        """Write the index directory atomically (temporary sibling, fsync, manifest last, swap in).

        Files: ``index.faiss``, ``entries.parquet``, ``centering.npz``, ``plate_groups.json`` (when groups are
        known), ``producer.npz`` (when the producer stored arrays) and ``manifest.json``, which records every other
        file's size and SHA-256 so that a file replaced afterwards is refused at load.
        """

        def write_files(tmp: Path) -> None:
            faiss_backend.write_index(self._cpu_index, tmp / INDEX_FILE)
            self.entries.to_parquet(tmp / ENTRIES_FILE, index=False)
            save_centering(tmp / CENTERING_FILE, self.centering)
            if self.plate_groups is not None:
                write_json(tmp / PLATE_GROUPS_FILE, self.plate_groups.to_json())
            if self.producer_arrays:
                arrays: dict[str, Any] = dict(self.producer_arrays)
                np.savez(tmp / PRODUCER_ARRAYS_FILE, **arrays)

        def manifest(tmp: Path) -> dict[str, Any]:
            files = {f.name: _file_record(f) for f in sorted(tmp.iterdir()) if f.is_file()}
            return {**self.manifest, "files": files}

        path = write_artifact_dir(out, write_files, manifest)
        self.manifest = read_json(path / MANIFEST_NAME)
        return path

    @classmethod
    def load(
        cls, path: str | Path, expected_fingerprint: str | None = None, expected_dim: int | None = None
    ) -> ExperimentIndex:
        """Read an index directory, refusing one that does not match what the caller will query it with.

        Args:
            path: a directory written by :meth:`save`.
            expected_fingerprint: the fingerprint of the model whose embeddings will be queried (None: don't check).
            expected_dim: the dimension of those embeddings (None: don't check).

        Raises:
            IndexFormatError: not an index directory, incomplete, another format version, another model or
                dimension, or files that disagree with the manifest.
        """
        path = Path(path)
        if not (path / MANIFEST_NAME).is_file():
            raise IndexFormatError(
                f"{path}: no {MANIFEST_NAME}; not an index directory (or an incomplete one); "
                "build one with `phenoprint index build`"
            )
        try:
            manifest = read_json(path / MANIFEST_NAME)
        except ValueError as exc:
            raise IndexFormatError(f"{path / MANIFEST_NAME}: not valid JSON ({exc})") from exc
        if not isinstance(manifest, dict):
            raise IndexFormatError(f"{path / MANIFEST_NAME}: not a JSON object; rebuild the index")
        _check_manifest(path, manifest, expected_fingerprint, expected_dim)
        files = _check_files(path, manifest)
        try:
            config = IndexConfig.from_json(manifest["config"])
            index = faiss_backend.read_index(path / INDEX_FILE)
            entries = pd.read_parquet(path / ENTRIES_FILE)
            centering = load_centering(path / CENTERING_FILE)
            plate_groups = (
                PlateGroups.from_json(read_json(path / PLATE_GROUPS_FILE)) if PLATE_GROUPS_FILE in files else None
            )
            producer_arrays = {}
            if PRODUCER_ARRAYS_FILE in files:
                with np.load(path / PRODUCER_ARRAYS_FILE, allow_pickle=False) as npz:
                    producer_arrays = {k: npz[k] for k in npz.files}
            open_set = OpenSetThreshold.from_json(manifest["open_set"])
        except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexFormatError(f"{path}: unreadable index file ({type(exc).__name__}: {exc})") from exc
        dim = int(manifest["dim"])
        problems = []
        if index.d != dim:
            problems.append(f"{INDEX_FILE} has dimension {index.d}, the manifest says {dim}")
        if index.ntotal != len(entries):
            problems.append(f"{INDEX_FILE} holds {index.ntotal} vectors but {ENTRIES_FILE} has {len(entries)} rows")
        problems += _entry_problems(entries)
        problems += _centering_problems(centering, manifest, config, dim)
        problems += [f"{PRODUCER_ARRAYS_FILE}: {p}" for p in _array_problems(producer_arrays)]
        if np.isnan(open_set.threshold):
            problems.append("the open-set threshold is NaN")
        if problems:
            raise IndexFormatError(f"{path}: " + "; ".join(problems))
        _apply_search_params(index, config)
        vectors = faiss_backend.reconstruct_all(index)
        if not np.isfinite(vectors).all():
            raise IndexFormatError(f"{path}: {INDEX_FILE} holds non-finite vectors; rebuild the index")
        return cls(
            faiss_index=index,
            vectors=vectors,
            entries=entries,
            centering=centering,
            config=config,
            open_set=open_set,
            plate_groups=plate_groups,
            manifest=manifest,
            producer_arrays=producer_arrays,
        )


def _file_record(path: Path) -> dict[str, Any]:
    """What the manifest records of one file: its size and SHA-256."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": h.hexdigest()}


def _check_files(path: Path, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
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
        if _file_record(path / name)["sha256"] != want.get("sha256"):
            raise IndexFormatError(
                f"{path}: {name} does not match the content hash in the manifest; the file was replaced or damaged "
                "after the index was written (rebuild it)"
            )
    return files


def _entry_problems(entries: pd.DataFrame) -> list[str]:
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


def _centering_problems(
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
        if stats.method != config.center:
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


def _array_problems(arrays: dict[str, np.ndarray]) -> list[str]:
    """Arrays that are not numeric or hold non-finite values (the index cannot know their shapes: its user checks)."""
    problems = []
    for name, array in arrays.items():
        if not np.issubdtype(array.dtype, np.number):
            problems.append(f"{name} is of type {array.dtype}, expected numbers")
        elif not np.isfinite(array).all():
            problems.append(f"{name} holds non-finite values")
    return problems


def _check_manifest(
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


def _apply_search_params(index: faiss.Index, config: IndexConfig) -> None:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = min(config.nprobe, ivf.nlist)
    hnsw = getattr(index, "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = config.ef_search


# ---------------------------------------------------------------------------------------------------------------------
# building


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
    stats = fit_table_centering(
        table,
        config.center,
        config.reference,
        pca_dim=config.pca_dim,
        ridge=config.ridge,
        per_plate=config.per_plate,
    )
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


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def learn_plate_groups(
    table: EmbeddingTable, exclude: str | None = None, *, within: np.ndarray | None = None, quiet: bool = False
) -> PlateGroups | None:
    """Treatment groups of the plate design, from the labelled treatment wells of every experiment but ``exclude``.

    The target's own labels (when present) are left out so that evaluation never learns from the answers.
    Returns None when there is nothing to learn from (e.g. a profile table without treatment labels).

    Args:
        table: the wells.
        exclude: an experiment whose labels are not used (the target).
        within: (n,) restrict to these rows (e.g. the experiments in the index's scope).
        quiet: silence the summary that :func:`phenoprint.data.infer_plate_groups` logs (for evaluation loops).
    """
    meta = table.plate_metadata()
    rows = (meta["sirna_id"].notna() & (meta["well_type"] == "treatment")).to_numpy()
    if exclude is not None:
        rows = rows & (meta["experiment"] != exclude).to_numpy()
    if within is not None:
        rows = rows & np.asarray(within, dtype=bool)
    if not rows.any():
        log.debug("no labelled treatment wells outside %s: no plate groups", exclude)
        return None
    try:
        with _quiet("phenoprint.data.plate") if quiet else contextlib.nullcontext():
            return infer_plate_groups(meta[rows])
    except MetadataError as exc:
        log.info("plate groups could not be learned (%s); plate assignment will not restrict candidates", exc)
        return None


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
    meta = table.meta[mask]
    target = (meta["Metadata_experiment"] == experiment).to_numpy()
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
    open_set = _calibrate(
        table, centred, experiment, vectors, entries, config.open_set_quantile, config.open_set_calibration
    )
    target_keys = [k for k in stats if k == experiment or k.startswith(f"{experiment}/")]
    cell_type = table.cell_type_of(experiment)
    sources = sorted(set(entries["experiment"]) - {experiment})
    manifest = {
        "artifact": ARTIFACT_KIND,
        "format_version": FORMAT_VERSION,
        "experiment": experiment,
        "cell_type": cell_type,
        "dim": int(vectors.shape[1]),
        "fingerprint": fingerprint,
        "centering": {
            "method": config.center,
            "reference": config.reference,
            "per_plate": config.per_plate,
            "pca_dim": config.pca_dim,
            "ridge": config.ridge,
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
            "reference_wells": int(sum(stats[k].n_reference for k in target_keys)),
        },
        "source_experiments": sources,
        "open_set": open_set.to_json(),
        "plate_groups": None if plate_groups is None else len(plate_groups.groups),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "phenoprint_version": __version__,
        "config": config.to_json(),
    }
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


def _calibrate(
    table: EmbeddingTable,
    centred: np.ndarray,
    experiment: str,
    vectors: np.ndarray,
    entries: pd.DataFrame,
    quantile: float,
    source: str,
) -> OpenSetThreshold:
    """The open-set threshold: a low quantile of known wells' best centroid similarity, their own experiment left out.

    ``training`` (the default, and the fallback when the target has no labelled controls): a fixed sample of the
    other experiments' treatment entries, i.e. known wells like the queries. ``controls``: the target's own labelled
    controls, the only known wells of a new batch. They are a poor stand-in for treatments: positive controls are
    chosen for strong phenotypes (the threshold ends up too high without whitening), and TVN fitted on the controls
    whitens exactly their directions; ``scripts/bench_index.py`` measures both.
    """
    calib = table.experiment_mask(experiment) & table.control_mask() & table.labelled_mask()
    entry_exps = entries["experiment"].to_numpy(dtype=str)
    entry_labels = entries["sirna_id"].to_numpy(dtype=np.int64)
    if source == "controls" and calib.any():
        q, q_exps, used = centred[calib], np.full(int(calib.sum()), experiment), "target_controls"
    else:
        pool = (entries["kind"] == "training").to_numpy() & (entries["well_type"] == "treatment").to_numpy()
        rows = np.flatnonzero(pool) if pool.any() else np.arange(len(entries))
        rows = np.sort(np.random.default_rng(0).permutation(rows)[:MAX_TRAINING_CALIBRATION])
        q, q_exps, used = vectors[rows], entry_exps[rows], "training_entries"
    best = cross_batch_centroid_similarity(q, q_exps, vectors, entry_labels, entry_exps)
    return calibrate_open_set(best, quantile, used)
