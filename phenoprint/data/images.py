"""Decode channel images (PNG exactly as PIL reads it; TIFF through tifffile), with errors naming file and fault."""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from phenoprint.data.layout import CHANNELS, ChannelFile, Layout, RxRx1Layout, detect_layout
from phenoprint.errors import ImageFormatError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Chunks a PNG may hold before its image data; encoders write a handful (IHDR, gAMA, pHYs, tEXt …).
_MAX_CHUNKS_BEFORE_IDAT = 1000
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_JPEG2000_SIGNATURES = (b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")
#: Bits per sample phenoprint reads: 8 (RxRx1's PNGs) and 16 (most microscopes' TIFFs).
BIT_DEPTHS: tuple[int, ...] = (8, 16)
_CONVERT_HINT = (
    "convert it to 16-bit TIFF first, e.g. `opj_decompress -i in.jp2 -o out.tif` (OpenJPEG) or, in Python, "
    "`tifffile.imwrite('out.tif', imagecodecs.jpeg2k_decode(open('in.jp2', 'rb').read()))`"
)


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


def decode_png(
    data: bytes, source: str, max_pixels: int | None = None, bit_depths: tuple[int, ...] = (8,)
) -> np.ndarray:
    """Decode one grayscale PNG held in memory (8-bit; 16-bit too where ``bit_depths`` allows it).

    The header is checked first (:func:`read_png_header`), then the size PIL is about to decode, both against
    ``max_pixels``, so an over-size image is refused before a pixel buffer is allocated.

    Args:
        data: the file's bytes.
        source: a name for error messages (a path or an upload's file name).
        max_pixels: largest width x height accepted (None: PIL's own decompression-bomb limit only).
        bit_depths: the bits per sample accepted (RxRx1: 8 only; other layouts: 8 and 16).

    Returns:
        A (H, W) uint8 (or uint16) array, identical to ``np.asarray(PIL.Image.open(...))``.

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
            accepted = {"L": 8, "I;16": 16, "I;16B": 16}
            if accepted.get(mode) not in bit_depths:
                wanted = " or ".join(f"{b}-bit" for b in bit_depths)
                raise ImageFormatError(
                    source, f"PNG of mode {mode!r}; expected {wanted} grayscale (mode 'L'), one file per channel"
                )
            im.load()
            array = np.asarray(im)
            if array.dtype != np.uint8:
                array = array.astype(np.uint16)
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


def decode_tiff(data: bytes, source: str, max_pixels: int | None = None) -> np.ndarray:
    """Decode a grayscale TIFF held in memory: (H, W) for one page, (P, H, W) for a multi-page file.

    Raises:
        ImageFormatError: not a readable TIFF, not 8- or 16-bit unsigned grayscale, or too large.
    """
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            series = tif.series[0]
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
            if dtype not in (np.uint8, np.uint16):
                raise ImageFormatError(
                    source, f"TIFF of {dtype} samples; expected 8- or 16-bit unsigned integers (uint8/uint16)"
                )
            if len(shape) not in (2, 3) or 0 in shape:
                raise ImageFormatError(
                    source,
                    f"TIFF of shape {shape}; expected one grayscale plane (H, W) per file or page, "
                    "or (pages, H, W) with one page per channel",
                )
            check_pixels(shape[-1], shape[-2], max_pixels, source)
            array = series.asarray()
    except ImageFormatError:
        raise
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as exc:
        raise ImageFormatError(source, f"truncated or corrupt TIFF ({exc})") from exc
    return np.ascontiguousarray(array)


def decode_image(data: bytes, source: str, max_pixels: int | None = None) -> np.ndarray:
    """Decode a PNG or TIFF of 8 or 16 bits per sample, told apart by its first bytes (not its name).

    Returns:
        (H, W) uint8/uint16, or (P, H, W) for a multi-page TIFF.

    Raises:
        ImageFormatError: JPEG-2000 (with how to convert it), another format, or what the decoders refuse.
    """
    if data.startswith(_PNG_SIGNATURE):
        return decode_png(data, source, max_pixels, bit_depths=BIT_DEPTHS)
    if data.startswith(_TIFF_SIGNATURES):
        return decode_tiff(data, source, max_pixels)
    if data.startswith(_JPEG2000_SIGNATURES):
        raise ImageFormatError(source, f"a JPEG-2000 image, which phenoprint does not decode; {_CONVERT_HINT}")
    kind = "an empty file" if not data else f"starts with {data[:8]!r}"
    raise ImageFormatError(source, f"neither PNG nor TIFF ({kind}); expected 8- or 16-bit grayscale PNG or TIFF")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageFormatError(
            path, "file not found (the metadata lists this site, but its image is not on disk)"
        ) from None
    except OSError as exc:
        raise ImageFormatError(path, f"cannot be read ({exc.strerror or exc})") from exc


def read_png(path: str | Path) -> np.ndarray:
    """Read one channel PNG from disk; see :func:`decode_png`.

    Raises:
        ImageFormatError: the file is missing or unreadable, or :func:`decode_png` refuses it.
    """
    path = Path(path)
    return decode_png(_read_bytes(path), str(path))


def read_planes(files: Sequence[ChannelFile]) -> list[np.ndarray]:
    """The (H, W) plane of each channel file (PNG or TIFF; a page of a multi-page TIFF read once per site).

    Raises:
        ImageFormatError: a file is missing or unreadable, a page is out of range, or a plane is not 2-D.
    """
    decoded: dict[Path, np.ndarray] = {}
    planes = []
    for f in files:
        if f.path not in decoded:
            decoded[f.path] = decode_image(_read_bytes(f.path), str(f.path))
        array = decoded[f.path]
        if f.page is None:
            if array.ndim != 2:
                raise ImageFormatError(
                    f.path, f"a multi-page TIFF of {array.shape[0]} pages where one plane per channel file was expected"
                )
            planes.append(array)
        else:
            pages = array[None] if array.ndim == 2 else array
            if not 0 <= f.page < len(pages):
                raise ImageFormatError(f.path, f"has {len(pages)} page(s); page {f.page + 1} was expected")
            planes.append(pages[f.page])
    return planes


def stack_channels(planes: Sequence[np.ndarray], sources: Sequence[str]) -> np.ndarray:
    """Stack per-channel planes into (C, H, W), refusing channels of different sizes.

    Raises:
        ImageFormatError: a plane's size differs from the first one's; names both files.
    """
    if not planes:
        raise ValueError("no channel planes to stack")
    first = planes[0].shape
    dtypes = {p.dtype for p in planes}
    for plane, source in zip(planes, sources, strict=True):
        if plane.shape != first:
            raise ImageFormatError(
                source,
                f"size {plane.shape[1]}x{plane.shape[0]} differs from {first[1]}x{first[0]} of {sources[0]}; "
                "all channels of a site must have the same size",
            )
    # channels of different depths (a 16-bit stain beside an 8-bit brightfield) share the wider type, values unchanged
    return np.stack(planes).astype(np.uint16, copy=False) if len(dtypes) > 1 else np.stack(planes)


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
    channels: Sequence[int] | None = None,
) -> np.ndarray:
    """Load one site of a data root as a (C, H, W) array (uint8, or uint16 for 16-bit images).

    Args:
        root: the data root (any layout), or a :class:`Layout` already detected.
        experiment: e.g. ``"HUVEC-01"``.
        plate: the plate number.
        well: e.g. ``"B02"``.
        site: the site number.
        channels: RxRx1 only: which of ``w1``-``w6`` to read, in this order (default: every channel of the layout,
            in its order).

    Raises:
        ImageFormatError: a channel file is missing, not a PNG/TIFF, truncated, of another size, or of another bit
            depth than the same channel elsewhere (LoadData).
    """
    layout = root if isinstance(root, Layout) else detect_layout(root)
    if isinstance(layout, RxRx1Layout):  # RxRx1: 8-bit PNGs only, exactly as before
        chosen = check_channels(CHANNELS if channels is None else channels)
        paths = [layout.site_path(experiment, plate, well, site, ch) for ch in chosen]
        return stack_channels([read_png(p) for p in paths], [str(p) for p in paths])
    if channels is not None:
        raise ValueError(f"channel numbers select RxRx1 channels only; the {layout.name} layout reads all its channels")
    files = layout.site_files(experiment, plate, well, site)
    planes = read_planes(files)
    check = getattr(layout, "check_plane_dtypes", None)
    if check is not None:
        check(planes, files)
    return stack_channels(planes, [str(f.path) for f in files])
