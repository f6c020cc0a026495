"""The indexes being served: one per experiment folder, reloaded when a folder is written, replaced or removed."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType

import numpy as np

from phenoprint.embedder.record import EmbedderRecord
from phenoprint.errors import IndexFormatError, UnknownExperimentError
from phenoprint.index.artifact import MANIFEST_NAME
from phenoprint.index.experiment import ExperimentIndex

log = logging.getLogger(__name__)

#: How long a loaded index whose folder is missing stays served while a hidden sibling (``.NAME.old-*`` or
#: ``.NAME.tmp-*``) says that it is being replaced; the two renames of a save are microseconds apart.
REPLACE_GRACE_S = 60.0

#: What identifies one written version of an index directory: the directory's and the manifest's inodes, and the
#: manifest's mtime and size. ``ExperimentIndex.save`` renames a fresh directory into place, so every save changes it.
Stamp = tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)
class LoadedIndex:
    """One experiment's index as served, with where and when it was read.

    Attributes:
        index: the index.
        path: its directory.
        stamp: the version of the directory that was read (see :data:`Stamp`).
        loaded_at: when it was read (Unix time).
        record: how onboarding embedded the experiment's wells (TTA, BN adaptation, input statistics, BN arrays).
    """

    index: ExperimentIndex
    path: Path
    stamp: Stamp
    loaded_at: float
    record: EmbedderRecord = field(default_factory=EmbedderRecord)

    @property
    def experiment(self) -> str:
        return self.index.experiment

    @cached_property
    def sirna_names(self) -> Mapping[int, str]:
        """siRNA id → its name, for the siRNAs whose wells' metadata named them (RxRx1 v1.0); empty otherwise."""
        entries = self.index.entries
        if "sirna" not in entries.columns:
            return {}
        named = entries.dropna(subset=["sirna"]).drop_duplicates("sirna_id")
        return {int(i): str(n) for i, n in zip(named["sirna_id"], named["sirna"], strict=True)}

    @cached_property
    def sirna_kinds(self) -> Mapping[int, str]:
        """siRNA id → its well type (treatment / positive_control / negative_control), from the entries."""
        entries = self.index.entries
        kinds = entries.groupby("sirna_id")["well_type"].agg(lambda s: s.value_counts().index[0])
        return {int(k): str(v) for k, v in kinds.items()}


@dataclass(frozen=True)
class ReloadReport:
    """What one scan of the index folder changed."""

    loaded: tuple[str, ...] = ()  # experiments (re)loaded
    removed: tuple[str, ...] = ()  # experiments whose folder is gone
    failed: Mapping[str, str] = field(default_factory=dict)  # experiment → why its new version was refused
    kept: tuple[str, ...] = ()  # experiments served unchanged

    @property
    def changed(self) -> bool:
        return bool(self.loaded or self.removed)


class IndexRegistry:
    """Every ``<root>/<EXPERIMENT>/`` index directory, swapped in atomically when a new version appears.

    A scan (:meth:`refresh`) stats each non-hidden folder's ``manifest.json``; a folder whose stamp changed is
    loaded completely in the calling thread, checked against the model, and only then replaces the old version in a
    new mapping that is swapped in by one reference assignment. Readers take :meth:`snapshot` once per request and
    never see a mix. Folders whose names start with ``.`` are never read: ``ExperimentIndex.save`` writes into such
    a temporary sibling and renames it into place once the manifest is written. A version that cannot be read is
    refused (logged once) and the previous one stays served.

    Args:
        root: the folder of index directories.
        expected_fingerprint: the model's fingerprint (indexes of other models are refused).
        expected_dim: the model's embedding dimension.
        check: extra validation of a loaded index (raise :class:`IndexFormatError` to refuse it).
        only: serve just this one folder of ``root`` (``serve --indexes`` given a single index directory).
    """

    def __init__(
        self,
        root: str | Path,
        expected_fingerprint: str | None = None,
        expected_dim: int | None = None,
        check: Callable[[LoadedIndex], None] | None = None,
        only: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.only = only
        self.expected_fingerprint = expected_fingerprint
        self.expected_dim = expected_dim
        self._check = check
        self._indexes: Mapping[str, LoadedIndex] = MappingProxyType({})
        self._refused: dict[str, tuple[Stamp, str]] = {}  # experiment → (stamp, why), so a bad version logs once
        self._missing_since: dict[str, float] = {}  # loaded experiment → when its folder was first seen missing
        self._lock = threading.Lock()  # one scan at a time; readers never take it
        self.last_scan: float | None = None

    def snapshot(self) -> Mapping[str, LoadedIndex]:
        """The indexes served now (an immutable mapping; later reloads do not change it)."""
        return self._indexes

    def get(self, experiment: str) -> LoadedIndex:
        """One experiment's index.

        Raises:
            UnknownExperimentError: no index of that experiment is loaded.
        """
        indexes = self._indexes
        try:
            return indexes[experiment]
        except KeyError:
            raise UnknownExperimentError(experiment, indexes) from None

    @property
    def refused(self) -> dict[str, str]:
        """Experiments whose current folder could not be served, and why."""
        return {name: why for name, (_, why) in self._refused.items()}

    def refresh(self) -> ReloadReport:
        """Scan the root once: load new or changed index directories, drop removed ones, swap the mapping."""
        with self._lock:
            report = self._scan()
            self.last_scan = time.time()
            return report

    def _scan(self) -> ReloadReport:
        current = dict(self._indexes)
        try:
            with os.scandir(self.root) as it:
                listing = [(e.name, e.is_dir()) for e in it]
        except OSError as exc:  # a folder that vanished or went unreadable: keep serving what is loaded
            log.warning(
                "cannot list the index folder %s (%s); serving the %d indexes already loaded",
                self.root,
                exc.strerror or exc,
                len(current),
            )
            return ReloadReport(kept=tuple(current))
        names = sorted(
            n for n, is_dir in listing if is_dir and not n.startswith(".") and (self.only is None or n == self.only)
        )
        hidden = [n for n, _ in listing if n.startswith(".")]
        loaded: list[str] = []
        failed: dict[str, str] = {}
        kept: list[str] = []
        for name in names:
            self._visit(name, current, loaded, failed, kept)
        removed = self._drop_removed(current, names, hidden, kept)
        for name in set(self._refused) - set(names):
            del self._refused[name]
        self._indexes = MappingProxyType(current)
        return ReloadReport(tuple(loaded), tuple(removed), failed, tuple(kept))

    def _visit(
        self,
        name: str,
        current: dict[str, LoadedIndex],
        loaded: list[str],
        failed: dict[str, str],
        kept: list[str],
    ) -> None:
        """One folder of a scan: (re)load it when its stamp changed, refuse it when it cannot be read or served."""
        path = self.root / name
        try:
            stamp = _stamp(path)
        except PermissionError as exc:
            why = (
                f"{path}: permission denied reading {exc.filename or path} (the service runs as uid "
                f"{os.getuid()}); make the folder readable by it, e.g. chmod -R a+rX {path}"
            )
            if self._refused.get(name, (None, None))[1] != why:
                log.warning("index %s refused: %s", name, why)
            self._refused[name] = (_NO_ACCESS, why)
            failed[name] = why
            if name in current:
                kept.append(name)
            return
        if stamp is None:
            if name not in current:
                log.debug("%s has no %s: not an index directory, skipped", path, MANIFEST_NAME)
            else:
                kept.append(name)
            return
        old = current.get(name)
        if old is not None and old.stamp == stamp:
            kept.append(name)
            return
        refused = self._refused.get(name)
        if refused is not None and refused[0] == stamp:  # the same bad version: already reported
            failed[name] = refused[1]
            if old is not None:
                kept.append(name)
            return
        try:
            fresh = self._load(path, stamp)
        except _Replaced:  # written again while we read it: the next scan reads the newer version
            if old is not None:
                kept.append(name)
            return
        except IndexFormatError as exc:
            why = str(exc)
            self._refused[name] = (stamp, why)
            failed[name] = why
            action = "still serving the previous version" if old is not None else "not served"
            log.warning("index %s refused (%s): %s", name, action, why)
            if old is not None:
                kept.append(name)
            return
        self._refused.pop(name, None)
        current[name] = fresh
        loaded.append(name)
        log.info("%s index %s (%d entries) from %s", "reloaded" if old else "loaded", name, len(fresh.index), path)

    def _drop_removed(
        self, current: dict[str, LoadedIndex], names: list[str], hidden: list[str], kept: list[str]
    ) -> list[str]:
        """Drop the loaded experiments whose folder is gone (after a grace while a save is swapping it)."""
        removed: list[str] = []
        now = time.monotonic()
        for name in set(self._missing_since) & set(names):
            del self._missing_since[name]
        for name in sorted(set(current) - set(names)):
            # ExperimentIndex.save renames the old version aside (`.NAME.old-*`) before renaming the new one in:
            # between the two renames the name is missing, but the old version is still there. Keep serving it, for
            # a while: a save that crashed between its renames must not pin a deleted index forever.
            missing_for = now - self._missing_since.setdefault(name, now)
            if any(h.startswith(f".{name}.") for h in hidden) and missing_for < REPLACE_GRACE_S:
                kept.append(name)
                continue
            del self._missing_since[name]
            del current[name]
            self._refused.pop(name, None)
            removed.append(name)
            log.info("index %s removed (its folder is gone)", name)
        return removed

    def _load(self, path: Path, stamp: Stamp) -> LoadedIndex:
        """Read and check one folder; any failure of whatever kind refuses that folder alone (files written by
        another process must never stop the scan of the others)."""
        try:
            loaded = self._read(path, stamp)
        except Exception as exc:
            if not _unchanged(path, stamp):  # written again while we read it
                raise _Replaced from exc
            if isinstance(exc, IndexFormatError):
                raise
            raise IndexFormatError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
        if not _unchanged(path, stamp):  # files of two versions may have been mixed: read it again next time
            raise _Replaced
        return loaded

    def _read(self, path: Path, stamp: Stamp) -> LoadedIndex:
        index = ExperimentIndex.load(path, self.expected_fingerprint, self.expected_dim)
        if index.experiment != path.name:
            raise IndexFormatError(
                f"{path}: holds the index of experiment {index.experiment}; an index folder is named after its "
                f"experiment (scripts/build_index.py --out {path.parent}/{index.experiment})"
            )
        _warm_up(index)
        record = EmbedderRecord.read(index.manifest.get("producer"), index.producer_arrays)
        loaded = LoadedIndex(index, path, stamp, time.time(), record)
        _ = loaded.sirna_kinds  # computed here, not in a request
        if self._check is not None:
            self._check(loaded)
        return loaded


class _Replaced(Exception):
    """The directory changed while it was being read."""


def _warm_up(index: ExperimentIndex) -> None:
    """Compute the index's lazy parts (centroids, label codes, the search index) here rather than in a request."""
    _ = index.centroids, index.entry_codes, index.control_ids
    index.search(np.zeros((1, index.vector_dim), dtype=np.float32), 1)


def _stamp(path: Path) -> Stamp | None:
    """The version of an index folder, or None when it has no manifest (not an index, or one being written).

    Raises:
        PermissionError: the folder or its manifest may not be read by this process.
    """
    try:
        d = os.stat(path)
        m = os.stat(path / MANIFEST_NAME)
    except PermissionError:
        raise
    except OSError:
        return None
    return (d.st_ino, m.st_ino, m.st_mtime_ns, m.st_size)


def _unchanged(path: Path, stamp: Stamp) -> bool:
    try:
        return _stamp(path) == stamp
    except PermissionError:
        return False


#: The stamp recorded for a folder that could not be read at all.
_NO_ACCESS: Stamp = (-1, -1, -1, -1)
