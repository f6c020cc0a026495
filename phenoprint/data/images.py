"""Decode RxRx1 channel PNGs exactly as PIL reads them, with errors that name the file and the fault."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from phenoprint.data.layout import CHANNELS, Layout, detect_layout
from phenoprint.errors import ImageFormatError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_png(data: bytes, source: str) -> np.ndarray:
    """Decode one 8-bit grayscale PNG held in memory.

    Args:
        data: the file's bytes.
        source: a name for error messages (a path or an upload's file name).

    Returns:
        A (H, W) uint8 array, identical to ``np.asarray(PIL.Image.open(...))``.

    Raises:
        ImageFormatError: not a PNG, truncated or corrupt, or not 8-bit single-channel.
    """
    if not data.startswith(_PNG_SIGNATURE):
        kind = "an empty file" if not data else f"starts with {data[:8]!r}"
        raise ImageFormatError(source, f"not a PNG ({kind}); expected an 8-bit grayscale PNG")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.load()
            mode = im.mode
            array = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageFormatError(source, f"truncated or corrupt PNG ({exc})") from exc
    if mode != "L":
        raise ImageFormatError(
            source, f"PNG of mode {mode!r}; expected 8-bit grayscale (mode 'L'), one file per channel"
        )
    return array


def read_png(path: str | Path) -> np.ndarray:
    """Read one channel PNG from disk; see :func:`decode_png`.

    Raises:
        ImageFormatError: the file is missing or unreadable, or :func:`decode_png` refuses it.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageFormatError(
            path, "file not found (the metadata lists this site, but its image is not on disk)"
        ) from None
    except OSError as exc:
        raise ImageFormatError(path, f"cannot be read ({exc.strerror or exc})") from exc
    return decode_png(data, str(path))


def stack_channels(planes: Sequence[np.ndarray], sources: Sequence[str]) -> np.ndarray:
    """Stack per-channel planes into (C, H, W), refusing channels of different sizes.

    Raises:
        ImageFormatError: a plane's size differs from the first one's; names both files.
    """
    if not planes:
        raise ValueError("no channel planes to stack")
    first = planes[0].shape
    for plane, source in zip(planes, sources, strict=True):
        if plane.shape != first:
            raise ImageFormatError(
                source,
                f"size {plane.shape[1]}x{plane.shape[0]} differs from {first[1]}x{first[0]} of {sources[0]}; "
                "all channels of a site must have the same size",
            )
    return np.stack(planes)


def check_channels(channels: Sequence[int]) -> tuple[int, ...]:
    """Validate a channel selection (distinct numbers among 1-6)."""
    chosen = tuple(int(c) for c in channels)
    if not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= set(CHANNELS):
        raise ValueError(f"channels must be distinct numbers among {CHANNELS}, got {tuple(channels)}")
    return chosen


def load_site(
    root: str | Path | Layout,
    experiment: str,
    plate: int,
    well: str,
    site: int,
    channels: Sequence[int] = CHANNELS,
) -> np.ndarray:
    """Load one site of an RxRx1 data root as a (C, H, W) uint8 array.

    Args:
        root: the data root (either layout), or a :class:`Layout` already detected.
        experiment: e.g. ``"HUVEC-01"``.
        plate: 1-4.
        well: e.g. ``"B02"``.
        site: 1 or 2.
        channels: which of ``w1``-``w6`` to read, in this order.

    Raises:
        ImageFormatError: a channel file is missing, not a PNG, truncated, or of another size.
    """
    layout = root if isinstance(root, Layout) else detect_layout(root)
    chosen = check_channels(channels)
    paths = [layout.site_path(experiment, plate, well, site, ch) for ch in chosen]
    return stack_channels([read_png(p) for p in paths], [str(p) for p in paths])
