"""The per-experiment index: batch-centred control and training wells in FAISS, their labels, and how to centre
queries, saved as an atomic directory (:mod:`phenoprint.index.storage` says what the directory holds)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import faiss
import numpy as np
import pandas as pd

from phenoprint.atomic import write_json_atomic
from phenoprint.data.plate import PlateGroups
from phenoprint.errors import IndexFormatError
from phenoprint.index import faiss_backend
from phenoprint.index.artifact import MANIFEST_NAME, read_json, write_artifact_dir
from phenoprint.index.centering import CenteringStats, apply_centering, load_centering, save_centering
from phenoprint.index.config import IndexConfig
from phenoprint.index.faiss_backend import Neighbors
from phenoprint.index.openset import OpenSetThreshold
from phenoprint.index.storage import (
    CENTERING_FILE,
    ENTRIES_FILE,
    INDEX_FILE,
    PLATE_GROUPS_FILE,
    PRODUCER_ARRAYS_FILE,
    array_problems,
    centering_problems,
    check_files,
    check_manifest,
    entry_problems,
    file_record,
)
from phenoprint.index.table_centering import VIEW_SEP, apply_ensemble, is_ensemble, split_views


class IndexedWell(NamedTuple):
    """One well an index holds, as the API lists a siRNA's locations."""

    experiment: str
    plate: int
    well: str
    cell_type: str
    well_type: str


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
        """The dimension of the raw vectors this index centres and answers (the table's)."""
        return int(self.manifest["dim"])

    @property
    def vector_dim(self) -> int:
        """The dimension of the centred vectors it searches: :attr:`dim`, or views x dim for an ensemble."""
        return int(self.vectors.shape[1])

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
        unknown = sorted(set(keys.tolist()) - {f"{self.experiment}/{p}" for p in self.plates})
        if unknown:
            known = ", ".join(f"{self.experiment}/{p}" for p in self.plates)
            raise ValueError(f"no centering statistics for {', '.join(unknown)}; known: {known}")
        if is_ensemble(self.centering):
            return apply_ensemble(x, np.full(len(x), self.experiment), np.asarray(plates).ravel(), self.centering)
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

    @property
    def plates(self) -> tuple[int, ...]:
        """The plates whose own centering statistics the index holds (per-plate indexes); empty when it was centred
        per experiment, where any plate of the experiment may be queried."""
        if not self.config.per_plate:
            return ()
        prefix = f"{self.experiment}/"
        keys = {k.rpartition(VIEW_SEP)[2] for k in self.centering}  # an ensemble's keys are view::batch
        return tuple(sorted(int(k[len(prefix) :]) for k in keys if k.startswith(prefix)))

    def sirna_wells(self, sirna_id: int) -> list[IndexedWell]:
        """The indexed wells of one siRNA (empty when it has none), in entry order."""
        rows = self.entries[self.entries["sirna_id"] == sirna_id]
        return [
            IndexedWell(str(r.experiment), int(r.plate), str(r.well), str(r.cell_type), str(r.well_type))
            for r in rows.itertuples(index=False)
        ]

    def centroid(self, sirna_id: int) -> np.ndarray:
        """The (d,) centroid of one siRNA."""
        i = int(np.searchsorted(self.sirna_ids, sirna_id))
        if i >= len(self.sirna_ids) or self.sirna_ids[i] != sirna_id:
            raise KeyError(f"siRNA {sirna_id} has no entry in the index of {self.experiment}")
        return self.centroids[i]

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
                write_json_atomic(self.plate_groups.to_json(), tmp / PLATE_GROUPS_FILE)
            if self.producer_arrays:
                arrays: dict[str, Any] = dict(self.producer_arrays)
                np.savez(tmp / PRODUCER_ARRAYS_FILE, **arrays)

        def manifest(tmp: Path) -> dict[str, Any]:
            files = {f.name: file_record(f) for f in sorted(tmp.iterdir()) if f.is_file()}
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
        check_manifest(path, manifest, expected_fingerprint, expected_dim)
        files = check_files(path, manifest)
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
        views = len(split_views(centering)) if is_ensemble(centering) else 1
        if index.d != dim * views:
            said = f"{dim}" if views == 1 else f"{views} views x {dim}"
            problems.append(f"{INDEX_FILE} has dimension {index.d}, the manifest says {said}")
        if index.ntotal != len(entries):
            problems.append(f"{INDEX_FILE} holds {index.ntotal} vectors but {ENTRIES_FILE} has {len(entries)} rows")
        problems += entry_problems(entries)
        problems += centering_problems(centering, manifest, config, dim)
        problems += [f"{PRODUCER_ARRAYS_FILE}: {p}" for p in array_problems(producer_arrays)]
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


def _apply_search_params(index: faiss.Index, config: IndexConfig) -> None:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = min(config.nprobe, ivf.nlist)
    hnsw = getattr(index, "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = config.ef_search
