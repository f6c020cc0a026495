"""Batch effects: shared by an experiment, smaller between plates, stronger at the edge, off when asked."""

from __future__ import annotations

import numpy as np
import pytest

from phenoprint.data.synth import NEUTRAL, SiteConditions, site_conditions


def _gains(experiment: str, plate: int, well: str = "H12", site: int = 1) -> np.ndarray:
    return np.log(site_conditions(0, experiment, plate, well, site).gain)


def test_no_batch_effects_is_neutral() -> None:
    assert site_conditions(0, "HUVEC-01", 1, "B02", 1, batch_effects=False) is NEUTRAL
    assert np.array_equal(NEUTRAL.gain, np.ones(6))


def test_experiments_differ_more_than_plates_and_sites() -> None:
    experiments = np.stack([_gains(f"HUVEC-{e:02d}", 1) for e in range(1, 25)])
    plates = np.stack([_gains("HUVEC-01", p) for p in range(1, 5)])
    sites = np.stack([_gains("HUVEC-01", 1, site=s) for s in (1, 2)])
    assert experiments.std(axis=0).mean() > 3 * plates.std(axis=0).mean()
    assert plates.std(axis=0).mean() > sites.std(axis=0).mean()


def test_edge_wells_are_brighter_on_average() -> None:
    edge = np.mean([_gains(f"RPE-{e:02d}", 1, "B07").mean() for e in range(1, 30)])
    centre = np.mean([_gains(f"RPE-{e:02d}", 1, "H12").mean() for e in range(1, 30)])
    assert edge > centre


def test_conditions_check_channel_counts() -> None:
    with pytest.raises(ValueError, match="one value per channel"):
        SiteConditions(np.ones(5), np.ones(6), np.ones(6), 0.0, 0.0, (0.5, 0.5), (0.0, 0.0), 0.0, 0.0)
