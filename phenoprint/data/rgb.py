"""RGB composites of sites: RxRx1's published colours, other stains by name, per-image or the published contrast."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from phenoprint.atomic import atomic_path
from phenoprint.data.images import check_channels, load_site
from phenoprint.data.layout import CHANNEL_NAMES, CHANNELS, detect_layout, read_metadata
from phenoprint.data.source import PngSource
from phenoprint.errors import UnknownExperimentError

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

#: Display colour of a stain, by (lower-case) name: DNA/Hoechst blue, ER green, AGP/actin red, RNA/nucleoli cyan,
#: Mito magenta, Golgi yellow (RxRx1's colours for its six stains), brightfield grey.
STAIN_COLOURS: dict[str, tuple[int, int, int]] = {
    **{name: RGB_MAP[ch][0] for ch, name in CHANNEL_NAMES.items()},
    "dna": RGB_MAP[1][0],
    "hoechst": RGB_MAP[1][0],
    "dapi": RGB_MAP[1][0],
    "er": RGB_MAP[2][0],
    "concanavalin": RGB_MAP[2][0],
    "agp": RGB_MAP[3][0],
    "phalloidin": RGB_MAP[3][0],
    "rna": RGB_MAP[4][0],
    "syto14": RGB_MAP[4][0],
    "mito": RGB_MAP[5][0],
    "mitotracker": RGB_MAP[5][0],
    "golgi": RGB_MAP[6][0],
    "brightfield": (128, 128, 128),
    "bf": (128, 128, 128),
    "highzbf": (128, 128, 128),
    "lowzbf": (128, 128, 128),
}
#: Colours for channels of names the table does not know, in turn.
FALLBACK_COLOURS: tuple[tuple[int, int, int], ...] = ((255, 128, 0), (128, 0, 255), (0, 160, 128), (200, 200, 200))


def stain_colour(name: str, unknown_index: int = 0) -> tuple[int, int, int]:
    """The display colour of a channel by its stain name (exact, then as a prefix: ``DNA_2`` is DNA), else a
    fallback colour (logged)."""
    key = name.lower()
    if key in STAIN_COLOURS:
        return STAIN_COLOURS[key]
    for stain, colour in sorted(STAIN_COLOURS.items(), key=lambda kv: -len(kv[0])):
        if key.startswith(stain) and len(stain) > 1:
            return colour
    log.info("no display colour for channel %r; showing it in a fallback colour", name)
    return FALLBACK_COLOURS[unknown_index % len(FALLBACK_COLOURS)]


def channel_colours(channels: Sequence[int | str]) -> list[tuple[int, int, int]]:
    """Colours of RxRx1 channel numbers (their published map) or of channel names (:data:`STAIN_COLOURS`)."""
    if all(isinstance(c, int | np.integer) for c in channels):
        return [RGB_MAP[c][0] for c in check_channels([int(c) for c in channels])]
    if len(set(channels)) != len(channels):
        raise ValueError(f"channel names must be distinct, got {tuple(channels)}")
    out, unknown = [], 0
    for c in channels:
        colour = stain_colour(str(c), unknown)
        unknown += colour in FALLBACK_COLOURS
        out.append(colour)
    return out


#: How channel intensities become display brightness: ``percentile`` stretches each image by its own intensities
#: (every cell type readable); ``rxrx1`` uses the fixed ranges of :data:`RGB_MAP`, which suit HUVEC: HEPG2 sites,
#: several times brighter, come out nearly all white with them.
Contrast = Literal["percentile", "rxrx1"]
CONTRASTS: tuple[str, ...] = get_args(Contrast)
#: ``percentile`` contrast: each channel is stretched from its 1st (black) to its 99.9th percentile (its colour at
#: full strength), then the summed composite is scaled so that its brightest 0.5 % of pixels reach 255.
CHANNEL_PERCENTILES = (1.0, 99.9)
COMPOSITE_PERCENTILE = 99.5


def to_rgb(site: np.ndarray, channels: Sequence[int | str] = CHANNELS, contrast: Contrast = "percentile") -> np.ndarray:
    """Composite a (C, H, W) site into an (H, W, 3) uint8 RGB image in the RxRx1 colours (or, for channels given
    by name, the colours of :data:`STAIN_COLOURS`).

    With ``contrast="rxrx1"`` each channel is scaled by its published display range, clipped at 1, multiplied by
    its colour and truncated to an integer; the colours are summed and clipped at 255, exactly as rxrx1-utils
    does. With ``"percentile"`` (the default) the ranges come from the image itself
    (:data:`CHANNEL_PERCENTILES`, :data:`COMPOSITE_PERCENTILE`), so a bright cell type is not blown out.

    Raises:
        ValueError: ``site`` is not (C, H, W) with C matching ``channels``, or an unknown ``contrast``.
    """
    colours = channel_colours(channels)
    site = np.asarray(site)
    if site.ndim != 3 or site.shape[0] != len(colours):
        raise ValueError(f"expected a (C, H, W) site with C={len(colours)} channels, got shape {site.shape}")
    if contrast == "rxrx1":
        if not all(isinstance(c, int | np.integer) for c in channels) or site.dtype != np.uint8:
            raise ValueError("contrast 'rxrx1' is RxRx1's published 8-bit display ranges; use 'percentile' here")
        chosen = check_channels([int(c) for c in channels])
        out = np.zeros((*site.shape[1:], 3), dtype=np.int64)
        for plane, ch in zip(site, chosen, strict=True):
            colour, (lo, hi) = RGB_MAP[ch]
            x = (plane / 255.0) / ((hi - lo) / 255.0) + lo / 255.0
            x = np.minimum(x, 1.0)
            out += (x[..., None] * np.asarray(colour, dtype=np.float64)).astype(np.int64)
        return np.minimum(out, 255).astype(np.uint8)
    if contrast != "percentile":
        raise ValueError(f"contrast must be one of {', '.join(CONTRASTS)}; got {contrast!r}")
    total = np.zeros((*site.shape[1:], 3), dtype=np.float64)
    for plane, colour in zip(site, colours, strict=True):
        lo, hi = np.percentile(plane, CHANNEL_PERCENTILES)
        x = np.clip((plane.astype(np.float64) - lo) / max(hi - lo, 1.0), 0.0, 1.0)
        total += x[..., None] * np.asarray(colour, dtype=np.float64)
    top = float(np.percentile(total.max(axis=-1), COMPOSITE_PERCENTILE))
    return np.clip(total * (255.0 / max(top, 1.0)), 0, 255).astype(np.uint8)


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
    contrast: Contrast = "percentile",
    progress: bool = True,
    layout: str | None = None,
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
        contrast: ``percentile`` (each image stretched by its own intensities) or ``rxrx1`` (the published ranges).
        progress: show a progress bar.
        layout: read ``root`` in this layout (default: detected).

    Returns:
        The written paths.

    Raises:
        UnknownExperimentError: an experiment the metadata does not list.
    """
    found = detect_layout(root, layout)
    meta = read_metadata(found) if metadata is None else metadata
    if experiments:
        unknown = sorted(set(experiments) - set(meta.experiment))
        if unknown:
            raise UnknownExperimentError(unknown[0], set(meta.experiment))
        meta = meta[meta.experiment.isin(experiments)]
    meta = PngSource(found).with_images(meta, "not previewed")
    if limit is not None:
        meta = meta.head(limit)
    written = []
    rows = meta.itertuples(index=False)
    for r in tqdm(rows, total=len(meta), desc="previews", unit="site", disable=not progress):
        site = load_site(found, r.experiment, r.plate, r.well, r.site)
        rgb = to_rgb(site, channels=CHANNELS if found.name != "loaddata" else found.channels, contrast=contrast)
        written.append(write_png_atomic(rgb, Path(out) / f"{r.experiment}_Plate{r.plate}_{r.well}_s{r.site}.png"))
    return written


@dataclass(frozen=True)
class PreviewPanel:
    """One site of a preview sheet and the caption it is shown with."""

    caption: str
    experiment: str
    plate: int
    well: str
    site: int


def write_preview_sheet(
    root: str | Path,
    panels: Sequence[PreviewPanel],
    path: str | Path,
    *,
    columns: int = 2,
    title: str | None = None,
    contrast: Contrast = "percentile",
) -> Path:
    """One labelled figure of several sites (e.g. an untreated well beside a treated one, per cell type).

    Raises:
        ValueError: no panels.
    """
    if not panels:
        raise ValueError("a preview sheet needs at least one site")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layout = detect_layout(root)
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(3.2 * columns, 3.4 * rows + (0.5 if title else 0)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        site = load_site(layout, panel.experiment, panel.plate, panel.well, panel.site)
        ax.imshow(to_rgb(site, contrast=contrast), interpolation="nearest")
        ax.set_title(panel.caption, fontsize=8)
    shown = "each image stretched by its own intensities" if contrast == "percentile" else "RxRx1 display ranges"
    fig.suptitle((f"{title}\n" if title else "") + f"RxRx1 colours ({shown})", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return Path(path)
