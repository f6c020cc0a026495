"""siRNA phenotypes: a sparse, cell-type-dependent shift of a dozen morphology and stain traits per siRNA."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from phenoprint.data.synth.design import stream


@dataclass(frozen=True)
class Phenotype:
    """Well-level shifts of cell traits, as natural logs of multipliers (0: as untreated).

    Each trait multiplies a per-cell quantity of the renderer by ``exp(value)``; cells still vary around it.
    """

    nucleus_size: float = 0.0  # nucleus radius
    nucleus_elongation: float = 0.0  # nucleus major/minor axis ratio
    cell_size: float = 0.0  # cell radius
    cell_density: float = 0.0  # cells per field (toxicity, proliferation)
    dna: float = 0.0  # Hoechst brightness of nuclei (w1)
    er: float = 0.0  # ER stain and its reach from the nucleus (w2)
    actin_fibres: float = 0.0  # stress fibres against cortical actin (w3)
    nucleoli: float = 0.0  # nucleoli per nucleus (w4)
    rna: float = 0.0  # nucleolar and cytoplasmic RNA stain (w4)
    mitochondria: float = 0.0  # mitochondrial puncta per cell (w5)
    mito_spread: float = 0.0  # how far mitochondria reach from the nucleus (w5)
    golgi_dispersal: float = 0.0  # Golgi fragmentation: more, scattered pieces (w6)
    golgi: float = 0.0  # Golgi stain brightness (w6)

    @classmethod
    def from_vector(cls, values: np.ndarray) -> Phenotype:
        """Build from a vector in :data:`TRAITS` order."""
        if values.shape != (len(TRAITS),):
            raise ValueError(f"expected {len(TRAITS)} trait values, got shape {values.shape}")
        return cls(*(float(v) for v in values))

    def vector(self) -> np.ndarray:
        """The traits as a vector in :data:`TRAITS` order."""
        return np.array([getattr(self, t) for t in TRAITS])


#: Trait names in vector order.
TRAITS: tuple[str, ...] = tuple(f.name for f in fields(Phenotype))

#: Log-multiplier of one unit of effect, per trait. Sizes move less than stain brightness because a 10%
#: larger nucleus is already plain at 128 px; counts and textures move most because they are noisy per cell.
TRAIT_SCALE = np.array([0.24, 0.24, 0.20, 0.25, 0.27, 0.33, 0.60, 0.60, 0.33, 0.50, 0.45, 0.65, 0.38])

#: Effect strength (L2 norm of the unit-effect vector) by kind of siRNA: (probability, low, high).
#: Most treatments are moderate, some near null, a few strong; positive controls are all strong.
TREATMENT_STRENGTHS: tuple[tuple[float, float, float], ...] = ((0.15, 0.0, 0.3), (0.6, 1.0, 2.0), (0.25, 2.0, 3.0))
CONTROL_STRENGTH: tuple[float, float] = (3.0, 4.0)
#: How much the effect differs between cell types: the log-sd of a per-cell-type gain, and the chance that
#: one active trait is re-drawn for a cell type.
CELL_TYPE_GAIN_SD = 0.35
CELL_TYPE_REDRAW = 0.25

NULL = Phenotype()


def unit_effect(seed: int, sirna_id: int, well_type: str) -> np.ndarray:
    """The cell-type-independent effect of an siRNA, in units of :data:`TRAIT_SCALE`.

    Sparse: two to four traits (three to five for a positive control) with random signs.
    """
    if well_type == "negative_control":
        return np.zeros(len(TRAITS))
    rng = stream(seed, "phenotype", sirna_id)
    control = well_type == "positive_control"
    k = int(rng.integers(3, 6) if control else rng.integers(2, 5))
    active = rng.choice(len(TRAITS), size=k, replace=False)
    direction = np.zeros(len(TRAITS))
    direction[active] = rng.choice([-1.0, 1.0], size=k) * rng.uniform(0.5, 1.0, size=k)
    direction /= np.linalg.norm(direction)
    if control:
        strength = rng.uniform(*CONTROL_STRENGTH)
    else:
        probs = [p for p, _, _ in TREATMENT_STRENGTHS]
        _, lo, hi = TREATMENT_STRENGTHS[int(rng.choice(len(TREATMENT_STRENGTHS), p=probs))]
        strength = rng.uniform(lo, hi)
    return direction * strength


def phenotype(seed: int, sirna_id: int, well_type: str, cell_type: str) -> Phenotype:
    """The phenotype of an siRNA in one cell type; the untreated well has none.

    The shared effect is scaled by a per-cell-type gain and, with probability :data:`CELL_TYPE_REDRAW` per
    active trait, that trait is re-drawn for the cell type, so siRNAs are recognisable within a cell type but
    only partly across them (as in RxRx1, where models are usually fitted per cell type).
    """
    base = unit_effect(seed, sirna_id, well_type)
    if not base.any():
        return NULL
    rng = stream(seed, "phenotype", sirna_id, cell_type)
    effect = base * np.exp(rng.normal(0.0, CELL_TYPE_GAIN_SD))
    active = np.flatnonzero(base)
    redraw = active[rng.random(len(active)) < CELL_TYPE_REDRAW]
    effect[redraw] = rng.normal(0.0, np.abs(base[active]).mean(), size=len(redraw))
    return Phenotype.from_vector(effect * TRAIT_SCALE)
