"""PNG figures of batch mixing: 2-D projections coloured by experiment and by siRNA, before and after centering."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phenoprint.index.build import IndexConfig, center_table, fit_table_centering
from phenoprint.index.centering import l2_normalize
from phenoprint.index.table import EmbeddingTable

#: siRNAs given their own colour in the by-siRNA panels (the rest are drawn grey): more are unreadable.
N_COLOURED_SIRNAS = 10


def plots(
    table: EmbeddingTable, config: IndexConfig, out_dir: str | Path, *, max_points: int = 4000, seed: int = 0
) -> list[Path]:
    """Centre the table as an index would and write ``projection_by_experiment.png`` and ``projection_by_sirna.png``.

    Returns:
        The written files.
    """
    table = table.aggregate_sites()
    stats = fit_table_centering(
        table, config.center, config.reference, pca_dim=config.pca_dim, ridge=config.ridge, per_plate=config.per_plate
    )
    after = center_table(table, stats, config.per_plate)
    return projection_plots(
        l2_normalize(table.features),
        after,
        table.meta["Metadata_experiment"].to_numpy(dtype=str),
        table.labels(),
        out_dir,
        title=f"{config.center} on {config.reference}",
        max_points=max_points,
        seed=seed,
    )


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal-component coordinates of the rows (their own PCA)."""
    x = np.asarray(x, dtype=np.float64)
    z = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    proj = z @ vt[:2].T
    return proj if proj.shape[1] == 2 else np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))


def projection_plots(
    before: np.ndarray,
    after: np.ndarray,
    experiments: np.ndarray,
    labels: np.ndarray,
    out_dir: str | Path,
    *,
    title: str = "centred",
    max_points: int = 4000,
    seed: int = 0,
) -> list[Path]:
    """Write the two figures (before | after panels) for given vectors; each panel has its own PCA.

    Args:
        before: (n, d) vectors before centering.
        after: (n, d) the same rows after centering.
        experiments: (n,) experiment of each row.
        labels: (n,) siRNA of each row (-1: unknown).
        out_dir: created if needed.
        title: names the centering in the right-hand panel.
        max_points: rows drawn (a fixed random sample beyond that).
        seed: for the sample.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(before)
    rows = np.arange(n)
    if n > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    panels = [("before centering", pca_2d(before[rows])), (f"after ({title})", pca_2d(after[rows]))]
    exps = np.asarray(experiments).astype(str)[rows]
    labs = np.asarray(labels).astype(np.int64)[rows]
    written = []

    exp_names, exp_codes = np.unique(exps, return_inverse=True)
    fig = Figure(figsize=(12, 5.5))
    FigureCanvasAgg(fig)
    for ax, (name, xy) in zip(fig.subplots(1, 2), panels, strict=True):
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=exp_codes, cmap="tab20", s=4, alpha=0.7, linewidths=0)
        ax.set_title(f"{name}: coloured by experiment")
        ax.set_xticks([])
        ax.set_yticks([])
    handles, _ = sc.legend_elements(num=None)
    if len(exp_names) <= 20 and len(handles) == len(exp_names):
        fig.legend(handles, list(exp_names), loc="center right", fontsize=7)
    path = out / "projection_by_experiment.png"
    fig.savefig(path, dpi=110)
    written.append(path)

    known = labs[labs >= 0]
    ids, counts = np.unique(known, return_counts=True)
    top = ids[np.argsort(-counts, kind="stable")[:N_COLOURED_SIRNAS]]
    fig = Figure(figsize=(12, 5.5))
    FigureCanvasAgg(fig)
    coloured = np.isin(labs, top)
    codes = np.searchsorted(np.sort(top), labs[coloured])
    for ax, (name, xy) in zip(fig.subplots(1, 2), panels, strict=True):
        ax.scatter(xy[~coloured, 0], xy[~coloured, 1], c="0.85", s=3, linewidths=0)
        ax.scatter(xy[coloured, 0], xy[coloured, 1], c=codes, cmap="tab10", s=14, linewidths=0)
        ax.set_title(f"{name}: the {len(top)} most replicated siRNAs")
        ax.set_xticks([])
        ax.set_yticks([])
    path = out / "projection_by_sirna.png"
    fig.savefig(path, dpi=110)
    written.append(path)
    return written
