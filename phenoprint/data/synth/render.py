"""Render one synthetic Cell Painting site: cells and nuclei, six organelle stains, then the microscope.

Kept as one module although long: a third is the fitted cell-type models, and the painting steps share ``_Cells``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from phenoprint.data.synth.batch import N_CHANNELS, SiteConditions
from phenoprint.data.synth.biology import Phenotype
from phenoprint.data.synth.design import stream

#: Image size whose pixel pitch the cell models are written in (the release's 512 px).
REFERENCE_SIZE = 512

#: Width (pixels) of the soft edges of cell and nucleus masks.
_EDGE_PX = 0.8


@dataclass(frozen=True)
class CellTypeModel:
    """Morphology and staining of one cell type, untreated and without batch effects.

    Lengths are in pixels of a 512-px RxRx1 site, read off the real images (nucleus diameters, distances between
    nuclei). ``amplitude`` and ``background`` were fitted per channel so that untreated sites rendered with
    batch effects at 128 px (3 seeds x 6 experiments x 2 plates) match the per-channel mean and standard
    deviation of the real B02 images of HUVEC-01, RPE-01, HEPG2-01 and U2OS-01 in the shared RxRx1 sample: the
    standard deviation fixes the amplitude, then the mean fixes the background, iterated three times.
    ``scripts/bench_data.py`` recomputes the comparison from the PNGs (its realism table).
    """

    spacing: float  # distance between neighbouring candidate cell positions
    fill: float  # fraction of candidate positions that hold a cell (base density)
    clumping: float  # amplitude of a slow density field (0: even monolayer; HepG2 grows in clumps)
    cell_radius: float  # mean cell radius
    cell_aspect: float  # mean cell elongation (major / minor axis)
    nucleus_radius: float  # mean nucleus radius
    nucleus_aspect: float  # mean nucleus elongation
    nucleoli: float  # mean nucleoli per nucleus beyond the first
    mitochondria: float  # mean mitochondrial puncta per cell
    fibres: float  # weight of actin stress fibres against cortical actin
    amplitude: tuple[float, float, float, float, float, float]  # per channel: 8-bit level of a unit stain
    background: tuple[float, float, float, float, float, float]  # per channel: 8-bit background level


CELL_TYPE_MODELS: dict[str, CellTypeModel] = {
    # Endothelial: elongated, confluent, nuclei ~22 px across; bright perinuclear ER.
    "HUVEC": CellTypeModel(
        spacing=44,
        fill=0.85,
        clumping=0.3,
        cell_radius=34,
        cell_aspect=1.7,
        nucleus_radius=11,
        nucleus_aspect=1.35,
        nucleoli=2.0,
        mitochondria=50,
        fibres=0.7,
        amplitude=(15.8, 47.7, 5.6, 49.5, 6.9, 35.1),
        background=(2.6, 1.5, 9.8, 7.5, 0.5, 11.2),
    ),
    # Epithelial cobblestone, rounder cells, strong actin.
    "RPE": CellTypeModel(
        spacing=40,
        fill=0.85,
        clumping=0.3,
        cell_radius=30,
        cell_aspect=1.3,
        nucleus_radius=10.5,
        nucleus_aspect=1.25,
        nucleoli=2.0,
        mitochondria=50,
        fibres=0.9,
        amplitude=(11.3, 19.5, 21.0, 14.8, 11.5, 25.4),
        background=(2.9, 3.1, 8.5, 7.5, 2.1, 13.5),
    ),
    # Hepatocyte carcinoma: small, dense, clumped; bright everywhere.
    "HEPG2": CellTypeModel(
        spacing=26,
        fill=0.9,
        clumping=0.7,
        cell_radius=19,
        cell_aspect=1.2,
        nucleus_radius=8.5,
        nucleus_aspect=1.2,
        nucleoli=1.0,
        mitochondria=30,
        fibres=0.3,
        amplitude=(91.2, 28.6, 86.4, 79.8, 160.0, 67.6),
        background=(27.6, 18.5, 16.7, 33.8, 37.0, 31.0),
    ),
    # Osteosarcoma: large flat cells, big nuclei, many mitochondria.
    "U2OS": CellTypeModel(
        spacing=58,
        fill=0.8,
        clumping=0.3,
        cell_radius=45,
        cell_aspect=1.5,
        nucleus_radius=14,
        nucleus_aspect=1.35,
        nucleoli=3.0,
        mitochondria=90,
        fibres=0.9,
        amplitude=(31.6, 19.6, 11.1, 25.3, 7.4, 46.0),
        background=(5.7, 5.1, 8.4, 7.1, 1.1, 11.5),
    ),
}

#: Per-cell variation (log-sd) of sizes and stain levels inside a well: real but smaller than a moderate
#: siRNA's effect once averaged over the cells of a site.
CELL_SD = {"cell_size": 0.15, "cell_aspect": 0.2, "nucleus_size": 0.12, "nucleus_aspect": 0.1, "stain": 0.22}
#: Base optical blur (Gaussian sigma, output pixels) and camera noise (shot-noise gain, read noise; 8-bit units).
OPTICAL_BLUR_PX = 0.6
SHOT_NOISE_GAIN = 0.5
READ_NOISE = 0.5

_N_PER_CELL = 12  # per-candidate normal draws: sizes, aspects, stain levels, nucleus offset


def pixel_scale(image_size: int) -> float:
    """Output pixels per pixel of a 512-px site.

    Cells shrink with the square root of the image size: a 128-px site shows a quarter of the release's field
    of view at half its resolution, so it still holds a few dozen cells whose shapes are visible.
    """
    return math.sqrt(image_size / REFERENCE_SIZE)


@dataclass(frozen=True)
class SiteKey:
    """Which site to render: the random streams of its cells, textures and noise are keyed by it."""

    seed: int
    experiment: str
    plate: int
    well: str
    site: int


@dataclass(frozen=True)
class _Cells:
    """The cells of a site (kept candidates), in output pixels."""

    centre: np.ndarray  # (n, 2) x, y
    radius: np.ndarray  # (n,) cell radius (geometric mean of the semi-axes)
    aspect: np.ndarray  # (n,) major / minor
    angle: np.ndarray  # (n,) major-axis direction, radians
    nucleus_centre: np.ndarray  # (n, 2)
    nucleus_radius: np.ndarray  # (n,)
    nucleus_aspect: np.ndarray  # (n,)
    nucleus_angle: np.ndarray  # (n,)
    fibre_angle: np.ndarray  # (n,)
    fibre_phase: np.ndarray  # (n,)
    golgi_angle: np.ndarray  # (n,)
    stain: np.ndarray  # (n, 6) per-cell stain level multipliers


def render_site(
    key: SiteKey,
    image_size: int,
    model: CellTypeModel,
    biology: Phenotype,
    conditions: SiteConditions,
) -> np.ndarray:
    """Render one site as a (6, S, S) uint8 array.

    Random streams are keyed by the site, so the same key gives the same cells, textures and noise whatever
    the conditions: a batch effect only changes how those cells are grown (density, size) and imaged.
    """
    words = (key.experiment, key.plate, key.well, key.site)
    scale = pixel_scale(image_size)
    cells, keep = _place_cells(stream(key.seed, "cells", *words), image_size, scale, model, biology, conditions)
    tex = stream(key.seed, "texture", *words)
    stains = _paint(cells, keep, stream(key.seed, "spots", *words), tex, image_size, scale, model, biology)
    return _acquire(stains, stream(key.seed, "noise", *words), scale, model, conditions)


def _place_cells(
    rng: np.random.Generator,
    size: int,
    scale: float,
    model: CellTypeModel,
    biology: Phenotype,
    conditions: SiteConditions,
) -> tuple[_Cells, np.ndarray]:
    """Candidate cells on a jittered, rotated hexagonal lattice; a density-dependent subset is kept.

    Every candidate draws all its attributes whether kept or not, so a density change (batch effect or
    siRNA) adds or removes cells without moving the others.
    """
    spacing = model.spacing * scale
    margin = model.cell_radius * scale * 1.5
    span = size + 2 * margin
    rot = rng.uniform(0, math.pi)
    # lattice generous enough to cover the rotated square
    half = span * 0.75
    row_step = spacing * math.sqrt(3) / 2
    rows = np.arange(-half, half + row_step, row_step)
    cols = np.arange(-half, half + spacing, spacing)
    gx, gy = np.meshgrid(cols, rows)
    gx = gx + (np.arange(len(rows))[:, None] % 2) * spacing / 2
    lx, ly = gx.ravel(), gy.ravel()
    cx = size / 2 + lx * math.cos(rot) - ly * math.sin(rot)
    cy = size / 2 + lx * math.sin(rot) + ly * math.cos(rot)
    n = len(cx)
    jitter = rng.uniform(-0.38, 0.38, (n, 2)) * spacing
    cx, cy = cx + jitter[:, 0], cy + jitter[:, 1]
    u_keep = rng.random(n)
    z = rng.standard_normal((n, _N_PER_CELL))
    angle = rng.uniform(0, math.pi, n)
    nucleus_turn = rng.normal(0, 0.3, n)
    fibre_turn = rng.normal(0, 0.25, n)
    fibre_phase = rng.uniform(0, 2 * math.pi, n)
    golgi_angle = rng.uniform(0, 2 * math.pi, n)
    waves = rng.normal(0, 1, (3, 2)) * (2 * math.pi / (5 * spacing))
    wave_phase = rng.uniform(0, 2 * math.pi, 3)

    field = np.cos(np.outer(cx, waves[:, 0]) + np.outer(cy, waves[:, 1]) + wave_phase).sum(axis=1) / math.sqrt(1.5)
    p_keep = model.fill * np.exp(biology.cell_density + conditions.density + model.clumping * field)
    inside = (cx > -margin) & (cx < size + margin) & (cy > -margin) & (cy < size + margin)
    keep = inside & (u_keep < p_keep)

    size_log = biology.cell_size + conditions.size
    radius = model.cell_radius * scale * np.exp(size_log + CELL_SD["cell_size"] * z[:, 0])
    aspect = np.maximum(1.0, model.cell_aspect * np.exp(CELL_SD["cell_aspect"] * z[:, 1]))
    nucleus_radius = (
        model.nucleus_radius
        * scale
        * np.exp(biology.nucleus_size + 0.5 * conditions.size + CELL_SD["nucleus_size"] * z[:, 2])
    )
    nucleus_radius = np.minimum(nucleus_radius, 0.75 * radius)
    nucleus_aspect = np.maximum(
        1.0, model.nucleus_aspect * np.exp(biology.nucleus_elongation + CELL_SD["nucleus_aspect"] * z[:, 3])
    )
    stain = np.exp(CELL_SD["stain"] * z[:, 4:10])
    room = np.maximum(radius - nucleus_radius, 0.0) * 0.35
    nucleus_centre = np.stack([cx, cy], axis=1) + np.clip(z[:, 10:12], -1.5, 1.5) * room[:, None] * 0.5
    cells = _Cells(
        centre=np.stack([cx, cy], axis=1),
        radius=radius,
        aspect=aspect,
        angle=angle,
        nucleus_centre=nucleus_centre,
        nucleus_radius=nucleus_radius,
        nucleus_aspect=nucleus_aspect,
        nucleus_angle=angle + nucleus_turn,
        fibre_angle=angle + fibre_turn,
        fibre_phase=fibre_phase,
        golgi_angle=golgi_angle,
        stain=stain,
    )
    return cells, keep


def _take(cells: _Cells, keep: np.ndarray) -> _Cells:
    return _Cells(**{name: getattr(cells, name)[keep] for name in cells.__dataclass_fields__})


def _ellipse_terms(radius: np.ndarray, aspect: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Per ellipse (cos, sin, 1/major, 1/minor) for :func:`_ellipse_distance`; radius is the geometric mean."""
    root = np.sqrt(aspect)
    return np.stack([np.cos(angle), np.sin(angle), 1 / (radius * root), root / radius], axis=-1)


def _ellipse_distance(dx: np.ndarray, dy: np.ndarray, terms: np.ndarray) -> np.ndarray:
    """Distance in units of an ellipse's size (1 on its outline), from :func:`_ellipse_terms` rows."""
    c, s, inv_a, inv_b = terms[..., 0], terms[..., 1], terms[..., 2], terms[..., 3]
    u = (dx * c + dy * s) * inv_a
    v = (dy * c - dx * s) * inv_b
    return np.sqrt(u * u + v * v)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation."""
    field = gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return field / max(float(field.std()), 1e-6)


def _splat(size: int, x: np.ndarray, y: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian spots of peak ``weight`` at (x, y) (output pixels); spots outside the field are dropped."""
    ix, iy = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    ok = (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)
    flat = np.bincount(iy[ok] * size + ix[ok], weights=weight[ok], minlength=size * size)
    return gaussian_filter(flat.reshape(size, size), sigma, mode="constant") * (2 * math.pi * sigma**2)


def _spots_in_cells(
    rng: np.random.Generator, counts: np.ndarray, inner: np.ndarray, outer: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Owner index, radial fraction (``inner`` … ``outer`` of the owner's ellipse) and angle of every spot."""
    owner = np.repeat(np.arange(len(counts)), counts)
    t = rng.random(len(owner))
    rho = inner[owner] + (outer[owner] - inner[owner]) * t
    theta = rng.uniform(0, 2 * math.pi, len(owner))
    return owner, rho, theta


def _ellipse_points(
    centre: np.ndarray, radius: np.ndarray, aspect: np.ndarray, angle: np.ndarray, rho: np.ndarray, theta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Points at normalised radius ``rho`` and polar angle ``theta`` of ellipses (one ellipse per point)."""
    root = np.sqrt(aspect)
    u = rho * np.cos(theta) * radius * root
    v = rho * np.sin(theta) * radius / root
    c, s = np.cos(angle), np.sin(angle)
    return centre[:, 0] + u * c - v * s, centre[:, 1] + u * s + v * c


@dataclass(frozen=True)
class _SpotDraws:
    """Spot counts, positions and weights of every candidate cell, drawn before the cells are filtered."""

    n_mito: np.ndarray  # mitochondrial puncta per candidate
    n_golgi: np.ndarray  # Golgi pieces per candidate
    nucleoli: tuple[np.ndarray, np.ndarray, np.ndarray]  # owner, radial fraction and angle of every nucleolus
    nucleoli_w: np.ndarray  # peak weight of every nucleolus
    mito_reach: np.ndarray  # radial reach of every punctum between nucleus and membrane
    mito_theta: np.ndarray  # polar angle of every punctum
    mito_w: np.ndarray  # peak weight of every punctum
    golgi_off: np.ndarray  # (n, 2) scatter of every Golgi piece around its ribbon
    golgi_w: np.ndarray  # peak weight of every Golgi piece


def _draw_spots(spots: np.random.Generator, n_all: int, model: CellTypeModel, biology: Phenotype) -> _SpotDraws:
    """Every candidate's spots in a fixed order of draws (the stream's use does not depend on which cells stay)."""
    n_nucleoli = 1 + spots.poisson(model.nucleoli * math.exp(biology.nucleoli), n_all)
    n_mito = spots.poisson(model.mitochondria * math.exp(biology.mitochondria), n_all)
    n_golgi = 1 + spots.poisson(2.0 * math.exp(biology.golgi_dispersal), n_all)
    nucleoli = _spots_in_cells(spots, n_nucleoli, np.zeros(n_all), np.full(n_all, 0.6))
    nucleoli_w = spots.uniform(0.6, 1.4, len(nucleoli[0]))
    mito_reach = np.minimum(spots.exponential(0.45 * math.exp(biology.mito_spread), int(n_mito.sum())), 1.0)
    mito_theta = spots.uniform(0, 2 * math.pi, len(mito_reach))
    mito_w = spots.uniform(0.5, 1.5, len(mito_reach))
    golgi_off = spots.normal(0, 1, (int(n_golgi.sum()), 2))
    golgi_w = spots.uniform(0.6, 1.4, len(golgi_off))
    return _SpotDraws(n_mito, n_golgi, nucleoli, nucleoli_w, mito_reach, mito_theta, mito_w, golgi_off, golgi_w)


@dataclass(frozen=True)
class _Textures:
    """Smooth noise fields (S, S) at four grain sizes."""

    slow: np.ndarray  # ragged outlines, uneven actin and fibre waviness
    fine: np.ndarray  # ER granularity
    chromatin: np.ndarray  # DNA texture
    patchy: np.ndarray  # broken actin bundles


def _draw_textures(tex: np.random.Generator, size: int, scale: float) -> _Textures:
    """The four noise fields, in their fixed order of draws."""
    slow = _smooth_noise(tex, size, max(2.0, 12 * scale))
    fine = _smooth_noise(tex, size, max(0.5, 1.2 * scale))
    chromatin = _smooth_noise(tex, size, max(0.5, 1.0 * scale))
    patchy = _smooth_noise(tex, size, max(1.0, 4.0 * scale))
    return _Textures(slow, fine, chromatin, patchy)


@dataclass(frozen=True)
class _Pixels:
    """Per pixel (flattened): its position, owner cell and the soft masks of cell, nucleus and cytoplasm."""

    px: np.ndarray  # x of every pixel centre
    py: np.ndarray  # y of every pixel centre
    owner: np.ndarray  # index of the kept cell that owns the pixel
    cell_mask: np.ndarray  # soft cell mask, dimmed where cells touch
    gap_px: np.ndarray  # distance to the neighbour's border or the free edge
    nucleus: np.ndarray  # soft nucleus mask
    cyto: np.ndarray  # soft cytoplasm mask
    from_nucleus_px: np.ndarray  # distance outside the owner's nucleus
    rn: np.ndarray  # owner's nucleus radius
    stain: np.ndarray  # owner's per-channel stain level


def _pixels(cells: _Cells, size: int, slow: np.ndarray) -> _Pixels:
    """Who owns each pixel: the nearest cell in ellipse-normalised distance among the 4 nearest centres."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    px, py = xx.ravel(), yy.ravel()
    k = min(4, len(cells.radius))
    _, idx = cKDTree(cells.centre).query(np.stack([px, py], axis=1), k=k)
    idx = idx.reshape(len(px), k)
    cell_terms = _ellipse_terms(cells.radius, cells.aspect, cells.angle)
    d = _ellipse_distance(px[:, None] - cells.centre[idx, 0], py[:, None] - cells.centre[idx, 1], cell_terms[idx])
    order = np.argsort(d, axis=1)
    owner = np.take_along_axis(idx, order[:, :1], axis=1)[:, 0]
    d1 = np.take_along_axis(d, order[:, :1], axis=1)[:, 0]
    d2 = np.take_along_axis(d, order[:, 1:2], axis=1)[:, 0] if k > 1 else np.full_like(d1, np.inf)
    d1 = d1 * (1 + 0.08 * slow.ravel())  # ragged cell outlines
    r = cells.radius[owner]
    cell_mask = np.clip((1 - d1) * r / _EDGE_PX + 0.5, 0, 1)
    gap_px = np.minimum((d2 - d1) * r * 0.5, (1 - d1) * r)  # to the neighbour's border or the free edge
    cell_mask = cell_mask * (1 - 0.35 * np.exp(-np.maximum(gap_px, 0) / 0.8))

    rn = cells.nucleus_radius[owner]
    nucleus_terms = _ellipse_terms(cells.nucleus_radius, cells.nucleus_aspect, cells.nucleus_angle)
    dn = _ellipse_distance(
        px - cells.nucleus_centre[owner, 0], py - cells.nucleus_centre[owner, 1], nucleus_terms[owner]
    )
    nucleus = np.minimum(np.clip((1 - dn) * rn / _EDGE_PX + 0.5, 0, 1), cell_mask)
    cyto = cell_mask * (1 - nucleus)
    from_nucleus_px = np.maximum(dn - 1, 0) * rn
    return _Pixels(px, py, owner, cell_mask, gap_px, nucleus, cyto, from_nucleus_px, rn, cells.stain[owner])


def _spot_images(
    cells: _Cells, keep: np.ndarray, draws: _SpotDraws, size: int, scale: float, biology: Phenotype
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nucleoli, mitochondria and Golgi images (flattened) of the kept cells only."""
    n_all = len(keep)
    kept_index = np.full(n_all, -1)
    kept_index[keep] = np.arange(len(cells.radius))
    nucleoli_sigma = max(0.5, 1.6 * scale)
    o, rho, theta = draws.nucleoli
    sel = keep[o]
    o_k = kept_index[o[sel]]
    x, y = _ellipse_points(
        cells.nucleus_centre[o_k],
        cells.nucleus_radius[o_k],
        cells.nucleus_aspect[o_k],
        cells.nucleus_angle[o_k],
        np.sqrt(rho[sel] / 0.6) * 0.6,
        theta[sel],
    )
    nucleoli_img = _splat(size, x, y, draws.nucleoli_w[sel] * cells.stain[o_k, 3], nucleoli_sigma).ravel()

    mito_owner = np.repeat(np.arange(n_all), draws.n_mito)
    sel = keep[mito_owner]
    m_k = kept_index[mito_owner[sel]]
    inner = cells.nucleus_radius[m_k] / cells.radius[m_k]
    x, y = _ellipse_points(
        cells.centre[m_k],
        cells.radius[m_k],
        cells.aspect[m_k],
        cells.angle[m_k],
        inner + (1 - inner) * draws.mito_reach[sel] * 0.95,
        draws.mito_theta[sel],
    )
    mito_img = _splat(size, x, y, draws.mito_w[sel] * cells.stain[m_k, 4], max(0.5, 1.0 * scale)).ravel()

    golgi_owner = np.repeat(np.arange(n_all), draws.n_golgi)
    sel = keep[golgi_owner]
    g_k = kept_index[golgi_owner[sel]]
    reach = cells.nucleus_radius[g_k] * 1.1
    gx = cells.nucleus_centre[g_k, 0] + reach * np.cos(cells.golgi_angle[g_k])
    gy = cells.nucleus_centre[g_k, 1] + reach * np.sin(cells.golgi_angle[g_k])
    scatter = 0.3 * cells.nucleus_radius[g_k] * math.exp(biology.golgi_dispersal)
    golgi_pieces = draws.n_golgi[golgi_owner[sel]]
    golgi_img = _splat(
        size,
        gx + draws.golgi_off[sel, 0] * scatter,
        gy + draws.golgi_off[sel, 1] * scatter,
        draws.golgi_w[sel] * cells.stain[g_k, 5] * 1.6 / np.sqrt(golgi_pieces),
        max(0.6, 2.2 * scale),
    ).ravel()
    return nucleoli_img, mito_img, golgi_img


def _actin(
    cells: _Cells, pix: _Pixels, textures: _Textures, scale: float, model: CellTypeModel, biology: Phenotype
) -> np.ndarray:
    """Actin (flattened): cortical rim plus stress fibres along each cell's axis."""
    owner, px, py = pix.owner, pix.px, pix.py
    fibre_cos, fibre_sin = np.cos(cells.fibre_angle)[owner], np.sin(cells.fibre_angle)[owner]
    across = (py - cells.centre[owner, 1]) * fibre_cos - (px - cells.centre[owner, 0]) * fibre_sin
    period = max(2.5, 7.0 * scale)
    wave = np.cos(2 * math.pi * across / period + cells.fibre_phase[owner] + 2.5 * textures.slow.ravel())
    fibres = np.square(np.square((1 + wave) / 2)) * np.clip(
        0.5 + 0.6 * textures.patchy.ravel(), 0, None
    )  # broken, uneven bundles
    cortex = np.exp(-np.maximum(pix.gap_px, 0) / max(0.7, 1.5 * scale))
    fibre_weight = model.fibres * math.exp(biology.actin_fibres)
    return pix.cell_mask * (0.3 + 0.8 * cortex + fibre_weight * fibres)


def _paint(
    all_cells: _Cells,
    keep: np.ndarray,
    spots: np.random.Generator,
    tex: np.random.Generator,
    size: int,
    scale: float,
    model: CellTypeModel,
    biology: Phenotype,
) -> np.ndarray:
    """The six unit stains (6, S, S) of the kept cells, before the microscope."""
    # spot counts and positions are drawn for every candidate (fixed stream use), then filtered
    draws = _draw_spots(spots, len(keep), model, biology)
    textures = _draw_textures(tex, size, scale)

    cells = _take(all_cells, keep)
    out = np.zeros((N_CHANNELS, size, size))
    if len(cells.radius) == 0:
        return out

    pix = _pixels(cells, size, textures.slow)
    nucleoli_img, mito_img, golgi_img = _spot_images(cells, keep, draws, size, scale, biology)
    actin = _actin(cells, pix, textures, scale, model, biology)
    nucleus, cyto, stain, from_nucleus_px = pix.nucleus, pix.cyto, pix.stain, pix.from_nucleus_px
    er_reach = 0.8 * pix.rn * math.exp(0.5 * biology.er)
    rna_reach = 0.6 * pix.rn
    fine_f, chrom_f, slow_f = textures.fine.ravel(), textures.chromatin.ravel(), textures.slow.ravel()
    out[0] = (
        nucleus * stain[:, 0] * math.exp(biology.dna) * (1 + 0.22 * chrom_f) * (1 - 0.3 * np.clip(nucleoli_img, 0, 1))
    ).reshape(size, size)
    out[1] = (
        (cyto * (0.25 + np.exp(-from_nucleus_px / er_reach)) * (1 + 0.35 * fine_f) + 0.12 * nucleus)
        * stain[:, 1]
        * math.exp(biology.er)
    ).reshape(size, size)
    out[2] = (actin * (1 + 0.2 * slow_f) * (1 - 0.4 * nucleus) * stain[:, 2]).reshape(size, size)
    out[3] = (
        (nucleus * 0.3 + cyto * 0.3 * np.exp(-from_nucleus_px / rna_reach)) * stain[:, 3] * math.exp(biology.rna)
        + nucleoli_img * nucleus * math.exp(biology.rna)
    ).reshape(size, size)
    out[4] = (cyto * 0.15 * stain[:, 4] + mito_img * pix.cell_mask).reshape(size, size)
    out[5] = ((cyto * 0.12 * stain[:, 5] + golgi_img * pix.cell_mask) * math.exp(biology.golgi)).reshape(size, size)
    return np.clip(out, 0, None)


def illumination_field(size: int, conditions: SiteConditions) -> np.ndarray:
    """Relative illumination over the field: vignetting around a centre, times a linear tilt."""
    axis = (np.arange(size) + 0.5) / size
    x, y = np.meshgrid(axis, axis)
    cx, cy = conditions.illumination_centre
    r2 = ((x - cx) ** 2 + (y - cy) ** 2) / 0.5
    tx, ty = conditions.illumination_tilt
    field = (1 - conditions.vignetting * r2) * (1 + tx * (x - 0.5) + ty * (y - 0.5))
    return np.clip(field, 0.2, None)


def _acquire(
    stains: np.ndarray,
    noise: np.random.Generator,
    scale: float,
    model: CellTypeModel,
    conditions: SiteConditions,
) -> np.ndarray:
    """Image unit stains: focus blur, illumination, gain, background, gamma, shot and read noise, 8 bits."""
    size = stains.shape[-1]
    shot = noise.standard_normal(stains.shape)
    read = noise.standard_normal(stains.shape)
    sigma = math.hypot(OPTICAL_BLUR_PX, conditions.blur_px * scale)
    field = illumination_field(size, conditions)
    amplitude = np.asarray(model.amplitude) * conditions.gain
    background = np.asarray(model.background) * conditions.background
    out = np.empty(stains.shape, dtype=np.uint8)
    for c in range(N_CHANNELS):
        x = gaussian_filter(stains[c], sigma, mode="reflect") * amplitude[c] * field + background[c]
        x = 255.0 * (np.clip(x, 0, None) / 255.0) ** conditions.gamma[c]
        x = x + np.sqrt(SHOT_NOISE_GAIN * x) * shot[c] + READ_NOISE * read[c]
        out[c] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out
