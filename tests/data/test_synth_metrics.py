"""Faithfulness checks: realism against the real sample, and batch dominance against a brute-force reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoprint.data import load_site, read_metadata
from phenoprint.data.synth import CellTypePlan, preset_config, synthesize
from phenoprint.data.synth.metrics import (
    channel_moments,
    experiment_nn_accuracy,
    realism_table,
    site_intensity_features,
)

CELL_TYPES = ["HUVEC", "RPE", "HEPG2", "U2OS"]


def test_untreated_wells_match_the_real_sample_within_2x(rxrx1_root: Path, tmp_path: Path) -> None:
    config = preset_config(
        "tiny", plans=tuple(CellTypePlan(ct, 4, 2) for ct in CELL_TYPES), untreated_only=True, seed=11
    )
    synthesize(config, tmp_path, workers=1, progress=False)
    table = realism_table(tmp_path, rxrx1_root, CELL_TYPES)
    assert len(table) == 4 * 6
    assert table.real_sites.eq(8).all()
    assert table.synth_sites.eq(32).all()
    for column in ("mean_ratio", "std_ratio"):
        bad = table[(table[column] < 0.5) | (table[column] > 2.0)]
        assert bad.empty, f"{column} outside 0.5-2:\n{bad}"


def test_channel_moments_match_numpy() -> None:
    x = np.random.default_rng(0).integers(0, 255, (3, 6, 8, 8), dtype=np.uint8)
    mean, std = channel_moments(x)
    np.testing.assert_allclose(mean, [x[:, c].mean() for c in range(6)])
    np.testing.assert_allclose(std, [x[:, c].std() for c in range(6)])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        channel_moments(x[0])


def _reference_accuracy(features: np.ndarray, meta: pd.DataFrame) -> float:
    """Loop re-derivation: z-score per cell type, nearest other-well site of the same cell type."""
    hits = []
    for _, sub in meta.groupby("cell_type"):
        idx = sub.index.to_numpy()
        x = features[idx]
        x = (x - x.mean(axis=0)) / x.std(axis=0)
        for i, row in enumerate(sub.itertuples()):
            best, best_d = None, np.inf
            for j, other in enumerate(sub.itertuples()):
                if (other.experiment, other.plate, other.well) == (row.experiment, row.plate, row.well):
                    continue
                d = float(((x[i] - x[j]) ** 2).sum())
                if d < best_d:
                    best, best_d = other, d
            assert best is not None
            hits.append(best.experiment == row.experiment)
    return float(np.mean(hits))


def test_nn_accuracy_matches_a_loop_reference() -> None:
    rng = np.random.default_rng(1)
    rows = [
        (ct, f"{ct}-{e:02d}", p, w, s)
        for ct in ("HUVEC", "RPE")
        for e in (1, 2, 3)
        for p in (1, 2)
        for w in ("B02", "C03")
        for s in (1, 2)
    ]
    meta = pd.DataFrame(rows, columns=["cell_type", "experiment", "plate", "well", "site"])
    shift = meta.experiment.factorize()[0][:, None] * 0.7
    features = rng.normal(size=(len(meta), 4)) + shift
    result = experiment_nn_accuracy(features, meta)
    assert result.accuracy == pytest.approx(_reference_accuracy(features, meta))
    assert result.chance == pytest.approx(6 / 22)  # per site: 6 other-well sites of its experiment among 22
    with pytest.raises(ValueError, match="aligned"):
        experiment_nn_accuracy(features[:-1], meta)


def test_batch_effects_dominate_and_vanish_without(tmp_path: Path) -> None:
    scores = {}
    for batch in (True, False):
        root = tmp_path / str(batch)
        synthesize(preset_config("tiny", batch_effects=batch, seed=3), root, workers=1, progress=False)
        meta = read_metadata(root)
        keys = meta[["experiment", "plate", "well", "site"]].itertuples(index=False)
        features = np.stack([site_intensity_features(load_site(root, *k)) for k in keys])
        scores[batch] = experiment_nn_accuracy(features, meta)
    assert scores[True].accuracy >= 0.9
    assert scores[False].accuracy < scores[False].chance + 0.15
