"""Where site pixels come from: the image files of a data root (any layout), or a packed store (``phenoprint pack``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from phenoprint.data.images import load_site
from phenoprint.data.layout import Layout, detect_layout, read_metadata, site_status

log = logging.getLogger(__name__)


@runtime_checkable
class SiteSource(Protocol):
    """Anything that yields (C, H, W) uint8 or uint16 sites by their key (experiment, plate, well, site).

    Implementations: :class:`PngSource` (a data root's image files) and ``phenoprint.data.pack.PackSource``.
    Both must return identical arrays for the same site (the pack may be resized with ``--size``).
    """

    @property
    def metadata(self) -> pd.DataFrame:
        """The canonical site table (:func:`phenoprint.data.read_metadata` columns) of what this source holds."""
        ...

    @property
    def channel_names(self) -> tuple[str, ...]:
        """The channels of every site, by name, in stacking order (a model records them and refuses others)."""
        ...

    def load(self, experiment: str, plate: int, well: str, site: int) -> np.ndarray:
        """One site as a (C, H, W) array; raises ``ImageFormatError`` when it cannot be read."""
        ...

    def with_images(self, metadata: pd.DataFrame, skipped: str) -> pd.DataFrame:
        """The rows of ``metadata`` whose sites this source can load, warning how many are dropped and that
        they are ``skipped`` (e.g. "left out of training")."""
        ...


class PngSource:
    """Sites decoded from the image files of a data root: RxRx1's PNGs, or a LoadData CSV's PNGs and TIFFs.

    Args:
        root: the data root, or a :class:`Layout` already detected.
        channels: RxRx1 only: which of w1-w6 to read (default: all of the layout's channels).
        layout: read ``root`` in this layout (default: detected).
    """

    def __init__(
        self, root: str | Path | Layout, channels: tuple[int, ...] | None = None, layout: str | None = None
    ) -> None:
        self.layout: Layout = root if isinstance(root, Layout) else detect_layout(root, layout)
        self.channels = channels
        self._metadata: pd.DataFrame | None = None

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def channel_names(self) -> tuple[str, ...]:
        names = self.layout.channels
        return names if self.channels is None else tuple(names[c - 1] for c in self.channels)

    @property
    def metadata(self) -> pd.DataFrame:
        if self._metadata is None:
            self._metadata = read_metadata(self.layout)
        return self._metadata

    def load(self, experiment: str, plate: int, well: str, site: int) -> np.ndarray:
        return load_site(self.layout, experiment, plate, well, site, self.channels)

    def with_images(self, metadata: pd.DataFrame, skipped: str) -> pd.DataFrame:
        """The rows whose channel files are all on disk (a partial download lists sites it does not ship).

        The one place "drop listed sites whose files are missing" is done: training, embedding, onboarding,
        packing and previews all call it.
        """
        present = site_status(metadata, self.layout, self.channels)
        if not present.all():
            log.warning(
                "%d of %d listed sites have no images on disk and are %s", int((~present).sum()), len(present), skipped
            )
        return metadata[present]

    def __repr__(self) -> str:
        return f"PngSource({str(self.layout.root)!r}, layout={self.layout.name!r})"


class ChannelSubset:
    """Another source's sites with only some of its channels, chosen by name and put in the order given (a model
    of five stains reading data that also has brightfield; the user asks for it with ``--channels``)."""

    def __init__(self, source: SiteSource, names: tuple[str, ...]) -> None:
        have = source.channel_names
        unknown = [n for n in names if n not in have]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(
                f"channels {', '.join(names) or '(none)'}: expected distinct names among {', '.join(have)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            )
        self.source = source
        self.names = tuple(names)
        self._index = [have.index(n) for n in names]

    @property
    def metadata(self) -> pd.DataFrame:
        return self.source.metadata

    @property
    def channel_names(self) -> tuple[str, ...]:
        return self.names

    def load(self, experiment: str, plate: int, well: str, site: int) -> np.ndarray:
        return np.ascontiguousarray(self.source.load(experiment, plate, well, site)[self._index])

    def with_images(self, metadata: pd.DataFrame, skipped: str) -> pd.DataFrame:
        return self.source.with_images(metadata, skipped)

    def __repr__(self) -> str:
        return f"ChannelSubset({self.source!r}, {list(self.names)})"


def open_source(
    root: str | Path | None = None,
    pack: str | Path | None = None,
    layout: str | None = None,
    channels: tuple[str, ...] | None = None,
) -> SiteSource:
    """The source a command should read from: the pack when one is given, else the data root's image files;
    restricted to ``channels`` (by name, in that order) when given.

    Raises:
        ValueError: neither a root nor a pack is given, or a channel the data does not have.
    """
    source: SiteSource
    if pack is not None:
        from phenoprint.data.pack import PackSource

        source = PackSource(pack)
    elif root is None:
        raise ValueError("give a data root (image files) or a pack (phenoprint pack output) to read sites from")
    else:
        source = PngSource(root, layout=None if layout == "auto" else layout)
    if channels is not None and tuple(channels) != source.channel_names:
        return ChannelSubset(source, tuple(channels))
    return source
