"""The CellProfiler LoadData layout: CSVs of ``Metadata_*`` columns and a FileName_/PathName_ pair per channel.

This is how the JUMP consortium, the Cell Painting Gallery and most Broad-style screens list their images. A data
root is a folder holding the CSV(s) and optionally ``layout.toml``, whose ``[loaddata]`` table maps the columns
phenoprint needs (experiment, label, controls …) when the defaults of :class:`LoadDataSpec` do not fit.

Kept as one module although long: the spec, the column mapping and the errors that name a CSV's file, line and
column share one parse and its row bookkeeping.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenoprint.configs import config_from_json

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from phenoprint.data.layout import METADATA_COLUMNS, SIRNA_NAME, ChannelFile, canonicalize
from phenoprint.data.plate import parse_well, plate_geometry
from phenoprint.errors import ImageFormatError, LayoutError, MetadataError

log = logging.getLogger(__name__)

SPEC_FILE = "layout.toml"
FILE_PREFIX = "FileName_"
PATH_PREFIX = "PathName_"
#: Column-name prefixes of image columns that are not channels (CellProfiler's illumination functions).
NOT_CHANNELS = ("Illum",)
#: Label columns tried in order when the spec names none (JUMP genes, JUMP compounds, LINCS, generic).
LABEL_COLUMNS = ("Metadata_label", "Metadata_Symbol", "Metadata_JCP2022", "Metadata_pert_iname", "Metadata_Treatment")
CONTROL_COLUMNS = ("Metadata_control_type", "Metadata_pert_type", "Metadata_well_type")


@dataclass(frozen=True)
class LoadDataSpec:
    """How the columns of a LoadData CSV map onto phenoprint's site table (``[loaddata]`` of ``layout.toml``)."""

    csv: tuple[str, ...] = ()  # CSV files, relative to the root; default: every *.csv there with FileName_ columns
    experiment: str = "Metadata_Batch"  # the batch column (centering fits per batch); absent: each plate its own
    plate: str = "Metadata_Plate"  # plate name or number
    well: str = "Metadata_Well"  # well name (A01 …; A1 is read as A01)
    site: str = "Metadata_Site"  # site (field of view) number
    label: str | None = None  # treatment name column; default: the first of LABEL_COLUMNS present, else unlabelled
    label_id: str | None = None  # integer class id column; default: ids are the ranks of the sorted label names
    control: str | None = None  # control-type column; default: the first of CONTROL_COLUMNS present
    negative_controls: tuple[str, ...] = ("negcon", "negative_control", "negative")  # its negative-control values
    positive_controls: tuple[str, ...] = ("poscon", "positive_control", "positive")  # and positive (prefix match)
    cell_type: str = "Metadata_cell_type"  # absent: "unknown"
    plate_size: int | None = None  # 96, 384 or 1536; default: the smallest that holds every well name
    channels: tuple[str, ...] = ()  # channel names to read, in this order; default: every FileName_ column

    @classmethod
    def from_toml(cls, path: Path) -> LoadDataSpec:
        """Read the ``[loaddata]`` table of a TOML file (lists become tuples; unknown keys are refused)."""
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise LayoutError(f"{path}: not a readable TOML file ({exc})") from exc
        table = data.get("loaddata", {})
        if not isinstance(table, dict):
            raise LayoutError(f"{path}: [loaddata] must be a table of options")
        try:
            return config_from_json(cls, table)
        except (TypeError, ValueError) as exc:
            raise LayoutError(f"{path}: [loaddata]: {exc}") from exc


def channel_name(column: str) -> str:
    """The channel a ``FileName_`` column names: ``FileName_OrigDNA`` → ``DNA`` (CellProfiler's ``Orig`` prefix off)."""
    name = column[len(FILE_PREFIX) :]
    return name[4:] if name.startswith("Orig") and len(name) > 4 else name


def find_loaddata(root: Path, required: bool) -> LoadDataLayout | None:
    """The LoadData layout of ``root`` when it has a ``layout.toml`` or a CSV with ``FileName_`` columns.

    Raises:
        LayoutError: ``required`` and none is found, or the spec is unreadable.
    """
    spec_path = root / SPEC_FILE
    spec = LoadDataSpec.from_toml(spec_path) if spec_path.is_file() else LoadDataSpec()
    csvs = [root / c for c in spec.csv] if spec.csv else sorted(p for p in root.glob("*.csv") if _has_file_columns(p))
    if spec.csv:
        absent = [str(p) for p in csvs if not p.is_file()]
        if absent:
            raise LayoutError(f"{spec_path}: lists CSV file(s) that do not exist: {', '.join(absent)}")
    if not csvs:
        if required:
            raise LayoutError(
                f"{root}: no LoadData CSV found; expected a .csv with Metadata_Plate, Metadata_Well, Metadata_Site and "
                "a FileName_<channel> / PathName_<channel> pair per channel"
            )
        return None
    why = f"{', '.join(p.name for p in csvs)} with FileName_ columns" + (
        f" and {SPEC_FILE}" if spec_path.is_file() else ""
    )
    return LoadDataLayout(root, tuple(csvs), spec, f"{why}: CellProfiler LoadData layout")


def _has_file_columns(path: Path) -> bool:
    try:
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError):
        return False
    return any(h.startswith(FILE_PREFIX) for h in header)


class LoadDataLayout:
    """A data root listed by LoadData CSV(s); satisfies :class:`phenoprint.data.layout.Layout`.

    The CSVs are parsed once, on first use: every listed file is checked to exist then, so a wrong path is
    reported with its CSV, row and column before any work starts.
    """

    name = "loaddata"

    def __init__(self, root: Path, csvs: tuple[Path, ...], spec: LoadDataSpec, reason: str = "") -> None:
        self._root = Path(root)
        self.csvs = csvs
        self.spec = spec
        self._reason = reason
        self._parsed: tuple[pd.DataFrame, dict[tuple[str, int, str, int], tuple[ChannelFile, ...]]] | None = None
        self._channels: tuple[str, ...] | None = None
        self._columns: dict[str, str] = {}
        self._plate_names: dict[str, dict[int, str]] = {}
        self._dtypes: dict[int, tuple[np.dtype, Path]] = {}

    @property
    def root(self) -> Path:
        return self._root

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def channels(self) -> tuple[str, ...]:
        if self._channels is None:
            self._parse()
        assert self._channels is not None
        return self._channels

    def read_metadata(self) -> pd.DataFrame:
        return self._parse()[0].copy()

    def site_files(self, experiment: str, plate: int, well: str, site: int) -> tuple[ChannelFile, ...]:
        files = self._parse()[1]
        try:
            return files[(experiment, int(plate), well, int(site))]
        except KeyError:
            raise ImageFormatError(
                self.csvs[0], f"site {experiment} plate {plate} {well} s{site} is not listed in the LoadData CSV(s)"
            ) from None

    def describe(self) -> dict[str, Any]:
        self._parse()
        return {
            "layout": self.name,
            "csv": [p.name for p in self.csvs],
            "channels": list(self.channels),
            "columns": dict(self._columns),
            "plate_names": {e: {str(k): v for k, v in m.items()} for e, m in self._plate_names.items()},
            "spec": json_ready(dataclasses.asdict(self.spec)),
        }

    def check_plane_dtypes(self, planes: list[np.ndarray], files: tuple[ChannelFile, ...]) -> None:
        """Refuse a channel whose bit depth differs from the same channel's elsewhere (mixed 8- and 16-bit files).

        Raises:
            ImageFormatError: names the file, its channel column and the earlier file of the other depth.
        """
        for i, (plane, f) in enumerate(zip(planes, files, strict=True)):
            seen = self._dtypes.setdefault(i, (plane.dtype, f.path))
            if seen[0] != plane.dtype:
                name = self.channels[i]
                raise ImageFormatError(
                    f.path,
                    f"{plane.dtype.itemsize * 8}-bit, but channel {name} (column {self._columns[name]}) is "
                    f"{seen[0].itemsize * 8}-bit in {seen[1]}; all images of one channel must share one bit depth",
                )

    def __repr__(self) -> str:
        return f"LoadDataLayout({str(self._root)!r}, csv={[p.name for p in self.csvs]})"

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def _parse(self) -> tuple[pd.DataFrame, dict[tuple[str, int, str, int], tuple[ChannelFile, ...]]]:
        if self._parsed is None:
            frames = [_read_loaddata_csv(p) for p in self.csvs]
            self._parsed = self._build(frames)
        return self._parsed

    def _build(
        self, frames: list[pd.DataFrame]
    ) -> tuple[pd.DataFrame, dict[tuple[str, int, str, int], tuple[ChannelFile, ...]]]:
        spec = self.spec
        channels = self._find_channels(frames)
        raw = pd.concat(frames, ignore_index=True)
        for column in (spec.plate, spec.well, spec.site):
            if column not in raw.columns:
                missing_in = next(f.attrs["path"] for f in frames if column not in f.columns)
                raise MetadataError(
                    f"{missing_in}: missing column {column} (set it in {SPEC_FILE} if it has another name)"
                )
        raw["_row"] = np.concatenate([np.arange(2, len(f) + 2) for f in frames])  # the CSV line (header is 1)
        raw["_csv"] = np.concatenate([[f.attrs["path"]] * len(f) for f in frames])
        wells = [
            _normal_well(w, csv_name, row, spec.well)
            for w, csv_name, row in zip(raw[spec.well], raw["_csv"], raw["_row"], strict=True)
        ]
        try:
            geometry = plate_geometry(wells, spec.plate_size)
        except ValueError as exc:
            bad = str(exc).split()[1] if str(exc).startswith("well ") else None
            where = raw.loc[[w == bad for w in wells]].iloc[0] if bad else raw.iloc[0]
            raise MetadataError(f"{where['_csv']} line {where['_row']}, column {spec.well}: {exc}") from None
        experiment = raw[spec.experiment].astype(str) if spec.experiment in raw.columns else raw[spec.plate].astype(str)
        if spec.experiment not in raw.columns:
            log.info("no %s column: each plate is its own experiment (batch)", spec.experiment)
        plates = self._plate_numbers(experiment, raw[spec.plate])
        label = spec.label or next((c for c in LABEL_COLUMNS if c in raw.columns), None)
        control = spec.control or next((c for c in CONTROL_COLUMNS if c in raw.columns), None)
        names = raw[label].astype("string").str.strip().replace("", pd.NA) if label in raw.columns else None
        if label is not None and label not in raw.columns:
            raise MetadataError(f"{self.csvs[0]}: no label column {label} ({SPEC_FILE} names it)")
        ids = self._label_ids(raw, names)
        frame = pd.DataFrame(
            {
                "experiment": experiment,
                "cell_type": raw[spec.cell_type].astype(str) if spec.cell_type in raw.columns else "unknown",
                "plate": plates,
                "well": wells,
                "site": raw[spec.site],
                "well_type": self._well_types(raw, control),
                "sirna_id": ids,
                "dataset": np.where(ids.isna(), "test", "train"),
            }
        )
        if names is not None:
            frame[SIRNA_NAME] = names
        frame["_i"] = np.arange(len(frame))
        self._columns = {
            "experiment": spec.experiment,
            "label": str(label),
            "control": str(control),
            **{ch: col for ch, col in channels.items()},
        }
        table = canonicalize(frame.drop(columns="_i"), well_help=f"a well of a {geometry.describe()}")
        keyed = frame.assign(site=pd.to_numeric(frame["site"], errors="coerce"))
        order = keyed.sort_values(["experiment", "plate", "well", "site"], kind="stable")["_i"].to_numpy()
        files = self._files(raw.iloc[order].reset_index(drop=True), channels)
        keys = list(table[["experiment", "plate", "well", "site"]].itertuples(index=False, name=None))
        self._channels = tuple(channels)
        log.info(
            "LoadData: %d sites of %d plates (%s), channels %s",
            len(table),
            table.groupby(["experiment", "plate"]).ngroups,
            geometry.describe(),
            ", ".join(channels),
        )
        return table[[*METADATA_COLUMNS, *([SIRNA_NAME] if SIRNA_NAME in table.columns else [])]], dict(
            zip(keys, files, strict=True)
        )

    def _find_channels(self, frames: list[pd.DataFrame]) -> dict[str, str]:
        """Channel name → its FileName_ column, checking every CSV has the same channels with both columns."""
        found: dict[str, str] | None = None
        for f in frames:
            path = f.attrs["path"]
            file_cols = [c for c in f.columns if c.startswith(FILE_PREFIX)]
            for c in file_cols:
                partner = PATH_PREFIX + c[len(FILE_PREFIX) :]
                if partner not in f.columns:
                    raise MetadataError(f"{path}: column {c} has no {partner} beside it; each channel needs both")
            for c in (c for c in f.columns if c.startswith(PATH_PREFIX)):
                partner = FILE_PREFIX + c[len(PATH_PREFIX) :]
                if partner not in f.columns:
                    raise MetadataError(f"{path}: column {c} has no {partner} beside it; each channel needs both")
            chans = {channel_name(c): c for c in file_cols if not c[len(FILE_PREFIX) :].startswith(NOT_CHANNELS)}
            if not chans:
                raise MetadataError(f"{path}: no FileName_<channel> column; a LoadData CSV lists one per channel")
            if found is not None and list(chans) != list(found):
                raise MetadataError(
                    f"{path}: channels {', '.join(chans)} differ from {', '.join(found)} of {frames[0].attrs['path']}"
                )
            found = chans
        assert found is not None
        if self.spec.channels:
            unknown = [c for c in self.spec.channels if c not in found]
            if unknown:
                raise MetadataError(
                    f"{SPEC_FILE}: channel(s) {', '.join(unknown)} not among the CSV's {', '.join(found)}"
                )
            found = {c: found[c] for c in self.spec.channels}
        return found

    def _plate_numbers(self, experiment: pd.Series, plate: pd.Series) -> pd.Series:
        """Plates as numbers 1 … n within each experiment (sorted by name), unless the column is numeric already."""
        numeric = pd.to_numeric(plate, errors="coerce")
        if numeric.notna().all() and (numeric % 1 == 0).all() and (numeric >= 1).all():
            return numeric.astype(np.int64)
        names = plate.astype(str)
        out = pd.Series(0, index=plate.index, dtype=np.int64)
        self._plate_names = {}
        for exp in sorted(experiment.unique()):
            mask = experiment == exp
            ordered = sorted(names[mask].unique())
            self._plate_names[str(exp)] = {i + 1: n for i, n in enumerate(ordered)}
            out[mask] = names[mask].map({n: i + 1 for i, n in enumerate(ordered)})
        return out

    def _label_ids(self, raw: pd.DataFrame, names: pd.Series | None) -> pd.Series:
        if self.spec.label_id is not None:
            if self.spec.label_id not in raw.columns:
                raise MetadataError(f"{self.csvs[0]}: no label id column {self.spec.label_id} ({SPEC_FILE} names it)")
            return raw[self.spec.label_id]
        if names is None:
            return pd.Series(pd.NA, index=raw.index, dtype="Int64")
        ranks = {n: i for i, n in enumerate(sorted(names.dropna().unique()))}
        return names.map(ranks).astype("Int64")

    def _well_types(self, raw: pd.DataFrame, control: str | None) -> pd.Series:
        if control is None or control not in raw.columns:
            return pd.Series("treatment", index=raw.index)
        values = raw[control].astype("string").str.strip().str.lower().fillna("")
        negative = values.isin([v.lower() for v in self.spec.negative_controls])
        positive = values.str.startswith(tuple(v.lower() for v in self.spec.positive_controls))
        return pd.Series(
            np.select([negative, positive], ["negative_control", "positive_control"], "treatment"), index=raw.index
        )

    def _files(self, raw: pd.DataFrame, channels: dict[str, str]) -> list[tuple[ChannelFile, ...]]:
        """Each row's channel files, refusing empty cells and paths that do not exist (named by CSV, line, column)."""
        paths = {}
        for name, column in channels.items():
            folder_col = PATH_PREFIX + column[len(FILE_PREFIX) :]
            file_names = raw[column]
            empty = file_names.isna() | (file_names.astype(str).str.strip() == "")
            if empty.any():
                r = raw[empty].iloc[0]
                raise MetadataError(
                    f"{r['_csv']} line {r['_row']}, column {column}: empty; channel {name} is missing for site "
                    f"{r[self.spec.plate]} {r[self.spec.well]} s{r[self.spec.site]} (every site needs every channel)"
                )
            folders = raw[folder_col].fillna("").astype(str)
            paths[name] = [
                _resolve(Path(csv_path).parent, folder, str(file))
                for csv_path, folder, file in zip(raw["_csv"], folders, file_names, strict=True)
            ]
        for name, column in channels.items():
            exists = {p: p.is_file() for p in set(paths[name])}
            missing = [i for i, p in enumerate(paths[name]) if not exists[p]]
            if missing:
                r = raw.iloc[missing[0]]
                raise LayoutError(
                    f"{r['_csv']} line {r['_row']}, columns {PATH_PREFIX}{column[len(FILE_PREFIX) :]} / {column}: "
                    f"{paths[name][missing[0]]} does not exist ({len(missing)} such file(s) in this column); "
                    "PathName_ is a folder, absolute or relative to the CSV's folder"
                )
        out = []
        names = list(channels)
        for i in range(len(raw)):
            site_paths = [paths[n][i] for n in names]
            if len(names) > 1 and len(set(site_paths)) == 1:  # one multi-page TIFF per site: page k = channel k
                out.append(tuple(ChannelFile(site_paths[0], k) for k in range(len(names))))
            else:
                out.append(tuple(ChannelFile(p) for p in site_paths))
        return out


def _resolve(base: Path, folder: str, file: str) -> Path:
    folder_path = Path(folder.strip()) if folder.strip() else Path()
    path = folder_path / file.strip()
    return path if path.is_absolute() else base / path


def _normal_well(well: object, csv_name: str, row: int, column: str) -> str:
    """A well name with a two-digit column (``A1`` → ``A01``)."""
    try:
        r, c = parse_well(str(well).strip().upper())
    except ValueError as exc:
        raise MetadataError(f"{csv_name} line {row}, column {column}: {exc}") from None
    from phenoprint.data.plate import row_name

    return f"{row_name(r)}{c + 1:02d}"


def _read_loaddata_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise MetadataError(f"{path}: not a readable CSV file ({exc})") from exc
    frame.attrs["path"] = str(path)
    return frame


def json_ready(value: Any) -> Any:
    """Tuples as lists, recursively (for the JSON description)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [json_ready(v) for v in value]
    return value
