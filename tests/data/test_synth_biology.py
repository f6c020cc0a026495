"""siRNA phenotypes: none for untreated, sparse, strong for controls, deterministic, cell-type dependent."""

from __future__ import annotations

import numpy as np
import pytest

from phenoprint.data.synth import TRAITS, Phenotype, phenotype
from phenoprint.data.synth.biology import NULL, unit_effect


def test_untreated_has_no_phenotype() -> None:
    assert phenotype(0, 1138, "negative_control", "HUVEC") == NULL
    assert not NULL.vector().any()


def test_effects_are_sparse_and_controls_strong() -> None:
    treatments = np.stack([unit_effect(0, s, "treatment") for s in range(200)])
    controls = np.stack([unit_effect(0, s, "positive_control") for s in range(1108, 1138)])
    assert ((treatments != 0).sum(axis=1) <= 4).all()
    assert ((controls != 0).sum(axis=1) <= 5).all()
    strength = np.linalg.norm(treatments, axis=1)
    assert np.linalg.norm(controls, axis=1).min() > np.median(strength)
    assert (strength < 0.3).mean() == pytest.approx(0.15, abs=0.08)  # some near null
    assert 1.0 <= np.median(strength) <= 2.5  # most moderate


def test_phenotype_is_deterministic_and_differs_between_cell_types() -> None:
    a = phenotype(0, 7, "treatment", "HUVEC")
    assert a == phenotype(0, 7, "treatment", "HUVEC")
    assert a != phenotype(1, 7, "treatment", "HUVEC")
    vectors = {ct: phenotype(0, 7, "treatment", ct).vector() for ct in ("HUVEC", "RPE", "HEPG2", "U2OS")}
    assert len({v.tobytes() for v in vectors.values()}) == 4
    # related across cell types: the shared part of the effect keeps them positively correlated on average
    corr = [
        np.corrcoef(phenotype(0, s, "treatment", "HUVEC").vector(), phenotype(0, s, "treatment", "RPE").vector())[0, 1]
        for s in range(100)
        if unit_effect(0, s, "treatment").any()
    ]
    assert np.nanmedian(corr) > 0.5


def test_vector_round_trip_and_shape_check() -> None:
    v = np.arange(len(TRAITS), dtype=float)
    assert np.array_equal(Phenotype.from_vector(v).vector(), v)
    with pytest.raises(ValueError, match="trait values"):
        Phenotype.from_vector(np.zeros(3))
