"""Synthetic embedding tables with the RxRx1 plate design and strong batch effects, for tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from phenoprint.data.plate import USED_WELLS
from phenoprint.data.table import EmbeddingTable, feature_names


@dataclass(frozen=True)
class VectorDesign:
    """The layout and effect sizes of a synthetic vector set (defaults: RxRx1's full scale).

    Labels follow the Kaggle numbering pattern: treatments ``0…T-1``, positive controls ``T…T+P-1``, the untreated
    negative control ``T+P``; each plate holds one treatment group (an experiment's plates a random cyclic rotation
    of the groups), every positive control once and one untreated well. Effect sizes are per-dimension standard
    deviations; the batch terms (experiment offset, plate offset, per-feature gains, a few high-variance nuisance
    directions per experiment) are all larger than the siRNA signal, as in real Cell Painting data.
    """

    cell_types: tuple[tuple[str, int], ...] = (("HUVEC", 24), ("RPE", 11), ("HEPG2", 11), ("U2OS", 5))  # experiments
    n_treatments: int = 1108  # treatment siRNAs, split evenly into n_groups plate groups
    n_groups: int = 4  # plate groups = plates per experiment
    n_positive_controls: int = 30  # positive-control siRNAs, each on every plate
    dim: int = 512  # feature dimension
    sirna_scale: float = 0.3  # siRNA effect shared by all cell types
    cell_type_scale: float = 0.15  # cell-type-specific part of each siRNA's effect
    positive_control_scale: float = 2.0  # positive controls' effects are this many times larger
    cell_type_offset: float = 1.0  # baseline of each cell type
    experiment_offset: float = 1.0  # offset of each experiment
    plate_offset: float = 0.5  # offset of each plate
    gain_sd: float = 0.2  # log-normal sd of each experiment's per-feature gains
    nuisance_rank: int = 8  # high-variance nuisance directions per experiment
    nuisance_scale: float = 3.0  # sd along each (unit) nuisance direction; the isotropic noise has noise_scale
    noise_scale: float = 1.0  # well-level isotropic noise

    def __post_init__(self) -> None:
        if self.n_groups < 1 or self.n_treatments % self.n_groups:
            raise ValueError(
                f"n_treatments must be a positive multiple of n_groups; got {self.n_treatments} and {self.n_groups}"
            )
        wells = self.wells_per_plate
        if wells > len(USED_WELLS):
            raise ValueError(f"a plate would hold {wells} wells; the RxRx1 plate has {len(USED_WELLS)}")

    @property
    def n_classes(self) -> int:
        return self.n_treatments + self.n_positive_controls + 1

    @property
    def negative_control_id(self) -> int:
        return self.n_treatments + self.n_positive_controls

    @property
    def wells_per_plate(self) -> int:
        return self.n_treatments // self.n_groups + self.n_positive_controls + 1

    @classmethod
    def small(cls, **overrides: object) -> VectorDesign:
        """A tiny design for unit tests (2 cell types, 32 siRNAs, 16-d), with the same structure."""
        params: dict[str, object] = {
            "cell_types": (("HUVEC", 4), ("RPE", 3)),
            "n_treatments": 24,
            "n_groups": 4,
            "n_positive_controls": 3,
            "dim": 16,
            "sirna_scale": 1.0,
            "cell_type_scale": 0.2,
            "noise_scale": 0.5,
            "nuisance_rank": 2,
        }
        params.update(overrides)
        return cls(**params)  # type: ignore[arg-type]


def simulate_table(design: VectorDesign, seed: int = 0, fingerprint: str | None = "synthetic") -> EmbeddingTable:
    """A labelled well table drawn from ``design`` (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    d = design.dim
    n_ct = len(design.cell_types)
    t, p = design.n_treatments, design.n_positive_controls
    neg = design.negative_control_id
    effect = rng.normal(0.0, design.sirna_scale, (design.n_classes, d))
    effect[t : t + p] *= design.positive_control_scale
    effect[neg] = 0.0
    specific = rng.normal(0.0, design.cell_type_scale, (n_ct, design.n_classes, d))
    specific[:, neg] = 0.0
    baseline = rng.normal(0.0, design.cell_type_offset, (n_ct, d))
    group_of_slot = rng.permutation(t).reshape(design.n_groups, t // design.n_groups)
    controls = np.arange(t, t + p + 1)

    metas, feats = [], []
    for c, (cell_type, n_exp) in enumerate(design.cell_types):
        for e in range(n_exp):
            exp = f"{cell_type}-{e + 1:02d}"
            offset = rng.normal(0.0, design.experiment_offset, d)
            gain = np.exp(rng.normal(0.0, design.gain_sd, d))
            nuisance = rng.normal(0.0, 1.0, (design.nuisance_rank, d))
            nuisance *= design.nuisance_scale / np.linalg.norm(nuisance, axis=1, keepdims=True)
            shift = int(rng.integers(design.n_groups))
            for plate in range(1, design.n_groups + 1):
                group = (plate - 1 + shift) % design.n_groups
                labels = np.concatenate([group_of_slot[group], controls])
                n = len(labels)
                wells = np.array(USED_WELLS)[rng.permutation(len(USED_WELLS))[:n]]
                x = (
                    baseline[c]
                    + effect[labels]
                    + specific[c, labels]
                    + rng.normal(0.0, design.plate_offset, d)
                    + rng.normal(0.0, design.noise_scale, (n, d))
                    + rng.normal(0.0, 1.0, (n, design.nuisance_rank)) @ nuisance
                )
                feats.append((x * gain + offset).astype(np.float32))
                well_type = np.where(labels < t, "treatment", "positive_control")
                well_type[labels == neg] = "negative_control"
                metas.append(
                    pd.DataFrame(
                        {
                            "Metadata_experiment": exp,
                            "Metadata_plate": plate,
                            "Metadata_well": wells,
                            "Metadata_cell_type": cell_type,
                            "Metadata_well_type": well_type,
                            "Metadata_sirna_id": labels,
                        }
                    )
                )
    meta = pd.concat(metas, ignore_index=True)
    meta["Metadata_sirna_id"] = meta["Metadata_sirna_id"].astype("Int64")
    return EmbeddingTable(meta, np.concatenate(feats), tuple(feature_names(d)), fingerprint, {"synthetic_seed": seed})
