"""How a per-experiment index is built and queried: :class:`IndexConfig`, saved resolved in every index's manifest."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from phenoprint.configs import config_from_json, config_to_json
from phenoprint.index.centering import DEFAULT_EPSILON, DEFAULT_RIDGE, REFERENCES, CenterMethod, Reference

#: The FAISS index kinds (:func:`phenoprint.index.faiss_backend.make_index` builds them), each with what it is for:
#: the one list the ``IndexKind`` type (a test checks they agree), the command line's choices and its help use.
INDEX_KIND_HELP: dict[str, str] = {
    "flat": "exact search",
    "ivf": "approximate (inverted lists), for large indexes",
    "hnsw": "approximate (a graph), for large indexes",
}
IndexKind = Literal["flat", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = tuple(INDEX_KIND_HELP)
#: The open-set threshold's default: the share of known calibration wells allowed below it.
DEFAULT_QUANTILE = 0.05

Scope = Literal["same_cell_type", "all"]
SCOPES: tuple[str, ...] = get_args(Scope)
CalibrationSource = Literal["controls", "training"]
CALIBRATION_SOURCES: tuple[str, ...] = get_args(CalibrationSource)
#: Whose reference wells the pooled whitening (zca, zca_cor, tvn_pooled) is fitted on: every batch in scope, the
#: one onboarded (or held out) included, or the training batches alone.
POOL_HELP: dict[str, str] = {
    "all": "every batch in scope, the new one included (pycytominer's spherize and the JUMP recipe fit all plates "
    "together; its controls are measured with its treatments, and no label of it is used)",
    "training": "the other batches alone (the new batch gets its own per-batch step and their whitening)",
}
Pool = Literal["all", "training"]
POOLS: tuple[str, ...] = tuple(POOL_HELP)
#: ``ensemble``: the mean cosine over every centering (:data:`phenoprint.index.table_centering.ENSEMBLE`);
#: ``auto``: chosen at build time (:mod:`phenoprint.index.choose`).
CenterChoice = Literal[CenterMethod, "ensemble", "auto"]
CENTER_CHOICES: tuple[str, ...] = get_args(CenterChoice)
#: How the service and ``predict`` name wells (:func:`phenoprint.index.classify.classify`): the one list the ``Mode``
#: type (a test checks they agree), the classifiers and the command line's choices use.
MODE_HELP: dict[str, str] = {"knn": "knn vote", "centroid": "nearest centroid"}
Mode = Literal["knn", "centroid"]
MODES: tuple[str, ...] = tuple(MODE_HELP)
#: How the kNN neighbours vote (:func:`phenoprint.index.classify.classify`).
VOTE_HELP: dict[str, str] = {
    "weighted": "each neighbour weighs exp((cos - nearest cos) / temperature)",
    "majority": "one vote per neighbour, ties to the class of the nearer neighbours",
}
Vote = Literal["weighted", "majority"]
VOTES: tuple[str, ...] = tuple(VOTE_HELP)
#: A mode, or ``auto``: chosen at build time on the batch's own labelled controls.
ModeChoice = Literal[Mode, "auto"]
MODE_CHOICES: tuple[str, ...] = get_args(ModeChoice)


@dataclass(frozen=True)
class IndexConfig:
    """How a per-experiment index is built and queried (saved resolved in every index's manifest)."""

    center: CenterChoice = "auto"  # auto (chosen per batch: phenoprint.index.choose) | ensemble | a centering method
    reference: Reference = "controls"  # controls | all: which wells the centering statistics are fitted on
    pca_dim: int | None = None  # TVN: components estimated one by one (None: half the reference wells, at most d)
    ridge: float = DEFAULT_RIDGE  # TVN: λ of (Σ + λI)^(-1/2) as a fraction of the mean eigenvalue
    epsilon: float = DEFAULT_EPSILON  # ZCA / ZCA-cor: ε added to each eigenvalue of Σ (pycytominer's default)
    pool: Pool = "all"  # whose reference wells a pooled whitening is fitted on: all batches in scope | training ones
    per_plate: bool = False  # fit the statistics per (experiment, plate) instead of per experiment
    scope: Scope = "same_cell_type"  # same_cell_type | all: which other experiments' labelled wells are indexed
    kind: IndexKind = "flat"  # flat (exact) | ivf | hnsw (approximate, for large references)
    nlist: int | None = None  # IVF: inverted lists (None: about 4·sqrt(entries))
    nprobe: int = 16  # IVF: lists visited per query
    hnsw_m: int = 32  # HNSW: neighbours per node
    ef_construction: int = 200  # HNSW: candidate list while building
    ef_search: int = 128  # HNSW: candidate list while searching
    n_neighbors: int = 50  # kNN classification: neighbours that vote
    temperature: float = 0.1  # kNN classification: vote weight exp((cos - best cos) / temperature)
    vote: Vote = "weighted"  # kNN classification: weighted (by temperature) | majority (one vote per neighbour)
    open_set_quantile: float = DEFAULT_QUANTILE  # accepted false-unknown rate on the calibration wells (0: off)
    open_set_calibration: CalibrationSource = (
        "training"  # training (other experiments' treatments) or controls (its own)
    )
    mode: ModeChoice = "auto"  # knn | centroid: how the service and `predict` name wells | auto (chosen per batch)

    def __post_init__(self) -> None:
        if self.center == "ensemble" and not self.per_plate:  # its per-plate views need each well's plate
            object.__setattr__(self, "per_plate", True)
        for name, allowed in (
            ("center", CENTER_CHOICES),
            ("mode", MODE_CHOICES),
            ("reference", REFERENCES),
            ("scope", SCOPES),
            ("kind", INDEX_KINDS),
            ("open_set_calibration", CALIBRATION_SOURCES),
            ("vote", VOTES),
            ("pool", POOLS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        positive = ("nprobe", "hnsw_m", "ef_construction", "ef_search", "n_neighbors")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        for name in ("pca_dim", "nlist"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1 or None; got {value}")
        if not self.ridge > 0:
            raise ValueError(f"ridge must be > 0; got {self.ridge}")
        if not (self.epsilon >= 0 and math.isfinite(self.epsilon)):  # NaN fails the comparison too
            raise ValueError(
                f"epsilon must be a finite number >= 0 (ZCA's ε added to each eigenvalue); got {self.epsilon}"
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature}")
        if not 0 <= self.open_set_quantile < 1:
            raise ValueError(f"open_set_quantile must be in [0, 1); got {self.open_set_quantile}")

    def to_json(self) -> dict[str, Any]:
        return config_to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndexConfig:
        return config_from_json(cls, data)
