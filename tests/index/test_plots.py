"""Projection figures: written as PNGs (Agg, no display), every panel saying what it shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phenoprint.data.table import EmbeddingTable
from phenoprint.index.centering import l2_normalize
from phenoprint.index.config import IndexConfig
from phenoprint.index.plots import Panel, batch_silhouette, pca_2d, plots, projection_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_write_pngs_before_and_after_centering(small_table: EmbeddingTable, tmp_path: Path) -> None:
    written = plots(small_table, IndexConfig(center="tvn", mode="centroid"), tmp_path / "figs", max_points=200)
    assert [p.name for p in written] == ["projection_by_experiment.png", "projection_by_sirna.png"]
    for p in written:
        assert p.read_bytes()[:8] == PNG_MAGIC
        assert p.stat().st_size > 10_000


def test_every_panel_names_its_axes_method_stage_and_colours(small_table: EmbeddingTable) -> None:
    x = l2_normalize(small_table.features)
    panels = [Panel("plain", x), Panel("adapted", x[:, ::-1].copy()), Panel("centred", l2_normalize(x - x.mean(0)))]
    figures = projection_figures(panels, small_table)
    assert set(figures) == {"projection_by_experiment", "projection_by_sirna"}
    for name, fig in figures.items():
        axes = [ax for ax in fig.axes if ax.get_title()]
        assert [ax.get_title().split("\n")[0] for ax in axes] == ["plain", "adapted", "centred"]
        for ax in axes:
            assert ax.get_xlabel().startswith("PC1 (")
            assert ax.get_xlabel().endswith("% of variance)")
            assert ax.get_ylabel().startswith("PC2 (")
            assert "silhouette by experiment" in ax.get_title()
        assert "PCA" in fig._suptitle.get_text(), name
        legend = fig.legends[0]
        labels = [t.get_text() for t in legend.get_texts()]
        if name == "projection_by_experiment":
            assert legend.get_title().get_text() == "experiment"
            assert labels == small_table.experiments
        else:
            assert legend.get_title().get_text() == "siRNA id"
            assert labels[-1] == "other siRNAs"


def test_pca_2d_reports_the_variance_it_keeps() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) * np.array([5.0, 2.0, 0.1])
    proj = pca_2d(x)
    assert proj.xy.shape == (200, 2)
    var = x.var(axis=0)
    assert proj.explained[0] == pytest.approx(var[0] / var.sum(), abs=0.03)
    assert proj.explained[1] == pytest.approx(var[1] / var.sum(), abs=0.03)


def test_batch_silhouette_is_high_for_separate_batches_and_low_for_mixed() -> None:
    rng = np.random.default_rng(0)
    exps = np.repeat(["A-1", "A-2"], 50)
    cells = np.repeat("A", 100)
    apart = np.concatenate([rng.normal(size=(50, 4)) + 10, rng.normal(size=(50, 4)) - 10])
    mixed = rng.normal(size=(100, 4))
    assert batch_silhouette(apart, exps, cells) > 0.5
    assert abs(batch_silhouette(mixed, exps, cells)) < 0.1


def test_panels_must_hold_every_row(small_table: EmbeddingTable) -> None:
    with pytest.raises(ValueError, match="expected"):
        projection_figures([Panel("short", small_table.features[:3])], small_table)
