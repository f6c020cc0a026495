"""Batch effects: what the experiment, the plate, the well's position and the site do to the images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phenoprint.data.layout import CHANNELS
from phenoprint.data.plate import edge_distance
from phenoprint.data.synth.design import stream

N_CHANNELS = len(CHANNELS)


@dataclass(frozen=True)
class SiteConditions:
    """How one site is grown, stained and imaged, apart from its siRNA. :data:`NEUTRAL` has no batch effect.

    Lengths are in pixels of a 512-px site; the renderer scales them to the image size.
    """

    gain: np.ndarray  # (6,) multiplier of each channel's stain brightness
    background: np.ndarray  # (6,) multiplier of each channel's background level
    gamma: np.ndarray  # (6,) exponent applied to the 8-bit intensity (detector and staining non-linearity)
    blur_px: float  # focus blur: extra Gaussian sigma
    vignetting: float  # illumination fall-off: relative loss of brightness at the field's corner
    illumination_centre: tuple[float, float]  # (x, y) of the brightest point, as fractions of the field
    illumination_tilt: tuple[float, float]  # relative brightness change across the field in x and y
    density: float  # log-multiplier of the cell density
    size: float  # log-multiplier of cell and nucleus size

    def __post_init__(self) -> None:
        for name in ("gain", "background", "gamma"):
            shape = np.shape(getattr(self, name))
            if shape != (N_CHANNELS,):
                raise ValueError(f"{name} must have one value per channel, shape ({N_CHANNELS},), got {shape}")


NEUTRAL = SiteConditions(
    gain=np.ones(N_CHANNELS),
    background=np.ones(N_CHANNELS),
    gamma=np.ones(N_CHANNELS),
    blur_px=0.0,
    vignetting=0.0,
    illumination_centre=(0.5, 0.5),
    illumination_tilt=(0.0, 0.0),
    density=0.0,
    size=0.0,
)


@dataclass(frozen=True)
class BatchScale:
    """Standard deviations of the batch effects at each level (log-space unless said otherwise)."""

    experiment_gain: float = 0.25  # per-channel stain brightness between experiments
    experiment_common_gain: float = 0.10  # brightness shared by all channels of an experiment
    experiment_background: float = 0.20  # per-channel background between experiments
    experiment_gamma: float = 0.04  # exponent between experiments
    experiment_blur_px: float = 0.8  # focus blur of an experiment (half-normal)
    experiment_density: float = 0.25  # seeding density between experiments
    experiment_size: float = 0.10  # cell spreading between experiments
    plate_gain: float = 0.06  # per-channel brightness between plates of one experiment
    plate_density: float = 0.05  # seeding density between plates
    plate_blur_px: float = 0.2  # focus blur between plates (half-normal)
    edge_gain: float = 0.12  # mean brightness gain of the outermost wells (evaporation), decays inwards
    edge_density: float = -0.15  # density change of the outermost wells
    site_gain: float = 0.03  # per-channel brightness between sites of a well
    site_blur_px: float = 0.15  # focus blur between sites (half-normal)


DEFAULT_SCALE = BatchScale()


def _edge_weight(well: str) -> float:
    """1 for the outer ring of used wells, decaying by e per well inwards."""
    return float(np.exp(-edge_distance(well)))


def site_conditions(
    seed: int,
    experiment: str,
    plate: int,
    well: str,
    site: int,
    *,
    batch_effects: bool = True,
    scale: BatchScale = DEFAULT_SCALE,
) -> SiteConditions:
    """The conditions of one site: experiment effects, smaller plate effects, edge effects and site jitter.

    Each level draws from its own stream (experiment; experiment and plate; the site), so all sites of an
    experiment share its effects whatever else is rendered. ``batch_effects=False`` gives :data:`NEUTRAL`.
    """
    if not batch_effects:
        return NEUTRAL
    s = scale
    e = stream(seed, "batch", experiment)
    gain = e.normal(0.0, s.experiment_gain, N_CHANNELS) + e.normal(0.0, s.experiment_common_gain)
    background = e.normal(0.0, s.experiment_background, N_CHANNELS)
    gamma = e.normal(0.0, s.experiment_gamma, N_CHANNELS)
    blur = abs(e.normal(0.0, s.experiment_blur_px))
    vignetting = e.uniform(0.0, 0.4)
    centre = (float(e.normal(0.5, 0.15)), float(e.normal(0.5, 0.15)))
    tilt = e.normal(0.0, 0.12, 2)
    density = e.normal(0.0, s.experiment_density)
    size = e.normal(0.0, s.experiment_size)
    edge_gain = e.normal(s.edge_gain, s.edge_gain / 3, N_CHANNELS)

    p = stream(seed, "batch", experiment, plate)
    gain = gain + p.normal(0.0, s.plate_gain, N_CHANNELS)
    density += p.normal(0.0, s.plate_density)
    blur += abs(p.normal(0.0, s.plate_blur_px))
    tilt = tilt + p.normal(0.0, 0.03, 2)

    w = _edge_weight(well)
    gain = gain + w * edge_gain
    density += w * s.edge_density

    t = stream(seed, "batch", experiment, plate, well, site)
    gain = gain + t.normal(0.0, s.site_gain, N_CHANNELS)
    blur += abs(t.normal(0.0, s.site_blur_px))
    centre = (centre[0] + float(t.normal(0.0, 0.05)), centre[1] + float(t.normal(0.0, 0.05)))

    return SiteConditions(
        gain=np.exp(gain),
        background=np.exp(background),
        gamma=np.exp(gamma),
        blur_px=float(blur),
        vignetting=float(vignetting),
        illumination_centre=centre,
        illumination_tilt=(float(tilt[0]), float(tilt[1])),
        density=float(density),
        size=float(size),
    )
