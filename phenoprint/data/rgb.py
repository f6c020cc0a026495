"""RGB composites of 6-channel sites with the published RxRx1 colour map (rxrx1-utils ``convert_tensor_to_rgb``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from phenoprint.atomic import atomic_path
from phenoprint.data.images import check_channels, load_site
from phenoprint.data.layout import CHANNELS, detect_layout, read_metadata, site_status

log = logging.getLogger(__name__)

#: Per channel: the RGB colour it is painted in and the 8-bit intensity range mapped onto 0-1.
#: These are the display settings Recursion published with RxRx1 (rxrx1-utils, ``rxrx.io.RGB_MAP``).
RGB_MAP: dict[int, tuple[tuple[int, int, int], tuple[int, int]]] = {
    1: ((19, 0, 249), (0, 51)),
    2: ((42, 255, 31), (0, 107)),
    3: ((255, 0, 25), (0, 64)),
    4: ((45, 255, 252), (0, 191)),
    5: ((250, 0, 253), (0, 89)),
    6: ((254, 255, 40), (0, 191)),
}


def to_rgb(site: np.ndarray, channels: Sequence[int] = CHANNELS) -> np.ndarray:
    """Composite a (C, H, W) site into an (H, W, 3) uint8 RGB image.

    Each channel is scaled by its display range, clipped at 1, multiplied by its colour and truncated to
    an integer; the colours are summed and clipped at 255, exactly as rxrx1-utils does.

    Raises:
        ValueError: ``site`` is not (C, H, W) with C matching ``channels``.
    """
    chosen = check_channels(channels)
    site = np.asarray(site)
    if site.ndim != 3 or site.shape[0] != len(chosen):
        raise ValueError(f"expected a (C, H, W) site with C={len(chosen)} channels, got shape {site.shape}")
    out = np.zeros((*site.shape[1:], 3), dtype=np.int64)
    for plane, ch in zip(site, chosen, strict=True):
        colour, (lo, hi) = RGB_MAP[ch]
        x = (plane / 255.0) / ((hi - lo) / 255.0) + lo / 255.0
        x = np.minimum(x, 1.0)
        out += (x[..., None] * np.asarray(colour, dtype=np.float64)).astype(np.int64)
    return np.minimum(out, 255).astype(np.uint8)


def write_png_atomic(image: np.ndarray, path: str | Path) -> Path:
    """Write an image as PNG through a temporary file in the same folder, then rename."""
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return Path(path)


def write_previews(
    root: str | Path,
    out: str | Path,
    *,
    experiments: Sequence[str] | None = None,
    limit: int | None = None,
    metadata: pd.DataFrame | None = None,
) -> list[Path]:
    """Write RGB composites of the sites of a data root that have images.

    Files are named ``<experiment>_Plate<p>_<well>_s<site>.png``. Sites listed in the metadata without
    images on disk are skipped with one logged note.

    Args:
        root: the data root (either layout).
        out: folder to write into (created).
        experiments: only these experiments (default: all).
        limit: at most this many sites (default: all).
        metadata: the root's site table, when already read.

    Returns:
        The written paths.
    """
    layout = detect_layout(root)
    meta = read_metadata(root) if metadata is None else metadata
    if experiments:
        unknown = sorted(set(experiments) - set(meta.experiment))
        if unknown:
            raise ValueError(f"experiments not in the metadata: {', '.join(unknown)}")
        meta = meta[meta.experiment.isin(experiments)]
    present = site_status(meta, root)
    if not present.all():
        log.info(
            "%d of %d listed sites have no images on disk; previewing the %d that do",
            int((~present).sum()),
            len(meta),
            int(present.sum()),
        )
    meta = meta[present]
    if limit is not None:
        meta = meta.head(limit)
    written = []
    for r in tqdm(meta.itertuples(index=False), total=len(meta), desc="previews", unit="site"):
        rgb = to_rgb(load_site(layout, r.experiment, r.plate, r.well, r.site))
        written.append(write_png_atomic(rgb, Path(out) / f"{r.experiment}_Plate{r.plate}_{r.well}_s{r.site}.png"))
    return written
