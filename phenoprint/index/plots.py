"""PNG figures of batch mixing: 2-D PCA projections of embeddings coloured by experiment and by siRNA, one panel per
stage (e.g. plain embeddings, adapted embeddings, after centering), every axis, panel and colour labelled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from phenoprint.data.table import EmbeddingTable
from phenoprint.index.centering import l2_normalize
from phenoprint.index.config import IndexConfig
from phenoprint.index.metrics import silhouette
from phenoprint.index.table_centering import center_table, fit_configured

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: siRNAs given their own colour in the by-siRNA panels (the rest are drawn grey): more are unreadable.
N_COLOURED_SIRNAS = 10
#: Rows per cell type in the silhouette of a panel's title (it costs O(n²)).
SILHOUETTE_ROWS = 1500
FIGURES = ("projection_by_experiment", "projection_by_sirna")


@dataclass(frozen=True)
class Panel:
    """One stage of the embeddings to project: what the rows are at that stage, and their vectors."""

    title: str  # e.g. "plain embeddings (no adaptation)"
    vectors: np.ndarray  # (n, d), the same rows in the same order in every panel


@dataclass(frozen=True)
class Projection:
    """A panel's 2-D PCA coordinates and what they keep."""

    xy: np.ndarray  # (n, 2)
    explained: tuple[float, float]  # share of the variance along PC1 and PC2


def plots(
    table: EmbeddingTable, config: IndexConfig, out_dir: str | Path, *, max_points: int = 4000, seed: int = 0
) -> list[Path]:
    """Centre the table as an index would and write ``projection_by_experiment.png`` and ``projection_by_sirna.png``
    (before and after centering).

    Returns:
        The written files.
    """
    table = table.aggregate_sites()
    stats = fit_configured(table, config)
    after = center_table(table, stats, config.per_plate)
    panels = [
        Panel("before centering", l2_normalize(table.features)),
        Panel(f"after {config.center} centering on {config.reference}", after),
    ]
    return projection_plots(panels, table, out_dir, max_points=max_points, seed=seed)


def pca_2d(x: np.ndarray) -> Projection:
    """The first two principal-component coordinates of the rows (their own PCA) and the variance they keep."""
    x = np.asarray(x, dtype=np.float64)
    z = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    proj = z @ vt[:2].T
    if proj.shape[1] < 2:
        proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    var = s**2
    total = float(var.sum()) or 1.0
    shares = [float(v) / total for v in var[:2]] + [0.0, 0.0]
    return Projection(proj, (shares[0], shares[1]))


def batch_silhouette(vectors: np.ndarray, experiments: np.ndarray, cell_types: np.ndarray, seed: int = 0) -> float:
    """Silhouette by experiment (cosine), within each cell type, averaged: near 1 the batches stand apart, near 0
    or below they are mixed. NaN when no cell type has two experiments."""
    rng = np.random.default_rng(seed)
    values = []
    for cell_type in np.unique(cell_types):
        rows = np.flatnonzero(cell_types == cell_type)
        if len(rows) > SILHOUETTE_ROWS:
            rows = np.sort(rng.choice(rows, SILHOUETTE_ROWS, replace=False))
        s = silhouette(vectors[rows], experiments[rows])
        if s is not None:
            values.append(s)
    return float(np.mean(values)) if values else float("nan")


def projection_figures(
    panels: Sequence[Panel], table: EmbeddingTable, *, max_points: int = 4000, seed: int = 0
) -> dict[str, Figure]:
    """The two figures (one panel per stage, each with its own PCA), labelled: method and variance on the axes,
    the stage and its batch silhouette in each title, a legend of the colours.

    Args:
        panels: the stages, all of ``table``'s rows in its order.
        table: the rows' metadata (experiment, cell type, siRNA).
        max_points: rows drawn (a fixed random sample beyond that).
        seed: for the sample.

    Raises:
        ValueError: no panel, or a panel whose rows do not match the table.
    """
    if not panels:
        raise ValueError("projection figures need at least one panel")
    n = len(table)
    for p in panels:
        if p.vectors.ndim != 2 or len(p.vectors) != n:
            raise ValueError(f"panel {p.title!r} has vectors of shape {p.vectors.shape}; expected ({n}, d)")
    rows = np.arange(n)
    if n > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    exps = table.meta["Metadata_experiment"].to_numpy(dtype=str)
    cells = table.meta["Metadata_cell_type"].to_numpy(dtype=str)
    labs = table.labels()
    projected = [(p, pca_2d(p.vectors[rows]), batch_silhouette(p.vectors, exps, cells, seed)) for p in panels]
    method = (
        f"Each panel: PCA of its unit vectors, {len(rows):,} of {n:,} wells; "
        "silhouette by experiment within cell type: 1 = batches apart, 0 = mixed"
    )
    return {
        "projection_by_experiment": _by_experiment(projected, exps[rows], method),
        "projection_by_sirna": _by_sirna(projected, labs[rows], method),
    }


_Projected = list[tuple[Panel, Projection, float]]  # (panel, its 2-D PCA, its batch silhouette) per stage


def _figure_with_axes(projected: _Projected) -> tuple[Figure, list, float]:
    """A figure with one labelled panel per stage, its axes, and its width (inches)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = 4.6 * len(projected) + 1.8
    fig = Figure(figsize=(width, 4.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(projected), squeeze=False)[0]
    for ax, (panel, proj, sil) in zip(axes, projected, strict=True):
        ax.set_xlabel(f"PC1 ({proj.explained[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({proj.explained[1]:.0%} of variance)")
        ax.set_title(f"{panel.title}\nsilhouette by experiment {sil:.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, list(axes), width


def _by_experiment(projected: _Projected, exps: np.ndarray, method: str) -> Figure:
    """Every drawn well coloured by its experiment."""
    import matplotlib
    from matplotlib.lines import Line2D

    exp_names, exp_codes = np.unique(exps, return_inverse=True)
    fig, axes, width = _figure_with_axes(projected)
    cmap = matplotlib.colormaps["tab20"]
    colours = [cmap(i % 20) for i in range(len(exp_names))]
    for ax, (_, proj, _) in zip(axes, projected, strict=True):
        ax.scatter(proj.xy[:, 0], proj.xy[:, 1], c=[colours[c] for c in exp_codes], s=5, alpha=0.7, linewidths=0)
    handles = [Line2D([], [], ls="", marker="o", color=colours[i], label=name) for i, name in enumerate(exp_names)]
    fig.legend(handles=handles, title="experiment", loc="center right", fontsize=7, title_fontsize=8)
    fig.suptitle(f"Wells coloured by experiment (batch). {method}", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / width, 0.95))
    return fig


def _by_sirna(projected: _Projected, sub: np.ndarray, method: str) -> Figure:
    """The most replicated siRNAs of the drawn wells in colour, the others grey."""
    import matplotlib
    from matplotlib.lines import Line2D

    known = sub[sub >= 0]
    ids, counts = np.unique(known, return_counts=True)
    top = np.sort(ids[np.argsort(-counts, kind="stable")[:N_COLOURED_SIRNAS]])
    coloured = np.isin(sub, top)
    codes = np.searchsorted(top, sub[coloured])
    tab10 = matplotlib.colormaps["tab10"]
    fig, axes, width = _figure_with_axes(projected)
    for ax, (_, proj, _) in zip(axes, projected, strict=True):
        ax.scatter(proj.xy[~coloured, 0], proj.xy[~coloured, 1], c="0.85", s=3, linewidths=0)
        ax.scatter(proj.xy[coloured, 0], proj.xy[coloured, 1], c=[tab10(c % 10) for c in codes], s=14, linewidths=0)
    handles = [Line2D([], [], ls="", marker="o", color=tab10(i % 10), label=str(s)) for i, s in enumerate(top)]
    handles.append(Line2D([], [], ls="", marker="o", color="0.85", label="other siRNAs"))
    fig.legend(handles=handles, title="siRNA id", loc="center right", fontsize=7, title_fontsize=8)
    fig.suptitle(
        f"The {len(top)} most replicated siRNAs in colour (replicates of one siRNA should gather). {method}",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / width, 0.95))
    return fig


def projection_plots(
    panels: Sequence[Panel],
    table: EmbeddingTable,
    out_dir: str | Path,
    *,
    max_points: int = 4000,
    seed: int = 0,
    dpi: int = 100,
) -> list[Path]:
    """Write :func:`projection_figures` as ``projection_by_experiment.png`` and ``projection_by_sirna.png``.

    Returns:
        The written files.
    """
    from phenoprint.atomic import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in projection_figures(panels, table, max_points=max_points, seed=seed).items():
        path = out / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
        written.append(path)
    return written
