"""A packed store of sites: images decoded once into a memory map plus a Parquet row index.

Layout of a pack folder::

    manifest.json   written last: format version, shape, dtype, channel names, source root and layout, size, counts,
                    creation time
    images.npy      (n_sites, C, S, S) uint8 (8-bit sources) or uint16 (16-bit ones), NumPy format, memory-mapped
    index.parquet   the canonical site table (read_metadata columns) plus ``row``, the site's row in images.npy
    build.json      while packing: what is being packed (source, size, shape), so a rerun resumes or refuses
    done.npy        while packing: one flag per row, saved after each chunk's pixels are flushed

Storage choice: the pack keeps the source's own bit depth, so it loses nothing (a 16-bit channel is stored as
uint16, exactly as decoded; ``--size`` rounds the box filter's mean to the nearest integer of that depth). The
network standardizes each channel (per site or per experiment) from these values, so 16-bit precision reaches the
per-channel statistics. The cost is twice the bytes of a uint8 pack; a robust rescale to uint8 would halve it but
quantize a 16-bit channel's useful range (often a few thousand grey levels) into 256 steps.

Kept as one module although long: writing and reading a pack share its file names, manifest and checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from phenoprint.atomic import atomic_path, remove_stale_temporaries_of, write_json_atomic
from phenoprint.data.images import load_site
from phenoprint.data.layout import (
    METADATA_COLUMNS,
    RXRX1_CHANNELS,
    SIRNA_NAME,
    Layout,
    RxRx1Layout,
    detect_layout,
)
from phenoprint.data.synth.writer import PENDING_RECORD
from phenoprint.errors import ImageFormatError, LayoutError
from phenoprint.parallel import run_tasks

log = logging.getLogger(__name__)

PACK_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IMAGES = "images.npy"
INDEX = "index.parquet"
BUILD = "build.json"
DONE = "done.npy"
#: Rows decoded between two saves of the done flags (and the unit of work of one process).
DEFAULT_CHUNK = 256
_KEY = ["experiment", "plate", "well", "site"]
_MANIFEST_KEYS = ("format_version", "shape", "dtype", "source_root", "size", "n_sites", "created")


@dataclass(frozen=True)
class PackResult:
    """What a :func:`pack` call did."""

    path: Path  # the pack folder
    n_sites: int  # sites in the pack
    n_decoded: int  # sites decoded by this call
    n_resumed: int  # sites found done by an earlier, interrupted call
    n_missing: int  # sites listed in the source metadata without images on disk (not packed)
    seconds: float  # wall-clock time of the call


def resize_site(site: np.ndarray, size: int) -> np.ndarray:
    """Resize a (C, H, W) uint8 or uint16 site to (C, size, size) with a box filter: each output pixel is the
    area-weighted mean of the input pixels under it, rounded to the nearest integer, so downsampling averages
    instead of aliasing.

    The filter runs in 32-bit float (PIL mode ``F``): PIL's 8-bit box filter rounds half up in fixed point, which
    brightens every site by half a grey level on average.
    """
    if site.shape[1:] == (size, size):
        return site
    box = Image.Resampling.BOX
    planes = [np.asarray(Image.fromarray(plane.astype(np.float32)).resize((size, size), box)) for plane in site]
    top = np.iinfo(site.dtype).max
    return np.clip(np.rint(np.stack(planes)), 0, top).astype(site.dtype)


def pack(
    root: str | Path,
    out: str | Path,
    *,
    layout: str | None = None,
    size: int | None = None,
    workers: int | None = None,
    chunk: int = DEFAULT_CHUNK,
    progress: bool = True,
) -> PackResult:
    """Decode the sites of a data root that have images into a pack (see the module docstring).

    Rerunning on an interrupted pack continues with the rows not yet flagged done; a pack is only readable
    once ``manifest.json`` exists, which is written last.

    Args:
        root: the data root (any layout).
        layout: read ``root`` in this layout (default: detected).
        out: the pack folder (created; must be empty or hold a pack of the same source and size).
        size: resize every site to size x size with an area filter; default: keep the PNGs' pixels exactly.
        workers: decoding processes (default: CPU count; 1 decodes in this process).
        chunk: rows decoded between two saves of the progress flags.
        progress: show a progress bar.

    Raises:
        LayoutError: ``root`` is not a data root or has no site with images; ``out`` holds something else,
            or a pack of another source, size or site list.
        ImageFormatError: a PNG is corrupt, or (without ``size``) sites differ in size.
        ValueError: ``size``, ``workers`` or ``chunk`` out of range.
    """
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1 or chunk < 1:
        raise ValueError(f"workers and chunk must be >= 1, got workers={workers}, chunk={chunk}")
    if size is not None and not 8 <= size <= 4096:
        raise ValueError(f"size must be 8-4096 px, got {size}")
    start = time.perf_counter()
    out = Path(out)
    found = detect_layout(root, layout)
    log.info("%s: %s", root, found.reason)
    meta, n_missing = _sites_with_images(found)
    if (found.root / PENDING_RECORD).is_file():
        log.warning("%s holds an unfinished phenoprint synth run; packing the sites written so far", root)
    build = _build_record(root, found, meta, size)
    state = _claim(out, build)
    if state == "complete":
        log.info("%s already holds this pack, complete", out)
        return PackResult(out, len(meta), 0, len(meta), n_missing, time.perf_counter() - start)
    shape = tuple(build["shape"])
    if state == "fresh":
        with atomic_path(out / INDEX) as tmp:
            meta.assign(row=np.arange(len(meta), dtype=np.int64)).to_parquet(tmp, index=False)
        np.lib.format.open_memmap(out / IMAGES, mode="w+", dtype=np.dtype(build["dtype"]), shape=shape).flush()
        _save_done(np.zeros(len(meta), dtype=bool), out / DONE)
    decoded, resumed = _decode_remaining(found, out, meta, size=size, workers=workers, chunk=chunk, progress=progress)
    _finish(out, build, found, n_missing)
    seconds = time.perf_counter() - start
    log.info("packed %d sites of %s into %s (%s) in %.1f s", len(meta), root, out, "x".join(map(str, shape)), seconds)
    return PackResult(out, len(meta), decoded, resumed, n_missing, seconds)


def _sites_with_images(layout: Layout) -> tuple[pd.DataFrame, int]:
    """The listed sites of ``layout`` that have images (renumbered), and how many listed sites have none."""
    from phenoprint.data.source import PngSource

    source = PngSource(layout)
    listed = source.metadata
    meta = source.with_images(listed, "not packed").reset_index(drop=True)
    if meta.empty:
        raise LayoutError(f"{layout.root}: none of the {len(listed)} listed sites has images; nothing to pack")
    return meta, len(listed) - len(meta)


def _build_record(root: str | Path, layout: Layout, meta: pd.DataFrame, size: int | None) -> dict[str, Any]:
    """What identifies the pack being built (source, size, shape, site list): a resumed build must match it."""
    first = meta.iloc[0]
    height, width = _site_shape(layout, first)
    dtype = "uint8" if isinstance(layout, RxRx1Layout) else str(_site_dtype(layout, first))
    if size is not None:
        if size > min(height, width):
            log.warning("--size %d enlarges %dx%d sites: the box filter only repeats pixels", size, width, height)
        height = width = size
    shape = (len(meta), len(layout.channels), height, width)
    return {
        "format_version": PACK_FORMAT_VERSION,
        "source_root": str(root),
        "source_resolved": str(Path(root).resolve()),
        "size": size,
        "shape": list(shape),
        "dtype": dtype,
        "n_sites": len(meta),
        "sites_sha256": _sites_digest(meta),
    }


def _decode_remaining(
    layout: Layout, out: Path, meta: pd.DataFrame, *, size: int | None, workers: int, chunk: int, progress: bool
) -> tuple[int, int]:
    """Decode the rows not yet flagged done, saving the flags after every chunk; (decoded, found done)."""
    done = np.load(out / DONE)
    todo = np.flatnonzero(~done)
    resumed = len(meta) - len(todo)
    if resumed:
        log.info("resuming %s: %d of %d sites already packed", out, resumed, len(meta))
    keys = list(meta[_KEY].itertuples(index=False, name=None))
    tasks = [[(int(r), *keys[r]) for r in todo[i : i + chunk]] for i in range(0, len(todo), chunk)]
    bar = tqdm(total=len(meta), initial=resumed, desc="pack", unit="site", disable=not progress)
    try:
        for rows in _run(layout, out / IMAGES, tasks, size, workers):
            done[rows] = True
            _save_done(done, out / DONE)
            bar.update(len(rows))
    finally:
        bar.close()
    return len(todo), resumed


def _finish(out: Path, build: dict[str, Any], layout: Layout, n_missing: int) -> None:
    """Write the manifest (the pack becomes readable) and remove the build's bookkeeping."""
    manifest = {
        **build,
        "layout": layout.name,
        "channels": list(layout.channels),
        "layout_description": layout.describe(),
        "n_missing": n_missing,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(manifest, out / MANIFEST)
    (out / DONE).unlink(missing_ok=True)
    remove_stale_temporaries_of(out / DONE)  # a kill during its last save: no later save would clean it
    (out / BUILD).unlink(missing_ok=True)


def _site_shape(layout: Layout, first: Any) -> tuple[int, int]:
    """(height, width) of a site, from its first channel's PNG header (RxRx1) or its decoded first channel."""
    path = layout.site_files(first.experiment, first.plate, first.well, first.site)[0].path
    if not isinstance(layout, RxRx1Layout):
        h, w = load_site(layout, first.experiment, first.plate, first.well, first.site).shape[1:]
        return int(h), int(w)
    try:
        with Image.open(path) as im:
            width, height = im.size
    except OSError as exc:
        raise ImageFormatError(path, f"cannot be read ({exc})") from exc
    return height, width


def _site_dtype(layout: Layout, first: Any) -> np.dtype:
    """The pixel type of the pack: that of the first site (a later site of another depth is refused)."""
    return load_site(layout, first.experiment, first.plate, first.well, first.site).dtype


def _sites_digest(meta: pd.DataFrame) -> str:
    text = meta[list(METADATA_COLUMNS)].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _claim(out: Path, build: dict[str, Any]) -> str:
    """Check ``out`` against this pack: "complete" (nothing to do), "packing" (resume) or "fresh" (new)."""
    if out.exists() and not out.is_dir():
        raise LayoutError(f"{out}: exists and is not a folder; give a new or empty folder to pack into")
    if out.is_dir() and any(out.iterdir()):
        record = out / MANIFEST if (out / MANIFEST).is_file() else out / BUILD
        if not record.is_file():
            raise LayoutError(f"{out}: not empty and not a phenoprint pack; give a new or empty folder to pack into")
        theirs = _read_json(record)
        same = ("format_version", "source_resolved", "size", "shape", "dtype", "sites_sha256")
        diff = [k for k in same if theirs.get(k) != build.get(k)]
        if diff:
            raise LayoutError(
                f"{out} holds a pack of another source or size (differs in: {', '.join(diff)}; it was packed from "
                f"{theirs.get('source_root')!r} at size {theirs.get('size')}); pack into another folder"
            )
        if record.name == MANIFEST:
            return "complete"
        if not all((out / name).is_file() for name in (DONE, IMAGES, INDEX)):
            return "fresh"  # interrupted before any row was flagged done: start over
        return "packing"
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(build, out / BUILD)
    return "fresh"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LayoutError(f"{path}: unreadable ({exc}); the pack is damaged, pack again into a new folder") from exc
    if not isinstance(data, dict):
        raise LayoutError(f"{path}: not a JSON object; the pack is damaged, pack again into a new folder")
    return data


def _save_done(done: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, done)


def _run(
    layout: Layout, images: Path, tasks: list[list[tuple[Any, ...]]], size: int | None, workers: int
) -> Iterable[list[int]]:
    """Decode the tasks in this process or a spawned pool; yield the rows of each finished task."""
    return run_tasks(decode_into, [(layout, images, task, size) for task in tasks], workers)


def decode_into(layout: Layout, images: Path, task: Sequence[tuple[Any, ...]], size: int | None) -> list[int]:
    """Decode sites into their rows of the memory-mapped ``images.npy`` and flush them to disk.

    Args:
        task: (row, experiment, plate, well, site) per site.

    Returns:
        The rows written.

    Raises:
        ImageFormatError: a PNG cannot be read, or its size differs from the pack's.
    """
    array = np.load(images, mmap_mode="r+")
    rows = []
    for row, experiment, plate, well, site in task:
        pixels = load_site(layout, experiment, plate, well, site)
        if size is not None:
            pixels = resize_site(pixels, size)
        if pixels.dtype != array.dtype:
            path = layout.site_files(experiment, plate, well, site)[0].path
            raise ImageFormatError(
                path,
                f"a site of {pixels.dtype.itemsize * 8}-bit images in a pack of {array.dtype.itemsize * 8}-bit ones "
                "(fixed by the first site); every site of a data root must have one bit depth per channel",
            )
        if pixels.shape != array.shape[1:]:
            path = layout.site_files(experiment, plate, well, site)[0].path
            raise ImageFormatError(
                path,
                f"site of size {pixels.shape[2]}x{pixels.shape[1]} in a pack of {array.shape[3]}x{array.shape[2]}; "
                "pack with --size N to resize all sites to one size",
            )
        array[row] = pixels
        rows.append(int(row))
    array.flush()
    del array
    return rows


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a complete pack.

    Raises:
        LayoutError: no manifest (the pack is missing or was interrupted), or a damaged or foreign one.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        if (path / BUILD).is_file():
            raise LayoutError(
                f"{path}: an incomplete pack (interrupted before its manifest.json was written); rerun "
                "`phenoprint pack` with the same source and size to finish it"
            )
        raise LayoutError(f"{path}: not a phenoprint pack (no manifest.json); create one with `phenoprint pack`")
    manifest = _read_json(manifest_path)
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise LayoutError(f"{manifest_path}: incomplete manifest, missing {', '.join(missing)}; pack again")
    if manifest["format_version"] != PACK_FORMAT_VERSION:
        raise LayoutError(
            f"{manifest_path}: pack format {manifest['format_version']}, this phenoprint reads "
            f"{PACK_FORMAT_VERSION}; pack again with this version"
        )
    return manifest


class PackSource:
    """Sites read from a pack (``phenoprint pack``): a memory-mapped array, no PNG decoding.

    Satisfies :class:`phenoprint.data.source.SiteSource`; without ``--size`` its sites are identical to
    the PNGs'.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        try:
            self.images: np.ndarray = np.load(self.path / IMAGES, mmap_mode="r")
            index = pd.read_parquet(self.path / INDEX)
        except (OSError, ValueError) as exc:
            raise LayoutError(f"{self.path}: damaged pack ({exc}); pack again into a new folder") from exc
        dtype = self.manifest["dtype"]
        if (
            list(self.images.shape) != list(self.manifest["shape"])
            or dtype not in ("uint8", "uint16")
            or self.images.dtype != np.dtype(dtype)
        ):
            raise LayoutError(
                f"{self.path}: images.npy is {self.images.dtype} {self.images.shape}, the manifest says "
                f"{dtype} {tuple(self.manifest['shape'])}; the pack is damaged, pack again"
            )
        #: Channel names in stacking order (packs of RxRx1 made before names were recorded: RxRx1's).
        self.channel_names: tuple[str, ...] = tuple(self.manifest.get("channels", RXRX1_CHANNELS))
        if len(self.channel_names) != self.images.shape[1]:
            raise LayoutError(
                f"{self.path}: the manifest names {len(self.channel_names)} channels, images.npy holds "
                f"{self.images.shape[1]}; the pack is damaged, pack again"
            )
        if len(index) != self.images.shape[0] or not np.array_equal(index["row"], np.arange(len(index))):
            raise LayoutError(f"{self.path}: index.parquet does not list rows 0-{self.images.shape[0] - 1}; pack again")
        self.index = index
        self._rows = {key: i for i, key in enumerate(index[_KEY].itertuples(index=False, name=None))}

    @property
    def metadata(self) -> pd.DataFrame:
        """The canonical site table of the packed sites, in row order."""
        columns = [*METADATA_COLUMNS, *([SIRNA_NAME] if SIRNA_NAME in self.index.columns else [])]
        return self.index[columns].copy()

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every site."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def row(self, experiment: str, plate: int, well: str, site: int) -> int:
        """Row of a site in :attr:`images`.

        Raises:
            ImageFormatError: the site is not in the pack.
        """
        try:
            return self._rows[(experiment, int(plate), well, int(site))]
        except KeyError:
            raise ImageFormatError(
                self.path,
                f"site {experiment} plate {plate} {well} s{site} is not in this pack of {len(self)} sites "
                "(only sites with images are packed)",
            ) from None

    def with_images(self, metadata: pd.DataFrame, skipped: str) -> pd.DataFrame:
        """``metadata`` unchanged: packing kept only the sites that had images, and every packed site has pixels."""
        return metadata

    def load(self, experiment: str, plate: int, well: str, site: int) -> np.ndarray:
        """One site as a (6, S, S) uint8 array (a copy, detached from the memory map)."""
        return np.array(self.images[self.row(experiment, plate, well, site)])

    def load_rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Many sites at once, by row: (len(rows), 6, S, S) uint8, read in ascending row order.

        Raises:
            ValueError: a row is out of range.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {rows.shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise ValueError(f"rows must be in 0-{len(self) - 1}, got {rows.min()}-{rows.max()}")
        out = np.empty((len(rows), *self.images.shape[1:]), dtype=self.images.dtype)
        for i in np.argsort(rows, kind="stable"):  # one copy per site, straight from the map, in file order
            out[i] = self.images[rows[i]]
        return out

    def __repr__(self) -> str:
        return f"PackSource({str(self.path)!r}, sites={len(self)}, size={self.image_size})"
