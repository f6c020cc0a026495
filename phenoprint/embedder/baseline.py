"""A hand-crafted profile to compare the embedder against: per-channel intensity and texture statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from phenoprint.data.source import SiteSource

FEATURES_PER_CHANNEL = (
    "mean",
    "std",
    "p10",
    "p50",
    "p90",
    "p99",
    "gradient",
    "laplacian",
    "fine_energy",
)


def site_profile(site: np.ndarray) -> np.ndarray:
    """Per-channel intensity statistics and texture of one (C, H, W) uint8 site, as a float vector.

    Intensities: mean, std and the 10/50/90/99th percentiles of ``log1p(pixel)``. Texture: mean gradient
    magnitude and mean absolute Laplacian (edge and spot density), and the share of the signal's variance
    left after a Gaussian blur of 2 px is subtracted (fine-scale energy: puncta, fibres, nucleoli).
    """
    if site.ndim != 3:
        raise ValueError(f"expected a (C, H, W) site, got shape {site.shape}")
    out = []
    for plane in site.astype(np.float32):
        logp = np.log1p(plane)
        p10, p50, p90, p99 = np.percentile(logp, [10, 50, 90, 99])
        gy, gx = np.gradient(plane)
        grad = float(np.hypot(gx, gy).mean())
        lap = float(np.abs(ndimage.laplace(plane)).mean())
        fine = plane - ndimage.gaussian_filter(plane, 2.0)
        var = float(plane.var())
        out += [logp.mean(), logp.std(), p10, p50, p90, p99, np.log1p(grad), np.log1p(lap), fine.var() / max(var, 1e-6)]
    return np.asarray(out, dtype=np.float32)


def feature_names(n_channels: int = 6) -> list[str]:
    """Column names of :func:`site_profile` (``w1_mean`` …)."""
    return [f"w{c + 1}_{f}" for c in range(n_channels) for f in FEATURES_PER_CHANNEL]


def well_profiles(source: SiteSource, wells: pd.DataFrame, progress: bool = True) -> np.ndarray:
    """The mean :func:`site_profile` over the sites of each well (``well_table`` rows)."""
    rows = []
    for r in tqdm(wells.itertuples(index=False), total=len(wells), desc="profiles", unit="well", disable=not progress):
        rows.append(
            np.mean([site_profile(source.load(r.experiment, int(r.plate), r.well, int(s))) for s in r.sites], 0)
        )
    return np.stack(rows).astype(np.float32)
