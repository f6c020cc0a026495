"""The synthetic RxRx1 design: presets, experiments, plate maps and the v1.0 metadata table."""

from __future__ import annotations

import hashlib
import logging
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenoprint.configs import config_from_json, config_to_json
from phenoprint.data.layout import CELL_TYPES, SITES, cell_type_of
from phenoprint.data.plate import USED_WELLS
from phenoprint.errors import MetadataError

log = logging.getLogger(__name__)

#: Plates per experiment, and so treatment groups per design (RxRx1: 4).
PLATES = 4
#: Where RxRx1 puts the untreated well on every plate.
UNTREATED_WELL = "B02"
#: Columns of the v1.0 ``metadata.csv``, in the release's order.
V1_COLUMNS: tuple[str, ...] = (
    "site_id",
    "well_id",
    "cell_type",
    "dataset",
    "experiment",
    "plate",
    "well",
    "site",
    "well_type",
    "sirna",
    "sirna_id",
)
#: Columns of a well table (:func:`build_design`).
WELL_COLUMNS: tuple[str, ...] = (
    "experiment",
    "cell_type",
    "dataset",
    "plate",
    "well",
    "well_type",
    "sirna_id",
    "sirna",
)
#: Image sizes the generator accepts (a site must hold a few cells; 2048 px is 4x the release's).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 2048


@dataclass(frozen=True)
class CellTypePlan:
    """How many experiments of one cell type a design holds."""

    cell_type: str  # HUVEC / RPE / HEPG2 / U2OS
    n_experiments: int  # experiments <CELLTYPE>-01 … -NN
    n_train: int  # the first n_train experiments are dataset "train", the rest "test" (as in the release)


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides the bytes of a synthetic data root; saved resolved in ``synth.json``."""

    preset: str  # the preset this config came from ("custom" when built by hand)
    plans: tuple[CellTypePlan, ...]  # experiments per cell type, in this order (ignored with layout_from)
    group_size: int  # treatment siRNAs per plate; 4 x group_size treatments in all (ignored with layout_from)
    n_positive_controls: int  # positive-control siRNAs, every one on every plate (ignored with layout_from)
    image_size: int  # pixels per side of each channel PNG (the release: 512)
    sites_per_well: int = 2  # imaged sites per well (the release: 2)
    seed: int = 0  # root of every random stream (numpy SeedSequence entropy)
    batch_effects: bool = True  # False renders the oracle twin: same wells, cells and biology, no batch effects
    layout_from: str | None = None  # a Kaggle train.csv / v1.0 metadata.csv whose plate maps are copied
    untreated_only: bool = False  # render only the untreated wells (calibration and benchmarks)

    def __post_init__(self) -> None:
        if not self.plans:
            raise ValueError("a design needs at least one cell type plan")
        for plan in self.plans:
            if plan.cell_type not in CELL_TYPES:
                raise ValueError(f"cell type {plan.cell_type!r} is not one of {', '.join(CELL_TYPES)}")
            if not 1 <= plan.n_experiments <= 99 or not 0 <= plan.n_train <= plan.n_experiments:
                raise ValueError(
                    f"{plan.cell_type}: need 1-99 experiments and 0 <= n_train <= n_experiments, "
                    f"got {plan.n_experiments} experiments, {plan.n_train} train"
                )
        if len({p.cell_type for p in self.plans}) != len(self.plans):
            raise ValueError("each cell type may appear in only one plan")
        if self.group_size < 1 or self.n_positive_controls < 0:
            raise ValueError(
                f"group_size must be >= 1 and n_positive_controls >= 0, got {self.group_size}, "
                f"{self.n_positive_controls}"
            )
        if 1 + self.n_positive_controls + self.group_size > len(USED_WELLS):
            raise ValueError(
                f"a plate holds at most {len(USED_WELLS)} wells; 1 untreated + {self.n_positive_controls} controls "
                f"+ {self.group_size} treatments do not fit"
            )
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image size must be {MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE} px (the release: 512), got {self.image_size}"
            )
        if self.sites_per_well not in (1, len(SITES)):
            raise ValueError(f"sites per well must be 1 or {len(SITES)}, got {self.sites_per_well}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be a non-negative integer below 2**63, got {self.seed}")

    @property
    def n_treatments(self) -> int:
        """Treatment siRNAs in the design (ids 0 … n_treatments - 1)."""
        return PLATES * self.group_size

    @property
    def untreated_id(self) -> int:
        """siRNA id of the untreated well (1138 in the release)."""
        return self.n_treatments + self.n_positive_controls

    def to_json(self) -> dict[str, Any]:
        """The resolved config as JSON-serializable data (read back with :meth:`from_json`)."""
        return config_to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SynthConfig:
        """Rebuild a config written by :meth:`to_json`."""
        return config_from_json(cls, data)


#: The presets. ``full`` has the release's counts; ``tiny`` (tests, seconds) and ``demo`` (the CPU demo: enough
#: experiments per cell type for leave-experiment-out evaluation, about 2,000 sites) scale the same design down.
PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig(
        preset="tiny",
        plans=(CellTypePlan("HUVEC", 2, 1), CellTypePlan("RPE", 2, 1)),
        group_size=4,
        n_positive_controls=3,
        image_size=64,
    ),
    "demo": SynthConfig(
        preset="demo",
        plans=(
            CellTypePlan("HUVEC", 4, 3),
            CellTypePlan("RPE", 3, 2),
            CellTypePlan("HEPG2", 3, 2),
            CellTypePlan("U2OS", 3, 2),
        ),
        group_size=11,
        n_positive_controls=8,
        image_size=128,
    ),
    "full": SynthConfig(
        preset="full",
        plans=(
            CellTypePlan("HUVEC", 24, 16),
            CellTypePlan("RPE", 11, 7),
            CellTypePlan("HEPG2", 11, 7),
            CellTypePlan("U2OS", 5, 3),
        ),
        group_size=277,
        n_positive_controls=30,
        image_size=512,
    ),
}


def preset_config(name: str, **overrides: Any) -> SynthConfig:
    """The config of a preset, with some fields replaced (``seed``, ``image_size``, ``batch_effects`` …).

    Raises:
        ValueError: unknown preset, or an override the config refuses.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[name], **given)


def stream(seed: int, *keys: str | int) -> np.random.Generator:
    """An independent random stream for one purpose, keyed by names and numbers.

    Every random draw of the generator comes from a stream keyed by what it is for (``"positions"``,
    an experiment, a plate, a well, a site), so a site's pixels depend on nothing but the seed and its own
    keys: not on the worker that renders it, the order of rendering, or whether batch effects are on.
    """
    words = [seed] + [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def experiment_names(config: SynthConfig) -> list[tuple[str, str, str]]:
    """(experiment, cell type, dataset) of every experiment, in design order."""
    names = []
    for plan in config.plans:
        for i in range(plan.n_experiments):
            dataset = "train" if i < plan.n_train else "test"
            names.append((f"{plan.cell_type}-{i + 1:02d}", plan.cell_type, dataset))
    return names


def treatment_groups(config: SynthConfig) -> list[np.ndarray]:
    """The 4 treatment groups: a random partition of 0 … n_treatments - 1, shared by all experiments."""
    order = stream(config.seed, "groups").permutation(config.n_treatments)
    return [np.sort(order[g::PLATES]) for g in range(PLATES)]


def sirna_name(sirna_id: int, untreated_id: int) -> str:
    """The ``sirna`` column of v1.0 metadata: ``s00012`` for an siRNA, ``EMPTY`` for the untreated well."""
    return "EMPTY" if sirna_id == untreated_id else f"s{sirna_id:05d}"


def build_design(config: SynthConfig) -> pd.DataFrame:
    """One row per well of the synthetic design (see :data:`WELL_COLUMNS`), sorted by experiment, plate, well.

    Every plate holds the untreated well at B02, all positive controls and one treatment group, at random
    positions among the 308 used wells (drawn per plate). Groups rotate cyclically over an experiment's four
    plates with a random per-experiment shift, so each treatment siRNA is used once per experiment.
    """
    if config.layout_from is not None:
        wells = design_from_csv(config.layout_from)
        return wells[wells.well_type == "negative_control"] if config.untreated_only else wells
    groups = treatment_groups(config)
    controls = np.arange(config.n_treatments, config.untreated_id)
    free_wells = np.array([w for w in USED_WELLS if w != UNTREATED_WELL])
    rows: list[tuple[Any, ...]] = []
    for experiment, cell_type, dataset in experiment_names(config):
        shift = int(stream(config.seed, "rotation", experiment).integers(PLATES))
        for plate in range(1, PLATES + 1):
            rows.append(
                (experiment, cell_type, dataset, plate, UNTREATED_WELL, "negative_control", config.untreated_id)
            )
            if config.untreated_only:
                continue
            treatments = groups[(plate - 1 + shift) % PLATES]
            sirnas = np.concatenate([controls, treatments])
            kinds = ["positive_control"] * len(controls) + ["treatment"] * len(treatments)
            positions = stream(config.seed, "positions", experiment, plate).choice(
                free_wells, size=len(sirnas), replace=False
            )
            rows.extend(
                (experiment, cell_type, dataset, plate, str(w), k, int(s))
                for w, k, s in zip(positions, kinds, sirnas, strict=True)
            )
    wells = pd.DataFrame(rows, columns=list(WELL_COLUMNS[:-1]))
    wells["sirna"] = [sirna_name(int(s), config.untreated_id) for s in wells.sirna_id]
    return wells.sort_values(["experiment", "plate", "well"], kind="stable").reset_index(drop=True)


def design_from_csv(path: str | Path) -> pd.DataFrame:
    """Copy the plate maps of a real design: a Kaggle ``train.csv`` (with its ``train_controls.csv`` when it is
    beside it) or a v1.0 ``metadata.csv``. Labels keep the Kaggle numbering (1138 untreated).

    Raises:
        MetadataError: the file is missing, lacks a column, or holds unlabelled wells (the Kaggle test set).
    """
    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"{path}: no such file; --layout-from takes a Kaggle train.csv or a v1.0 metadata.csv")
    parts = [pd.read_csv(path, dtype={"well": str, "experiment": str})]
    controls = path.with_name(f"{path.stem}_controls.csv")
    if controls.is_file():
        parts.append(pd.read_csv(controls, dtype={"well": str, "experiment": str}))
    frame = pd.concat(parts, ignore_index=True)
    if "sirna_id" in frame.columns:  # v1.0: sirna is the name, sirna_id the label
        frame = frame.drop(columns=["sirna"], errors="ignore").rename(columns={"sirna_id": "sirna"})
    missing = [c for c in ("experiment", "plate", "well", "sirna") if c not in frame.columns]
    if missing:
        raise MetadataError(f"{path}: missing column(s) {', '.join(missing)}; expected experiment, plate, well, sirna")
    if frame.sirna.isna().any():
        raise MetadataError(f"{path}: {int(frame.sirna.isna().sum())} wells have no siRNA label; a design needs all")
    frame = frame.drop_duplicates(["experiment", "plate", "well"])
    sirna = frame.sirna.astype(np.int64)
    untreated = int(sirna.max())
    if "well_type" in frame.columns:  # Kaggle: only the controls file has it
        well_type = frame.well_type.fillna("treatment").astype(str)
    else:
        well_type = pd.Series(np.where(sirna == untreated, "negative_control", "treatment"), index=frame.index)
        log.warning("%s has no well_type column (nor a _controls.csv beside it): only %d is untreated", path, untreated)
    if "dataset" in frame.columns:
        dataset = frame.dataset.astype(str)
    else:
        dataset = pd.Series("test" if path.stem.startswith("test") else "train", index=frame.index)
    wells = pd.DataFrame(
        {
            "experiment": frame.experiment.astype(str),
            "cell_type": frame.experiment.map(cell_type_of),
            "dataset": dataset,
            "plate": frame.plate.astype(np.int64),
            "well": frame.well.astype(str),
            "well_type": well_type,
            "sirna_id": sirna,
        }
    )
    wells["sirna"] = [sirna_name(int(s), untreated) for s in wells.sirna_id]
    return wells.sort_values(["experiment", "plate", "well"], kind="stable").reset_index(drop=True)


def layout_fingerprint(path: str | Path) -> str:
    """SHA-256 of a ``--layout-from`` CSV (and its controls file), so a rerun can tell a changed layout."""
    path = Path(path)
    digest = hashlib.sha256(path.read_bytes())
    controls = path.with_name(f"{path.stem}_controls.csv")
    if controls.is_file():
        digest.update(controls.read_bytes())
    return digest.hexdigest()


def site_table(wells: pd.DataFrame, sites_per_well: int) -> pd.DataFrame:
    """Expand a well table to the v1.0 ``metadata.csv`` (one row per site, :data:`V1_COLUMNS`)."""
    sites = pd.concat([wells.assign(site=s) for s in SITES[:sites_per_well]], ignore_index=True)
    sites = sites.sort_values(["experiment", "plate", "well", "site"], kind="stable").reset_index(drop=True)
    sites["well_id"] = sites.experiment + "_" + sites.plate.astype(str) + "_" + sites.well
    sites["site_id"] = sites.well_id + "_" + sites.site.astype(str)
    return sites[list(V1_COLUMNS)]
