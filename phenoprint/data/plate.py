"""Plate geometry (96/384/1536 wells), the 308 used wells of RxRx1, and treatment groups learned from labels."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from phenoprint.data.layout import wells_of
from phenoprint.errors import MetadataError

log = logging.getLogger(__name__)

#: Rows and columns of a 384-well plate (16 x 24).
PLATE_ROWS_384 = "ABCDEFGHIJKLMNOP"
PLATE_COLUMNS_384 = tuple(range(1, 25))
#: RxRx1 leaves the outer ring empty: rows B-O, columns 02-23 are used (14 x 22 = 308 wells).
USED_ROWS = PLATE_ROWS_384[1:-1]
USED_COLUMNS = PLATE_COLUMNS_384[1:-1]
USED_WELLS: tuple[str, ...] = tuple(f"{r}{c:02d}" for r in USED_ROWS for c in USED_COLUMNS)


@dataclass(frozen=True)
class PlateGeometry:
    """A plate format: its rows and columns (96: 8 x 12, 384: 16 x 24, 1536: 32 x 48)."""

    n_rows: int
    n_columns: int

    @property
    def n_wells(self) -> int:
        return self.n_rows * self.n_columns

    @property
    def rows(self) -> tuple[str, ...]:
        """Row names: A to Z, then AA, AB and on (1536-well plates run to AF)."""
        return tuple(row_name(i) for i in range(self.n_rows))

    def wells(self) -> tuple[str, ...]:
        """Every well name, row by row (``A01``, ``A02`` ...)."""
        return tuple(f"{r}{c:02d}" for r in self.rows for c in range(1, self.n_columns + 1))

    def contains(self, well: str) -> bool:
        """Whether a well name lies on this plate."""
        try:
            row, col = parse_well(well)
        except ValueError:
            return False
        return row < self.n_rows and col < self.n_columns

    def describe(self) -> str:
        return f"{self.n_wells}-well plate (rows A-{row_name(self.n_rows - 1)}, columns 01-{self.n_columns:02d})"


#: The standard plate formats, smallest first.
PLATE_FORMATS: dict[int, PlateGeometry] = {
    96: PlateGeometry(8, 12),
    384: PlateGeometry(16, 24),
    1536: PlateGeometry(32, 48),
}


def row_name(index: int) -> str:
    """Name of the zero-based row ``index`` (0: A, 25: Z, 26: AA)."""
    return chr(ord("A") + index) if index < 26 else "A" + chr(ord("A") + index - 26)


def parse_well(well: str) -> tuple[int, int]:
    """Zero-based (row, column) of any plate's well name (``"B02"``: ``(1, 1)``, ``"AF48"``: ``(31, 47)``).

    Raises:
        ValueError: not one or two row letters followed by a column number.
    """
    letters = well.rstrip("0123456789")
    digits = well[len(letters) :]
    if not digits or not letters.isalpha() or not letters.isupper() or len(letters) > 2 or int(digits) < 1:
        raise ValueError(f"{well!r} is not a well name; expected row letter(s) and a column number, e.g. B02 or AF48")
    if len(letters) == 2 and letters[0] != "A":
        raise ValueError(f"{well!r}: rows after Z are AA-AF (1536-well plates)")
    row = ord(letters[-1]) - ord("A") + (26 if len(letters) == 2 else 0)
    return row, int(digits) - 1


def plate_geometry(wells: Sequence[str], plate_size: int | None = None) -> PlateGeometry:
    """The plate format of these well names: ``plate_size`` when given, else the smallest standard one that holds
    every well (a plate whose wells all lie in A01-H12 reads as 96-well).

    Raises:
        ValueError: an unknown ``plate_size``, a malformed name, or a well outside the plate (or outside 1536).
    """
    if plate_size is not None and plate_size not in PLATE_FORMATS:
        raise ValueError(f"plate size must be one of {', '.join(map(str, PLATE_FORMATS))}, got {plate_size}")
    positions = [parse_well(w) for w in wells]
    max_row = max((r for r, _ in positions), default=0)
    max_col = max((c for _, c in positions), default=0)
    if plate_size is not None:
        geometry = PLATE_FORMATS[plate_size]
    else:
        fits = [g for g in PLATE_FORMATS.values() if max_row < g.n_rows and max_col < g.n_columns]
        geometry = fits[0] if fits else PLATE_FORMATS[1536]
    outside = [w for w, (r, c) in zip(wells, positions, strict=True) if r >= geometry.n_rows or c >= geometry.n_columns]
    if outside:
        raise ValueError(f"well {outside[0]} lies outside a {geometry.describe()}")
    return geometry


def well_position(well: str) -> tuple[int, int]:
    """Zero-based (row, column) of a well on the 384-well grid (``"B02"`` → ``(1, 1)``)."""
    return PLATE_ROWS_384.index(well[0]), int(well[1:]) - 1


def edge_distance(well: str) -> int:
    """Wells between this one and the outer ring of used wells (0 for B/O rows and 02/23 columns)."""
    row, col = well_position(well)
    return min(row - 1, len(USED_ROWS) - row, col - 1, len(USED_COLUMNS) - col)


@dataclass(frozen=True)
class PlateGroups:
    """Which treatment siRNAs share plates, learned from labelled metadata.

    Attributes:
        groups: group id → sorted siRNA ids of the treatments in that group.
        plates: one row per labelled (experiment, plate): ``group`` (best-matching group), ``n_treatments``,
            ``n_matching`` (treatments of that group on the plate) and ``agreement`` (their fraction).
        rotations: experiment → cyclic shift k such that plate p holds group ``order[(p - 1 + k) % G]``,
            or None when the experiment's plates are not a cyclic rotation of ``order``.
        order: the reference group order (that of the first labelled experiment, plates 1…G).
        disagreements: the rows of ``plates`` that do not match the majority design (a plate with
            treatments of other groups, or a group used twice in one experiment).
    """

    groups: dict[int, tuple[int, ...]]
    plates: pd.DataFrame
    rotations: dict[str, int | None]
    order: tuple[int, ...]
    disagreements: pd.DataFrame = field(repr=False)

    def group_of(self, sirna_id: int) -> int | None:
        """The group of a treatment siRNA, or None for controls and unknown ids."""
        return _sirna_to_group(self.groups).get(int(sirna_id))

    def rotation_counts(self) -> dict[str, int]:
        """How many experiments use each cyclic rotation (``"none"`` for non-cyclic ones)."""
        counts: dict[str, int] = {}
        for k in self.rotations.values():
            key = "none" if k is None else str(k)
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable form (stored next to indexes; read back with :meth:`from_json`)."""
        return {
            "groups": {str(g): list(m) for g, m in self.groups.items()},
            "order": list(self.order),
            "rotations": self.rotations,
            "plates": json.loads(self.plates.to_json(orient="records")),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlateGroups:
        """Rebuild from :meth:`to_json` output."""
        plates = pd.DataFrame(data["plates"], columns=list(_PLATE_COLUMNS))
        return cls(
            groups={int(g): tuple(int(s) for s in m) for g, m in data["groups"].items()},
            plates=plates,
            rotations={str(k): (None if v is None else int(v)) for k, v in data["rotations"].items()},
            order=tuple(int(g) for g in data["order"]),
            disagreements=_disagreements(plates),
        )


_PLATE_COLUMNS = ("experiment", "plate", "group", "n_treatments", "n_matching", "agreement", "group_repeated")


def _sirna_to_group(groups: dict[int, tuple[int, ...]]) -> dict[int, int]:
    return {s: g for g, members in groups.items() for s in members}


def infer_plate_groups(metadata: pd.DataFrame) -> PlateGroups:
    """Learn the treatment groups of the plate design from labelled metadata.

    Two treatment siRNAs belong to one group when they share a plate in more than half of the experiments
    that hold both, so a minority of disagreeing plates cannot merge or split groups. Each labelled plate
    is then matched to the group it holds most of.

    Args:
        metadata: a site or well table with ``experiment``, ``plate``, ``well_type`` and ``sirna_id``
            (rows without a label are ignored).

    Raises:
        MetadataError: no labelled treatment wells.
    """
    wells = wells_of(metadata) if "site" in metadata.columns else metadata
    t = wells[(wells.well_type == "treatment") & wells.sirna_id.notna()]
    if t.empty:
        raise MetadataError("no labelled treatment wells: plate groups can only be learned from labelled metadata")
    sirnas, s_idx = np.unique(t.sirna_id.to_numpy(dtype=np.int64), return_inverse=True)
    plate_keys = pd.MultiIndex.from_frame(t[["experiment", "plate"]].astype({"plate": np.int64}))
    p_codes, p_uniques = pd.factorize(plate_keys)
    exp_codes, _ = pd.factorize(t.experiment)
    ones = np.ones(len(t), dtype=np.int32)
    on_plate = coo_matrix((ones, (s_idx, p_codes)), shape=(len(sirnas), len(p_uniques))).tocsr()
    on_plate.data[:] = 1
    in_exp = coo_matrix((ones, (s_idx, exp_codes)), shape=(len(sirnas), exp_codes.max() + 1)).tocsr()
    in_exp.data[:] = 1
    shared_plates = (on_plate @ on_plate.T).toarray()
    shared_exps = (in_exp @ in_exp.T).toarray()
    same = shared_plates * 2 > shared_exps
    n_groups, labels = connected_components(same, directed=False)

    plates = _match_plates(t, sirnas, labels, plate_keys)
    first_exp = sorted(plates.experiment.unique())[0]
    first = plates[plates.experiment == first_exp].sort_values("plate")
    order = tuple(int(g) for g in first.group)
    # renumber groups so the first experiment reads 0, 1, 2, 3 on plates 1-4 (others follow by smallest siRNA)
    rest = sorted(set(range(n_groups)) - set(order), key=lambda g: sirnas[labels == g].min())
    renumber = {old: new for new, old in enumerate(list(dict.fromkeys(order)) + rest)}
    labels = np.array([renumber[g] for g in labels])
    plates["group"] = plates["group"].map(renumber)
    order = tuple(renumber[g] for g in order)
    groups = {g: tuple(int(s) for s in sirnas[labels == g]) for g in range(n_groups)}
    rotations = {
        exp: _rotation(sub.sort_values("plate").group.tolist(), order) for exp, sub in plates.groupby("experiment")
    }
    result = PlateGroups(groups, plates, rotations, order, _disagreements(plates))
    sizes = sorted({len(m) for m in groups.values()})
    log.info(
        "plate layout learned from the labels: the treatments form %d groups of %s siRNAs and each plate holds one "
        "group (checked on %d plates of %d experiments; %d do not fit)",
        n_groups,
        " or ".join(map(str, sizes)),
        len(plates),
        plates.experiment.nunique(),
        len(result.disagreements),
    )
    log.debug("plate groups: which group plate 1 starts with, per experiment: %s", result.rotation_counts())
    return result


def _match_plates(t: pd.DataFrame, sirnas: np.ndarray, labels: np.ndarray, plate_keys: pd.MultiIndex) -> pd.DataFrame:
    group_of = dict(zip(sirnas.tolist(), labels.tolist(), strict=True))
    frame = pd.DataFrame(
        {
            "experiment": plate_keys.get_level_values(0),
            "plate": plate_keys.get_level_values(1),
            "group": [group_of[int(s)] for s in t.sirna_id],
        }
    )
    counts = frame.groupby(["experiment", "plate", "group"]).size().rename("n").reset_index()
    best = counts.sort_values(["experiment", "plate", "n"], ascending=[True, True, False]).drop_duplicates(
        ["experiment", "plate"]
    )
    totals = frame.groupby(["experiment", "plate"]).size().rename("n_treatments").reset_index()
    plates = best.merge(totals, on=["experiment", "plate"]).rename(columns={"n": "n_matching"})
    plates["agreement"] = plates.n_matching / plates.n_treatments
    plates["group_repeated"] = plates.duplicated(["experiment", "group"], keep=False)
    return plates[list(_PLATE_COLUMNS)].reset_index(drop=True)


def _rotation(groups_on_plates: list[int], order: tuple[int, ...]) -> int | None:
    n = len(order)
    if len(groups_on_plates) != n:
        return None
    for k in range(n):
        if all(groups_on_plates[p] == order[(p + k) % n] for p in range(n)):
            return k
    return None


def _disagreements(plates: pd.DataFrame) -> pd.DataFrame:
    bad = (plates.agreement < 1.0) | plates.group_repeated
    return plates[bad].reset_index(drop=True)
