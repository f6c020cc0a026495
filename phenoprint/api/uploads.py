"""Uploaded channel PNGs → a well's validated (S, 6, H, W) sites, with errors that name the file and the fix."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import anyio.to_thread
import numpy as np
from fastapi import UploadFile

from phenoprint.data.images import check_pixels, decode_png, read_png_header
from phenoprint.data.layout import CHANNELS, SITES, WELL_NAME_PATTERN
from phenoprint.errors import ImageFormatError

#: What every site needs: the six RxRx1 channels w1-w6.
SEND_INSTEAD = "send the 6 channel PNGs (w1-w6) of 1 or 2 sites, named like B02_s1_w1.png, as repeated `files` parts"
#: The PNG file signature; a part without it is another media type (415), not a damaged PNG (422).
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: ``<anything>_s<site>_w<channel>.png`` or ``s<site>_w<channel>.png``; RxRx1 names start with the well.
_NAME_RE = re.compile(r"^(?:(?P<prefix>.*)_)?s(?P<site>\d{1,3})_w(?P<channel>\d{1,3})\.png$", re.IGNORECASE)
_WELL_RE = re.compile(rf"(?:^|_)(?P<well>{WELL_NAME_PATTERN})$", re.IGNORECASE)
_SHOWN_NAME = 120  # characters of a client's file name repeated in messages
#: Smallest channel image accepted, per side: a site must hold a few cells (a 1x1 "site" has no spread to
#: standardize by); the pack refuses smaller sizes too.
MIN_IMAGE_SIDE = 8
#: Longest file name accepted: what file systems allow; RxRx1 names are 13 characters.
MAX_NAME_LENGTH = 255


class NotPngError(ImageFormatError):
    """An uploaded part is not a PNG at all (the client sent another kind of file)."""


@dataclass(frozen=True)
class UploadedFile:
    """One multipart part: the client's file name and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class WellUpload:
    """A well's sites as decoded from its files.

    Attributes:
        sites: (S, 6, H, W) uint8, sites in increasing site number, channels w1-w6.
        site_numbers: the site number of each row of ``sites``.
        well: the well the file names give (``B02``), when they give one and agree.
    """

    sites: np.ndarray
    site_numbers: tuple[int, ...]
    well: str | None


def max_files(max_sites: int) -> int:
    """Parts accepted for ``max_sites`` sites: six channels each."""
    return len(CHANNELS) * max_sites


def check_file_count(n: int, max_sites: int) -> None:
    """Refuse no files, or more than six per accepted site.

    Raises:
        ImageFormatError: with what to send instead.
    """
    limit = max_files(max_sites)
    what = "the 6 channel PNGs (w1-w6) of one site" if max_sites == 1 else SEND_INSTEAD.removeprefix("send ")
    if n == 0:
        raise ImageFormatError("files", f"no files were sent; send {what}")
    if n > limit:
        raise ImageFormatError("files", f"{n} files were sent, at most {limit} are accepted; send {what}")


def read_well(files: Sequence[UploadedFile], *, max_sites: int = len(SITES), max_pixels: int = 4096**2) -> WellUpload:
    """Decode and validate the files of one well.

    Each file's site and channel come from its name (``…_s<site>_w<channel>.png``); every site present needs each
    of w1-w6 exactly once, all planes the same size.

    Args:
        files: the uploaded parts, in any order.
        max_sites: sites accepted (2 for a well, 1 for a preview).
        max_pixels: largest width x height accepted per image (checked from the PNG header, before decoding).

    Raises:
        NotPngError: a part is not a PNG.
        ImageFormatError: anything else: too many or too few files, a bad name, a channel missing or twice, a
            truncated or non-grayscale PNG, an oversized image, planes of different sizes.
    """
    check_file_count(len(files), max_sites)
    by_key: dict[tuple[int, int], UploadedFile] = {}
    wells: dict[str, str] = {}
    for f in files:
        site, channel, well = _parse_name(f.name)
        other = by_key.get((site, channel))
        if other is not None:
            raise ImageFormatError(
                _shown(f.name),
                f"channel w{channel} of site {site} was sent twice (also as {_shown(other.name)}); "
                "send each channel of a site once",
            )
        by_key[(site, channel)] = f
        if well is not None:
            wells.setdefault(well, f.name)
    if len(wells) > 1:
        (a, fa), (b, fb) = list(wells.items())[:2]
        raise ImageFormatError(
            _shown(fb), f"names well {b} but {_shown(fa)} names well {a}; send the files of one well per request"
        )
    site_numbers = tuple(sorted({s for s, _ in by_key}))
    if len(site_numbers) > max_sites:
        raise ImageFormatError(
            "files", f"files of sites {' and '.join(map(str, site_numbers))} were sent; send the 6 PNGs of one site"
        )
    for site in site_numbers:
        missing = [c for c in CHANNELS if (site, c) not in by_key]
        if missing:
            got = ", ".join(f"w{c}" for c in CHANNELS if (site, c) in by_key)
            raise ImageFormatError(
                f"site {site}",
                f"channel(s) {', '.join(f'w{c}' for c in missing)} missing (got {got}); every site needs all six "
                "channels w1-w6",
            )
    ordered = [by_key[(site, c)] for site in site_numbers for c in CHANNELS]
    height, width = _check_headers(ordered, max_pixels)  # every file, before a single pixel is decoded
    sites = np.empty((len(site_numbers), len(CHANNELS), height, width), dtype=np.uint8)
    for i, f in enumerate(ordered):  # decoded one plane at a time straight into the well's array
        sites[divmod(i, len(CHANNELS))] = decode_png(f.data, _shown(f.name), max_pixels)
    return WellUpload(sites, site_numbers, next(iter(wells), None))


def _check_headers(ordered: Sequence[UploadedFile], max_pixels: int) -> tuple[int, int]:
    """Refuse a file that is not a PNG, too small or too large, or of another size than the first, from the headers
    alone: decoding a well then never needs more than its six or twelve planes at the allowed size.

    Returns:
        The (height, width) every plane has.
    """
    first: tuple[str, tuple[int, int]] | None = None
    for i, f in enumerate(ordered):
        name = _shown(f.name)
        if f.data and not f.data.startswith(PNG_SIGNATURE):
            raise NotPngError(
                name, f"not a PNG (it starts with {f.data[:8]!r}); send each channel as an 8-bit grayscale PNG"
            )
        header = read_png_header(f.data, name)
        check_pixels(header.width, header.height, max_pixels, name)
        if min(header.width, header.height) < MIN_IMAGE_SIDE:
            raise ImageFormatError(
                name,
                f"image of {header.width}x{header.height} pixels; each channel image must be at least "
                f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} (RxRx1: 512x512)",
            )
        if first is None:
            first = (name, (header.height, header.width))
        elif (header.height, header.width) != first[1]:
            h0, w0 = first[1]
            same = "all channels of a site must have the same size"
            rule = same if i < len(CHANNELS) else "both sites of a well must have one size"
            raise ImageFormatError(
                name, f"size {header.width}x{header.height} differs from {w0}x{h0} of {first[0]}; {rule}"
            )
    assert first is not None  # check_file_count refused an empty upload
    return first[1]


async def read_uploads(files: Sequence[UploadFile], *, max_sites: int, max_pixels: int) -> WellUpload:
    """Read multipart parts and decode them off the event loop; see :func:`read_well`."""
    check_file_count(len(files), max_sites)  # before reading anything
    parts = [UploadedFile(f.filename or "", await f.read()) for f in files]
    return await anyio.to_thread.run_sync(lambda: read_well(parts, max_sites=max_sites, max_pixels=max_pixels))


def _parse_name(raw: str) -> tuple[int, int, str | None]:
    if len(raw) > MAX_NAME_LENGTH:
        raise ImageFormatError(
            _shown(raw),
            f"a file name of {len(raw):,} characters (at most {MAX_NAME_LENGTH} are accepted); name each file "
            "<well>_s<site>_w<channel>.png as in RxRx1, e.g. B02_s1_w1.png",
        )
    name = PurePosixPath(raw.replace("\\", "/")).name
    m = _NAME_RE.match(name)
    if m is None:
        raise ImageFormatError(
            _shown(raw) or "(a file without a name)",
            "the file name does not say its site and channel; name each file <well>_s<site>_w<channel>.png as in "
            "RxRx1, e.g. B02_s1_w1.png",
        )
    site, channel = int(m.group("site")), int(m.group("channel"))
    if channel not in CHANNELS:
        raise ImageFormatError(_shown(raw), f"channel w{channel} does not exist; RxRx1 sites have channels w1-w6")
    if site not in SITES:
        raise ImageFormatError(_shown(raw), f"site s{site} does not exist; RxRx1 wells have sites s1 and s2")
    well = _WELL_RE.search(m.group("prefix") or "")
    return site, channel, None if well is None else well.group("well").upper()


def _shown(name: str) -> str:
    return name if len(name) <= _SHOWN_NAME else name[: _SHOWN_NAME - 1] + "…"
