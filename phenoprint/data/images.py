"""Decode RxRx1 channel PNGs exactly as PIL reads them, with errors that name the file and the fault."""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from phenoprint.data.layout import CHANNELS, Layout, detect_layout
from phenoprint.errors import ImageFormatError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Chunks a PNG may hold before its image data; encoders write a handful (IHDR, gAMA, pHYs, tEXt …).
_MAX_CHUNKS_BEFORE_IDAT = 1000


@dataclass(frozen=True)
class PngHeader:
    """What a PNG's header chunk declares, read before any pixel is decoded.

    Attributes:
        width: pixels per row.
        height: rows.
        bit_depth: bits per sample (8 for RxRx1).
        color_type: 0 grayscale, 2 RGB, 3 palette, 4 grayscale + alpha, 6 RGBA.
    """

    width: int
    height: int
    bit_depth: int
    color_type: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_png_header(data: bytes, source: str) -> PngHeader:
    """The dimensions a PNG declares, from a strict walk of its chunks up to the image data.

    PIL accepts chunks before ``IHDR`` and a second ``IHDR`` (the last one wins), so the first 24 bytes of a file do
    not say what PIL will decode. The PNG specification requires ``IHDR`` first and once: anything else is refused
    here, so that the size checked is the size decoded.

    Raises:
        ImageFormatError: not a PNG, truncated before its image data, chunks out of order, or a zero dimension.
    """
    if not data.startswith(_PNG_SIGNATURE):
        kind = "an empty file" if not data else f"starts with {data[:8]!r}"
        raise ImageFormatError(source, f"not a PNG ({kind}); expected an 8-bit grayscale PNG")
    header: PngHeader | None = None
    offset = len(_PNG_SIGNATURE)
    for n in range(_MAX_CHUNKS_BEFORE_IDAT + 1):
        if offset + 8 > len(data):
            where = "after its signature" if header is None else "before its image data (IDAT)"
            raise ImageFormatError(
                source, f"truncated PNG: the file ends {where} ({len(data)} bytes); send the complete PNG file"
            )
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if n == 0 and kind != b"IHDR":
            raise ImageFormatError(
                source,
                f"malformed PNG: its first chunk is {kind!r}, the PNG standard requires the header (IHDR) "
                "first; send a PNG written by a standard encoder",
            )
        if kind == b"IHDR":
            if header is not None:
                raise ImageFormatError(
                    source, "malformed PNG: a second header chunk (IHDR); a PNG declares its size once"
                )
            if length != 13 or offset + 8 + 13 > len(data):
                raise ImageFormatError(source, "truncated or corrupt PNG: its header chunk (IHDR) is incomplete")
            width, height, bit_depth, color_type = struct.unpack(">IIBB", data[offset + 8 : offset + 18])
            if width == 0 or height == 0:
                raise ImageFormatError(
                    source, f"PNG of {width}x{height} pixels: an image needs a width and a height of at least 1"
                )
            header = PngHeader(int(width), int(height), int(bit_depth), int(color_type))
        elif kind == b"IDAT":
            assert header is not None  # the first chunk was IHDR
            return header
        offset += 12 + length  # length, type, data, CRC
    raise ImageFormatError(
        source, f"malformed PNG: more than {_MAX_CHUNKS_BEFORE_IDAT} chunks before its image data (IDAT)"
    )


def decode_png(data: bytes, source: str, max_pixels: int | None = None) -> np.ndarray:
    """Decode one 8-bit grayscale PNG held in memory.

    The header is checked first (:func:`read_png_header`), then the size PIL is about to decode, both against
    ``max_pixels``, so an over-size image is refused before a pixel buffer is allocated.

    Args:
        data: the file's bytes.
        source: a name for error messages (a path or an upload's file name).
        max_pixels: largest width x height accepted (None: PIL's own decompression-bomb limit only).

    Returns:
        A (H, W) uint8 array, identical to ``np.asarray(PIL.Image.open(...))``.

    Raises:
        ImageFormatError: not a PNG, truncated or corrupt, too large, or not 8-bit single-channel.
    """
    header = read_png_header(data, source)
    check_pixels(header.width, header.height, max_pixels, source)
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            width, height = im.size
            if (width, height) != (header.width, header.height):  # read_png_header makes this impossible
                raise ImageFormatError(
                    source, f"malformed PNG: decodes to {width}x{height}, declares {header.width}x{header.height}"
                )
            check_pixels(width, height, max_pixels, source)
            mode = im.mode
            if mode != "L":
                raise ImageFormatError(
                    source, f"PNG of mode {mode!r}; expected 8-bit grayscale (mode 'L'), one file per channel"
                )
            im.load()
            array = np.asarray(im)
    except Image.DecompressionBombError as exc:
        raise ImageFormatError(
            source, f"image of {header.width}x{header.height} pixels is too large to decode safely ({exc})"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageFormatError(
            source,
            "corrupt PNG: PIL cannot read its chunks (a damaged header or checksum); send a valid 8-bit grayscale PNG",
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageFormatError(source, f"truncated or corrupt PNG ({_without_buffer(exc, source)})") from exc
    return array


def _without_buffer(exc: BaseException, source: str) -> str:
    """PIL's message with the repr of the in-memory buffer (``<_io.BytesIO object at 0x…>``) replaced by the name."""
    return re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", source, str(exc))


def check_pixels(width: int, height: int, max_pixels: int | None, source: str) -> None:
    """Refuse an image of more than ``max_pixels`` pixels, naming its size and the limit.

    Raises:
        ImageFormatError: the image is too large.
    """
    if max_pixels is not None and width * height > max_pixels:
        raise ImageFormatError(
            source,
            f"image of {width}x{height} pixels exceeds the {max_pixels:,}-pixel limit per channel; send the channel "
            "images at their acquired size (RxRx1: 512x512)",
        )


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
