"""Uploaded channel images → a well's validated (S, C, H, W) sites, with errors that name the file and the fix.

Models of RxRx1's channels take RxRx1's PNG names (``B02_s1_w1.png``); models of other channels take one part per
channel named by the channel (``B02_s1_DNA.tif``), PNG or TIFF, 8- or 16-bit, or one multi-page TIFF per site
(``B02_s1.tif``, a page per channel in the model's order).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import anyio.to_thread
import numpy as np
from fastapi import UploadFile

from phenoprint.data.images import check_pixels, decode_image, decode_png, read_png_header
from phenoprint.data.layout import CHANNELS, RXRX1_CHANNELS, SITES, WELL_NAME_PATTERN
from phenoprint.errors import ImageFormatError

#: What every site needs: the six RxRx1 channels w1-w6.
SEND_INSTEAD = "send the 6 channel PNGs (w1-w6) of 1 or 2 sites, named like B02_s1_w1.png, as repeated `files` parts"
#: The PNG file signature; a part without it is another media type (415), not a damaged PNG (422).
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: ``<anything>_s<site>_w<channel>.png`` or ``s<site>_w<channel>.png``; RxRx1 names start with the well.
_NAME_RE = re.compile(r"^(?:(?P<prefix>.*)_)?s(?P<site>\d{1,3})_w(?P<channel>\d{1,3})\.png$", re.IGNORECASE)
_WELL_RE = re.compile(rf"(?:^|_)(?P<well>{WELL_NAME_PATTERN})$", re.IGNORECASE)
#: ``[<well>_]s<site>_<channel>.<ext>`` (one channel) or ``[<well>_]s<site>.<ext>`` (a multi-page TIFF).
_NAMED_RE = re.compile(r"^(?:(?P<prefix>.*?)_)?s(?P<site>\d{1,4})(?:_(?P<channel>.+))?$", re.IGNORECASE)
_ANY_WELL_RE = re.compile(r"^(?:.*_)?(?P<well>[A-Z]{1,2}\d{2})$", re.IGNORECASE)
_IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
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
        sites: (S, C, H, W) uint8 (uint16 when a channel is 16-bit), sites in increasing site number, channels in
            the model's order (RxRx1: w1-w6).
        site_numbers: the site number of each row of ``sites``.
        well: the well the file names give (``B02``), when they give one and agree.
    """

    sites: np.ndarray
    site_numbers: tuple[int, ...]
    well: str | None


def max_files(max_sites: int, n_channels: int = len(CHANNELS)) -> int:
    """Parts accepted for ``max_sites`` sites: one per channel each."""
    return n_channels * max_sites


def sites_accepted(max_sites: int, channels: tuple[str, ...]) -> int:
    """Sites a well may send: the setting, and at most RxRx1's two for a model of RxRx1's channels."""
    return min(max_sites, len(SITES)) if tuple(channels) == RXRX1_CHANNELS else max_sites


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


def read_well(
    files: Sequence[UploadedFile],
    *,
    max_sites: int = len(SITES),
    max_pixels: int = 4096**2,
    channels: tuple[str, ...] = RXRX1_CHANNELS,
) -> WellUpload:
    """Decode and validate the files of one well.

    Each file's site and channel come from its name (``…_s<site>_w<channel>.png``); every site present needs each
    of w1-w6 exactly once, all planes the same size.

    Args:
        files: the uploaded parts, in any order.
        max_sites: sites accepted (2 for a well, 1 for a preview).
        max_pixels: largest width x height accepted per image (checked from the PNG header, before decoding).
        channels: the model's channel names; other than RxRx1's, the parts are named by them (module docstring).

    Raises:
        NotPngError: a part is not a PNG.
        ImageFormatError: anything else: too many or too few files, a bad name, a channel missing or twice, a
            truncated or non-grayscale PNG, an oversized image, planes of different sizes.
    """
    if tuple(channels) != RXRX1_CHANNELS:
        return _read_named_well(files, tuple(channels), max_sites, max_pixels)
    max_sites = sites_accepted(max_sites, channels)
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


async def read_uploads(
    files: Sequence[UploadFile], *, max_sites: int, max_pixels: int, channels: tuple[str, ...] = RXRX1_CHANNELS
) -> WellUpload:
    """Read multipart parts and decode them off the event loop; see :func:`read_well`."""
    if tuple(channels) == RXRX1_CHANNELS:
        check_file_count(len(files), sites_accepted(max_sites, channels))  # before reading anything
    elif len(files) > max_files(max_sites, len(channels)):
        _check_named_count(len(files), channels, max_sites)
    parts = [UploadedFile(f.filename or "", await f.read()) for f in files]
    return await anyio.to_thread.run_sync(
        lambda: read_well(parts, max_sites=max_sites, max_pixels=max_pixels, channels=channels)
    )


def _named_help(channels: tuple[str, ...]) -> str:
    return (
        f"send one part per channel ({', '.join(channels)}) of each site, PNG or TIFF, named like "
        f"B02_s1_{channels[0]}.tif, or one multi-page TIFF per site (a page per channel, in that order) named like "
        "B02_s1.tif"
    )


def _check_named_count(n: int, channels: tuple[str, ...], max_sites: int) -> None:
    if n == 0:
        raise ImageFormatError("files", f"no files were sent; {_named_help(channels)}")
    limit = max_files(max_sites, len(channels))
    if n > limit:
        raise ImageFormatError(
            "files", f"{n} files were sent, at most {limit} are accepted ({max_sites} sites); {_named_help(channels)}"
        )


def _named_planes(
    f: UploadedFile, channels: tuple[str, ...], max_pixels: int
) -> tuple[int, list[tuple[int, np.ndarray]], str | None]:
    """One part's site, its (channel index, plane) pairs and the well its name gives."""
    shown = _shown(f.name) or "(a file without a name)"
    name = PurePosixPath(f.name.replace("\\", "/")).name
    stem, dot, suffix = name.rpartition(".")
    m = _NAMED_RE.match(stem) if dot and f".{suffix.lower()}" in _IMAGE_SUFFIXES else None
    if m is None or len(f.name) > MAX_NAME_LENGTH:
        raise ImageFormatError(shown, f"the file name does not say its site and channel; {_named_help(channels)}")
    site = int(m.group("site"))
    if site < 1:
        raise ImageFormatError(shown, "site numbers start at 1 (s1)")
    if f.data and not f.data.startswith((PNG_SIGNATURE, *_TIFF_SIGNATURES)):
        raise NotPngError(shown, f"neither PNG nor TIFF (it starts with {f.data[:8]!r}); {_named_help(channels)}")
    array = decode_image(f.data, shown, max_pixels)
    well = _ANY_WELL_RE.match(m.group("prefix") or "")
    well_name = None if well is None else well.group("well").upper()
    if m.group("channel") is None:
        if array.ndim != 3 or array.shape[0] != len(channels):
            got = f"{array.shape[0]} pages" if array.ndim == 3 else "one plane"
            raise ImageFormatError(
                shown, f"a site's multi-page TIFF needs {len(channels)} pages ({', '.join(channels)}), got {got}"
            )
        return site, [(i, array[i]) for i in range(len(channels))], well_name
    lookup = {c.lower(): i for i, c in enumerate(channels)}
    index = lookup.get(m.group("channel").lower())
    if index is None:
        raise ImageFormatError(shown, f"channel {m.group('channel')!r} is not one of the model's {', '.join(channels)}")
    if array.ndim != 2:
        raise ImageFormatError(shown, f"{array.shape[0]} pages in the file of one channel; send one plane")
    return site, [(index, array)], well_name


def _read_named_well(
    files: Sequence[UploadedFile], channels: tuple[str, ...], max_sites: int, max_pixels: int
) -> WellUpload:
    """The parts of a well for a model of named channels (LoadData layouts); see the module docstring."""
    _check_named_count(len(files), channels, max_sites)
    planes: dict[tuple[int, int], tuple[np.ndarray, str]] = {}
    wells: dict[str, str] = {}
    for f in files:
        site, found, well = _named_planes(f, channels, max_pixels)
        if well is not None:
            wells.setdefault(well, f.name)
        for index, plane in found:
            other = planes.get((site, index))
            if other is not None:
                raise ImageFormatError(
                    _shown(f.name), f"channel {channels[index]} of site {site} was sent twice (also in {other[1]})"
                )
            planes[(site, index)] = (plane, _shown(f.name))
    if len(wells) > 1:
        (a, fa), (b, fb) = list(wells.items())[:2]
        raise ImageFormatError(
            _shown(fb), f"names well {b} but {_shown(fa)} names well {a}; send the files of one well per request"
        )
    site_numbers = tuple(sorted({s for s, _ in planes}))
    if len(site_numbers) > max_sites:
        raise ImageFormatError("files", f"files of {len(site_numbers)} sites were sent; at most {max_sites} accepted")
    for site in site_numbers:
        missing = [c for i, c in enumerate(channels) if (site, i) not in planes]
        if missing:
            raise ImageFormatError(
                f"site {site}", f"channel(s) {', '.join(missing)} missing; every site needs {', '.join(channels)}"
            )
    ordered = [planes[(s, i)] for s in site_numbers for i in range(len(channels))]
    _check_named_sizes(ordered)
    dtype = np.uint16 if any(p.dtype == np.uint16 for p, _ in ordered) else np.uint8
    sites = np.stack([p for p, _ in ordered]).astype(dtype, copy=False)
    return WellUpload(
        sites.reshape(len(site_numbers), len(channels), *ordered[0][0].shape), site_numbers, next(iter(wells), None)
    )


def _check_named_sizes(ordered: Sequence[tuple[np.ndarray, str]]) -> None:
    first, first_name = ordered[0]
    for plane, shown in ordered:
        if min(plane.shape) < MIN_IMAGE_SIDE:
            raise ImageFormatError(
                shown,
                f"image of {plane.shape[1]}x{plane.shape[0]} pixels; each channel image must be at least "
                f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}",
            )
        if plane.shape != first.shape:
            raise ImageFormatError(
                shown,
                f"size {plane.shape[1]}x{plane.shape[0]} differs from {first.shape[1]}x{first.shape[0]} of "
                f"{first_name}; all channel images of a well must have one size",
            )


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
