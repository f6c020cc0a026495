"""Read RxRx1 metadata in either published layout (v1.0 or Kaggle) into one canonical site table."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

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

LayoutName = Literal["v1", "kaggle"]

#: A well name of a 384-well plate (rows A-P, columns 01-24), as a pattern other patterns embed.
WELL_NAME_PATTERN = r"[A-P](?:0[1-9]|1[0-9]|2[0-4])"
_WELL_RE = re.compile(rf"^{WELL_NAME_PATTERN}$")
_EXPERIMENT_RE = re.compile(r"^(?P<cell_type>[A-Za-z0-9]+)-(?P<number>\d+)$")
_IMAGE_NAME_RE = re.compile(r"^(?P<well>[A-P]\d\d)_s(?P<site>\d+)_w(?P<channel>\d+)\.png$")


@dataclass(frozen=True)
class Layout:
    """Where a data root keeps its metadata and images.

    Attributes:
        root: the folder a user points phenoprint at.
        name: ``"v1"`` (``metadata.csv`` + ``images/``) or ``"kaggle"`` (``train.csv`` … + ``train/``, ``test/``).
    """

    root: Path
    name: LayoutName

    def image_dirs(self) -> tuple[Path, ...]:
        """The folders that hold ``<experiment>/Plate<p>/`` trees, in search order."""
        if self.name == "v1":
            return (self.root / "images",)
        return (self.root / "train", self.root / "test")

    def site_path(self, experiment: str, plate: int, well: str, site: int, channel: int) -> Path:
        """Path of one channel image of one site (whether or not it exists)."""
        base = _experiment_dir(self, experiment)
        return base / f"Plate{int(plate)}" / f"{well}_s{int(site)}_w{int(channel)}.png"


def detect_layout(root: str | Path) -> Layout:
    """Tell which published RxRx1 layout a folder holds.

    Raises:
        LayoutError: the folder does not exist or holds neither layout's metadata files.
    """
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: not a folder; expected an RxRx1 data root (v1.0 or Kaggle layout)")
    if (root / "metadata.csv").is_file():
        return Layout(root, "v1")
    if any((root / f"{split}.csv").is_file() for split in ("train", "test")):
        return Layout(root, "kaggle")
    raise LayoutError(
        f"{root}: no RxRx1 metadata found; expected either metadata.csv (v1.0 layout, images under images/) "
        "or train.csv / test.csv with train_controls.csv / test_controls.csv (Kaggle layout)"
    )


@lru_cache(maxsize=4096)
def _experiment_dir_cached(root: Path, name: LayoutName, experiment: str) -> Path:
    dirs = Layout(root, name).image_dirs()
    for d in dirs:
        if (d / experiment).is_dir():
            return d / experiment
    return dirs[0] / experiment


def _experiment_dir(layout: Layout, experiment: str) -> Path:
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


def read_metadata(root: str | Path) -> pd.DataFrame:
    """Read the metadata of an RxRx1 data root into one row per site.

    Both published layouts are detected automatically. Kaggle rows are per well and are expanded to
    sites 1 and 2. Listed wells need not have images on disk (a subset of the release is still a valid
    root); :func:`phenoprint.data.load_site` says so when such a site is loaded.

    Returns:
        A frame with :data:`METADATA_COLUMNS`: ``experiment`` (str), ``cell_type`` (HUVEC/RPE/HEPG2/U2OS),
        ``plate`` (int 1-4), ``well`` (``"B02"``), ``site`` (1|2), ``well_type``
        (treatment/positive_control/negative_control), ``sirna_id`` (nullable Int64, Kaggle numbering:
        0-1107 treatments, 1108-1137 positive controls, 1138 untreated) and ``dataset`` (train/test),
        sorted by experiment, plate, well, site; then ``sirna``, the siRNA's name (string, missing where
        unknown), when the metadata has it (v1.0 layout).

    Raises:
        LayoutError: the folder is not an RxRx1 root.
        MetadataError: a metadata file lacks a column or holds an invalid value.
    """
    layout = detect_layout(root)
    frame = _read_v1(layout.root) if layout.name == "v1" else _read_kaggle(layout.root)
    frame = _canonicalize(frame)
    log.debug(
        "read %d sites of %d experiments from %s (%s layout)",
        len(frame),
        frame.experiment.nunique(),
        layout.root,
        layout.name,
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


def _canonicalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce types, validate values and order rows; the one place the canonical schema is enforced."""
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
    _check_values(
        out, "well", out["well"].str.match(_WELL_RE.pattern), "a well name like B02 (rows A-P, columns 01-24)"
    )
    _check_values(out, "plate", out["plate"].between(1, 4), "a plate number 1-4")
    _check_values(out, "site", out["site"].isin(SITES), "site 1 or 2")
    _check_values(out, "well_type", out["well_type"].isin(WELL_TYPES), " / ".join(WELL_TYPES))
    _check_values(out, "cell_type", out["cell_type"].isin(CELL_TYPES), " / ".join(CELL_TYPES))
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


def site_status(metadata: pd.DataFrame, root: str | Path, channels: tuple[int, ...] = CHANNELS) -> pd.Series:
    """For each site row, whether all its channel images exist on disk (a boolean Series).

    Useful before training on a partial download: the shared RxRx1 sample lists every well but ships
    images of only one.
    """
    layout = detect_layout(root)
    present = [
        all(layout.site_path(r.experiment, r.plate, r.well, r.site, ch).is_file() for ch in channels)
        for r in metadata[["experiment", "plate", "well", "site"]].itertuples(index=False)
    ]
    return pd.Series(present, index=metadata.index, name="has_images", dtype=bool)
