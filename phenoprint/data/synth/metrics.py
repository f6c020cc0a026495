"""How faithful a synthetic data root is: intensity statistics against real images, and batch dominance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from phenoprint.data.images import load_site
from phenoprint.data.layout import CHANNELS, detect_layout, read_metadata, site_status


def channel_moments(sites: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over all pixels of a stack of (N, C, H, W) sites.

    Raises:
        ValueError: ``sites`` is not 4-D.
    """
    if sites.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) sites, got shape {sites.shape}")
    pixels = np.moveaxis(sites, 1, 0).reshape(sites.shape[1], -1).astype(np.float64)
    return pixels.mean(axis=1), pixels.std(axis=1)


def untreated_moments(root: str | Path, cell_type: str, experiments: list[str] | None = None) -> pd.DataFrame:
    """Per-channel mean and std of the untreated sites with images of one cell type of a data root.

    Returns:
        One row per channel: ``channel``, ``mean``, ``std``, ``n_sites``.

    Raises:
        ValueError: no untreated site of that cell type has images.
    """
    layout = detect_layout(root)
    meta = read_metadata(root)
    meta = meta[(meta.cell_type == cell_type) & (meta.well_type == "negative_control")]
    if experiments is not None:
        meta = meta[meta.experiment.isin(experiments)]
    meta = meta[site_status(meta, root)]
    if meta.empty:
        raise ValueError(f"{root}: no untreated {cell_type} site has images")
    sites = np.stack([load_site(layout, r.experiment, r.plate, r.well, r.site) for r in meta.itertuples()])
    mean, std = channel_moments(sites)
    return pd.DataFrame({"channel": list(CHANNELS), "mean": mean, "std": std, "n_sites": len(meta)})


def realism_table(synthetic_root: str | Path, real_root: str | Path, cell_types: list[str]) -> pd.DataFrame:
    """Synthetic against real untreated per-channel mean and std, per cell type, with their ratios.

    Returns:
        One row per (cell type, channel): ``real_mean``, ``synth_mean``, ``mean_ratio``, ``real_std``,
        ``synth_std``, ``std_ratio`` (synthetic / real), and the site counts.
    """
    rows = []
    for cell_type in cell_types:
        real = untreated_moments(real_root, cell_type)
        synth = untreated_moments(synthetic_root, cell_type)
        for r, s in zip(real.itertuples(), synth.itertuples(), strict=True):
            rows.append(
                {
                    "cell_type": cell_type,
                    "channel": r.channel,
                    "real_mean": r.mean,
                    "synth_mean": s.mean,
                    "mean_ratio": s.mean / r.mean,
                    "real_std": r.std,
                    "synth_std": s.std,
                    "std_ratio": s.std / r.std,
                    "real_sites": r.n_sites,
                    "synth_sites": s.n_sites,
                }
            )
    return pd.DataFrame(rows)


def site_intensity_features(site: np.ndarray) -> np.ndarray:
    """Per-channel mean and standard deviation of one (C, H, W) site: the simplest batch fingerprint."""
    x = site.reshape(site.shape[0], -1).astype(np.float64)
    return np.concatenate([x.mean(axis=1), x.std(axis=1)])


@dataclass(frozen=True)
class BatchDominance:
    """How well the experiment of a site is told from its intensity statistics (1-NN, leave one well out)."""

    accuracy: float  # fraction of sites whose nearest neighbour comes from the same experiment
    chance: float  # the same fraction for a neighbour drawn at random among the candidates
    per_cell_type: dict[str, tuple[float, float]]  # cell type -> (accuracy, chance)
    n_sites: int  # sites evaluated


def experiment_nn_accuracy(features: np.ndarray, metadata: pd.DataFrame) -> BatchDominance:
    """1-NN experiment accuracy among sites of the same cell type.

    Features are z-scored per cell type. A site's own well is excluded from its candidates, so the other site
    of the well (same siRNA, same experiment) cannot make the score.

    Args:
        features: (N, D) per-site features (e.g. :func:`site_intensity_features`).
        metadata: N rows with ``experiment``, ``cell_type``, ``plate`` and ``well``, aligned with ``features``.

    Raises:
        ValueError: the lengths differ, or a cell type has a single experiment.
    """
    n, _ = features.shape
    if len(metadata) != n:
        raise ValueError(f"features has {n} rows, metadata {len(metadata)}; they must be aligned")
    meta = metadata.reset_index(drop=True)
    hits = np.zeros(n)
    chance = np.zeros(n)
    per: dict[str, tuple[float, float]] = {}
    for cell_type, rows in meta.groupby("cell_type").groups.items():
        idx = np.asarray(rows)
        sub = meta.loc[idx]
        if sub.experiment.nunique() < 2:
            raise ValueError(f"{cell_type}: only one experiment; batch dominance needs at least two")
        x = features[idx]
        x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-9)
        dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)
        well = (sub.experiment + "/" + sub.plate.astype(str) + "/" + sub.well).to_numpy()
        same_well = well[:, None] == well[None, :]
        dist[same_well] = np.inf
        exp = sub.experiment.to_numpy()
        same_exp = exp[:, None] == exp[None, :]
        nearest = dist.argmin(axis=1)
        hits[idx] = same_exp[np.arange(len(idx)), nearest]
        chance[idx] = (same_exp & ~same_well).sum(axis=1) / (~same_well).sum(axis=1)
        per[str(cell_type)] = (float(hits[idx].mean()), float(chance[idx].mean()))
    return BatchDominance(float(hits.mean()), float(chance.mean()), per, n)
