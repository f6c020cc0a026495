"""Layouts of a data root (RxRx1 v1.0, RxRx1 Kaggle, CellProfiler LoadData CSV) read into one canonical site table.

Kept as one module although long: the Layout protocol, detection, the RxRx1 readers and the canonical table they all
produce are read together; the LoadData reader lives in :mod:`phenoprint.data.loaddata`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from phenoprint.errors import LayoutError, MetadataError

log = logging.getLogger(__name__)

#: The six Cell Painting stains of RxRx1, by channel number (``w1`` … ``w6`` in file names).
CHANNEL_NAMES: dict[int, str] = {
    1: "nuclei",
    2: "endoplasmic_reticulum",
    3: "actin",
    4: "nucleoli",
    5: "mitochondria",
    6: "golgi",
}
CHANNELS: tuple[int, ...] = tuple(CHANNEL_NAMES)
#: RxRx1's channels by name, in w1-w6 order: what a model trained on RxRx1 records as its input channels.
RXRX1_CHANNELS: tuple[str, ...] = tuple(CHANNEL_NAMES.values())
SITES: tuple[int, ...] = (1, 2)
CELL_TYPES: tuple[str, ...] = ("HUVEC", "RPE", "HEPG2", "U2OS")
WELL_TYPES: tuple[str, ...] = ("treatment", "positive_control", "negative_control")

#: Columns of the canonical site table, in order.
METADATA_COLUMNS: tuple[str, ...] = (
    "experiment",
    "cell_type",
    "plate",
    "well",
    "site",
    "well_type",
    "sirna_id",
    "dataset",
)
WELL_KEY: tuple[str, ...] = ("experiment", "plate", "well")
#: The siRNA's name (``s15652``, ``EMPTY`` …): a further column of the site table when the metadata gives it (RxRx1
#: v1.0 ``metadata.csv``; the Kaggle files carry ids only).
SIRNA_NAME = "sirna"

LayoutName = Literal["v1", "kaggle", "loaddata"]
#: The layouts a data root can be read in (``--layout`` choices; ``auto`` detects).
LAYOUTS: tuple[str, ...] = ("v1", "kaggle", "loaddata")
RxRx1Name = Literal["v1", "kaggle"]

#: A well name of a 384-well plate (rows A-P, columns 01-24), as a pattern other patterns embed.
WELL_NAME_PATTERN = r"[A-P](?:0[1-9]|1[0-9]|2[0-4])"
_WELL_RE = re.compile(rf"^{WELL_NAME_PATTERN}$")
#: Any plate's well name: one or two row letters (1536-well plates run to AF) and a two-digit column.
_ANY_WELL_RE = re.compile(r"^[A-Z]{1,2}\d{2}$")
_EXPERIMENT_RE = re.compile(r"^(?P<cell_type>[A-Za-z0-9]+)-(?P<number>\d+)$")
_IMAGE_NAME_RE = re.compile(r"^(?P<well>[A-P]\d\d)_s(?P<site>\d+)_w(?P<channel>\d+)\.png$")


class ChannelFile(NamedTuple):
    """Where one channel of one site is: a file, and the page of a multi-page TIFF (None: the whole file)."""

    path: Path
    page: int | None = None


@runtime_checkable
class Layout(Protocol):
    """How a data root keeps its metadata and images: what every reader of sites needs from it.

    Implementations: :class:`RxRx1Layout` (v1.0 and Kaggle) and :class:`phenoprint.data.loaddata.LoadDataLayout`.
    """

    @property
    def root(self) -> Path:
        """The folder a user points phenoprint at."""
        ...

    @property
    def name(self) -> str:
        """``v1``, ``kaggle`` or ``loaddata``."""
        ...

    @property
    def channels(self) -> tuple[str, ...]:
        """The channel names, in the order sites are stacked."""
        ...

    @property
    def reason(self) -> str:
        """Why detection chose this layout (shown to the user)."""
        ...

    def read_metadata(self) -> pd.DataFrame:
        """The canonical site table (:data:`METADATA_COLUMNS`, validated)."""
        ...

    def site_files(self, experiment: str, plate: int, well: str, site: int) -> tuple[ChannelFile, ...]:
        """One :class:`ChannelFile` per channel of :attr:`channels`, whether or not the files exist."""
        ...

    def describe(self) -> dict[str, object]:
        """A JSON-ready description (saved next to artifacts made from this root)."""
        ...


@dataclass(frozen=True)
class RxRx1Layout:
    """Where an RxRx1 data root keeps its metadata and images.

    Attributes:
        root: the folder a user points phenoprint at.
        name: ``"v1"`` (``metadata.csv`` + ``images/``) or ``"kaggle"`` (``train.csv`` … + ``train/``, ``test/``).
        reason: why detection chose it.
    """

    root: Path
    name: RxRx1Name
    reason: str = ""

    @property
    def channels(self) -> tuple[str, ...]:
        return RXRX1_CHANNELS

    def image_dirs(self) -> tuple[Path, ...]:
        """The folders that hold ``<experiment>/Plate<p>/`` trees, in search order."""
        if self.name == "v1":
            return (self.root / "images",)
        return (self.root / "train", self.root / "test")

    def site_path(self, experiment: str, plate: int, well: str, site: int, channel: int) -> Path:
        """Path of one channel image of one site (whether or not it exists)."""
        base = _experiment_dir(self, experiment)
        return base / f"Plate{int(plate)}" / f"{well}_s{int(site)}_w{int(channel)}.png"

    def site_files(self, experiment: str, plate: int, well: str, site: int) -> tuple[ChannelFile, ...]:
        return tuple(ChannelFile(self.site_path(experiment, plate, well, site, c)) for c in CHANNELS)

    def read_metadata(self) -> pd.DataFrame:
        frame = _read_v1(self.root) if self.name == "v1" else _read_kaggle(self.root)
        return canonicalize(frame, checks=check_rxrx1_values)

    def describe(self) -> dict[str, object]:
        return {"layout": self.name, "channels": list(self.channels)}


def detect_layout(root: str | Path, layout: str | None = None) -> Layout:
    """Tell which layout a folder holds (or read it as ``layout`` when given), saying why.

    Detection order: ``metadata.csv`` → RxRx1 v1.0; ``train.csv`` / ``test.csv`` → RxRx1 Kaggle; a CSV with
    ``FileName_<channel>`` columns (or a ``layout.toml``) → LoadData. A wrong guess is overridden with ``layout``
    (``--layout`` on the command line).

    Raises:
        LayoutError: the folder does not exist, holds none of the layouts, or not the one asked for.
    """
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(
            f"{root}: not a folder; expected a data root (RxRx1 v1.0 or Kaggle layout, or a folder with a "
            "CellProfiler LoadData CSV)"
        )
    if layout not in (None, "auto", *LAYOUTS):
        raise LayoutError(f"unknown layout {layout!r}; expected auto or one of {', '.join(LAYOUTS)}")
    from phenoprint.data.loaddata import find_loaddata

    if layout in (None, "auto"):
        if (root / "metadata.csv").is_file():
            return RxRx1Layout(root, "v1", "metadata.csv found: RxRx1 v1.0 layout")
        kaggle = [f"{split}.csv" for split in ("train", "test") if (root / f"{split}.csv").is_file()]
        if kaggle:
            return RxRx1Layout(root, "kaggle", f"{' and '.join(kaggle)} found: RxRx1 Kaggle layout")
        found = find_loaddata(root, required=False)
        if found is not None:
            return found
        raise LayoutError(
            f"{root}: no RxRx1 metadata found (nor a LoadData CSV); expected metadata.csv (RxRx1 v1.0 layout, "
            "images under images/), "
            "train.csv / test.csv with train_controls.csv / test_controls.csv (RxRx1 Kaggle layout), or a "
            "CellProfiler LoadData CSV with FileName_<channel> and PathName_<channel> columns (optionally with a "
            "layout.toml beside it)"
        )
    if layout == "v1":
        if not (root / "metadata.csv").is_file():
            raise LayoutError(f"{root}: --layout v1 but no metadata.csv in it")
        return RxRx1Layout(root, "v1", "asked for (--layout v1)")
    if layout == "kaggle":
        if not any((root / f"{split}.csv").is_file() for split in ("train", "test")):
            raise LayoutError(f"{root}: --layout kaggle but neither train.csv nor test.csv in it")
        return RxRx1Layout(root, "kaggle", "asked for (--layout kaggle)")
    found = find_loaddata(root, required=True)
    assert found is not None  # required=True raises instead
    return found


@lru_cache(maxsize=4096)
def _experiment_dir_cached(root: Path, name: RxRx1Name, experiment: str) -> Path:
    dirs = RxRx1Layout(root, name).image_dirs()
    for d in dirs:
        if (d / experiment).is_dir():
            return d / experiment
    return dirs[0] / experiment


def _experiment_dir(layout: RxRx1Layout, experiment: str) -> Path:
    path = _experiment_dir_cached(layout.root, layout.name, experiment)
    if not path.is_dir():  # the cache may predate a folder written since (e.g. by `phenoprint synth`)
        _experiment_dir_cached.cache_clear()
        path = _experiment_dir_cached(layout.root, layout.name, experiment)
    return path


def cell_type_of(experiment: str) -> str:
    """Cell type encoded in an RxRx1 experiment name (``"HEPG2-07"`` → ``"HEPG2"``)."""
    m = _EXPERIMENT_RE.match(experiment)
    if m is None:
        raise MetadataError(f"experiment name {experiment!r} is not of the form <CELLTYPE>-<NN>")
    return m.group("cell_type").upper()


def parse_image_name(name: str) -> tuple[str, int, int]:
    """Well, site and channel from an RxRx1 image file name (``"B02_s1_w3.png"`` → ``("B02", 1, 3)``).

    Raises:
        ValueError: the name is not ``<well>_s<site>_w<channel>.png``.
    """
    m = _IMAGE_NAME_RE.match(Path(name).name)
    if m is None:
        raise ValueError(
            f"{name!r} is not an RxRx1 image name; expected <well>_s<site>_w<channel>.png, e.g. B02_s1_w1.png"
        )
    return m.group("well"), int(m.group("site")), int(m.group("channel"))


def read_metadata(root: str | Path | Layout, layout: str | None = None) -> pd.DataFrame:
    """Read the metadata of a data root into one row per site.

    The layout is detected (:func:`detect_layout`) unless given. RxRx1 Kaggle rows are per well and are expanded
    to sites 1 and 2. Listed RxRx1 wells need not have images on disk (a subset of the release is still a valid
    root); :func:`phenoprint.data.load_site` says so when such a site is loaded.

    Returns:
        A frame with :data:`METADATA_COLUMNS`: ``experiment`` (str), ``cell_type`` (str), ``plate`` (int),
        ``well`` (``"B02"``), ``site`` (int), ``well_type`` (treatment/positive_control/negative_control),
        ``sirna_id`` (nullable Int64; RxRx1: Kaggle numbering, 0-1107 treatments, 1108-1137 positive controls,
        1138 untreated) and ``dataset`` (train/test), sorted by experiment, plate, well, site; then ``sirna``, the
        treatment's name (string, missing where unknown), when the metadata has it. RxRx1 roots are further held
        to RxRx1's values (plates 1-4, sites 1-2, four cell types, 384-well names).

    Raises:
        LayoutError: the folder is not a data root of a known layout.
        MetadataError: a metadata file lacks a column or holds an invalid value.
    """
    found = root if isinstance(root, Layout) else detect_layout(root, layout)
    frame = found.read_metadata()
    log.debug(
        "read %d sites of %d experiments from %s (%s layout)",
        len(frame),
        frame.experiment.nunique(),
        found.root,
        found.name,
    )
    return frame


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"well": str, "experiment": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{path}: not a readable CSV file ({exc})") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise MetadataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected at least {', '.join(required)}, "
            f"found {', '.join(map(str, frame.columns))}"
        )
    return frame


def _read_v1(root: Path) -> pd.DataFrame:
    frame = _read_csv(root / "metadata.csv", ("experiment", "plate", "well", "site", "well_type", "dataset"))
    if "sirna_id" not in frame.columns:
        raise MetadataError(f"{root / 'metadata.csv'}: missing column sirna_id (the integer siRNA label)")
    if "cell_type" not in frame.columns:
        frame["cell_type"] = frame["experiment"].map(cell_type_of)
    return frame


def _read_kaggle(root: Path) -> pd.DataFrame:
    parts = []
    for split in ("train", "test"):
        treatments = root / f"{split}.csv"
        controls = root / f"{split}_controls.csv"
        if treatments.is_file():
            t = _read_csv(treatments, ("experiment", "plate", "well"))
            t["well_type"] = "treatment"
            if "sirna" not in t.columns:  # the Kaggle test set hides treatment labels
                t["sirna"] = pd.NA
            t["dataset"] = split
            parts.append(t)
        if controls.is_file():
            c = _read_csv(controls, ("experiment", "plate", "well", "sirna", "well_type"))
            c["dataset"] = split
            parts.append(c)
        elif treatments.is_file():
            log.warning("%s has no %s: its control wells are unknown", treatments, controls.name)
    wells = pd.concat(parts, ignore_index=True).rename(columns={"sirna": "sirna_id"})
    wells["cell_type"] = wells["experiment"].map(cell_type_of)
    sites = pd.concat([wells.assign(site=s) for s in SITES], ignore_index=True)
    return sites


def canonicalize(
    frame: pd.DataFrame,
    well_pattern: str | None = None,
    well_help: str = "",
    checks: Callable[[pd.DataFrame], object] | None = None,
) -> pd.DataFrame:
    """Coerce types, validate values and order rows; the one place the canonical schema is enforced.

    Args:
        frame: the columns of :data:`METADATA_COLUMNS` (and optionally ``sirna``), of any layout.
        well_pattern: a regular expression every well name must match (default: any row letter(s) + number).
        well_help: what a valid well name is, for the error.
        checks: a layout's own value checks, run on the coerced table before the generic ones (RxRx1's ranges).
    """
    out = pd.DataFrame(
        {
            "experiment": frame["experiment"].astype(str),
            "cell_type": frame["cell_type"].astype(str).str.upper(),
            "plate": _as_int(frame["plate"], "plate"),
            "well": frame["well"].astype(str).str.strip().str.upper(),
            "site": _as_int(frame["site"], "site"),
            "well_type": frame["well_type"].astype(str).str.strip().str.lower(),
            "sirna_id": _as_nullable_int(frame["sirna_id"], "sirna_id"),
            "dataset": frame["dataset"].astype(str).str.strip().str.lower(),
        }
    )
    if SIRNA_NAME in frame.columns:  # v1.0 names; the Kaggle reader has turned its `sirna` ids into sirna_id
        out[SIRNA_NAME] = frame[SIRNA_NAME].astype("string").str.strip()
    if checks is not None:
        checks(out)
    pattern = well_pattern or _ANY_WELL_RE.pattern
    _check_values(out, "well", out["well"].str.match(pattern), well_help or "a well name like B02")
    _check_values(out, "plate", out["plate"] >= 1, "a plate number >= 1")
    _check_values(out, "site", out["site"] >= 1, "a site number >= 1")
    _check_values(out, "well_type", out["well_type"].isin(WELL_TYPES), " / ".join(WELL_TYPES))
    _check_values(out, "dataset", out["dataset"].isin(("train", "test")), "train or test")
    out = out.sort_values(["experiment", "plate", "well", "site"], kind="stable").reset_index(drop=True)
    dup = out.duplicated(["experiment", "plate", "well", "site"])
    if dup.any():
        first = out.loc[dup.idxmax()]
        raise MetadataError(
            f"site {first.experiment} plate {first.plate} {first.well} s{first.site} is listed {int(dup.sum()) + 1}+ "
            "times; each site must appear once"
        )
    return out


def check_rxrx1_values(out: pd.DataFrame) -> pd.DataFrame:
    """Hold a canonical table to what the RxRx1 release allows (its readers call this; other layouts do not)."""
    _check_values(
        out, "well", out["well"].str.match(_WELL_RE.pattern), "a well name like B02 (rows A-P, columns 01-24)"
    )
    _check_values(out, "plate", out["plate"].between(1, 4), "a plate number 1-4")
    _check_values(out, "site", out["site"].isin(SITES), "site 1 or 2")
    _check_values(out, "cell_type", out["cell_type"].isin(CELL_TYPES), " / ".join(CELL_TYPES))
    return out


def _as_int(column: pd.Series, name: str) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() | (values != np.floor(values))
    if bad.any():
        raise MetadataError(f"column {name}: {column[bad].iloc[0]!r} is not an integer")
    return values.astype(np.int64)


def _as_nullable_int(column: pd.Series, name: str) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce")
    bad = column.notna() & values.isna()
    if bad.any():
        raise MetadataError(f"column {name}: {column[bad].iloc[0]!r} is not an integer siRNA id")
    return values.astype("Int64")


def _check_values(frame: pd.DataFrame, column: str, ok: pd.Series, expected: str) -> None:
    ok = ok.fillna(False).astype(bool)
    if not ok.all():
        bad = frame.loc[~ok, column]
        raise MetadataError(
            f"column {column}: {bad.iloc[0]!r} (and {len(bad) - 1} other rows) is invalid; expected {expected}"
        )


def wells_of(metadata: pd.DataFrame) -> pd.DataFrame:
    """One row per well of a site table (the first site's row), keeping every per-well column."""
    return metadata.drop_duplicates(list(WELL_KEY)).drop(columns=["site"]).reset_index(drop=True)


def site_status(
    metadata: pd.DataFrame, root: str | Path | Layout, channels: tuple[int, ...] | None = None
) -> pd.Series:
    """For each site row, whether all its channel images exist on disk (a boolean Series).

    Useful before training on a partial download: the shared RxRx1 sample lists every well but ships
    images of only one.

    Args:
        channels: RxRx1 only: the channel numbers to check (default: every channel of the layout).
    """
    layout = root if isinstance(root, Layout) else detect_layout(root)
    keys = metadata[["experiment", "plate", "well", "site"]].itertuples(index=False)
    if isinstance(layout, RxRx1Layout):  # one path at a time: a partial download stops at its first missing file
        chosen = CHANNELS if channels is None else tuple(channels)
        present = [
            all(layout.site_path(r.experiment, r.plate, r.well, r.site, ch).is_file() for ch in chosen) for r in keys
        ]
    else:
        present = [all(f.path.is_file() for f in layout.site_files(*r)) for r in keys]
    return pd.Series(present, index=metadata.index, name="has_images", dtype=bool)
