"""Projection figures are written as PNGs (Agg, no display)."""

from __future__ import annotations

from pathlib import Path

from phenoprint.index.build import IndexConfig
from phenoprint.index.plots import plots
from phenoprint.index.table import EmbeddingTable

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_write_pngs_before_and_after_centering(small_table: EmbeddingTable, tmp_path: Path) -> None:
    written = plots(small_table, IndexConfig(center="tvn"), tmp_path / "figs", max_points=200)
    assert [p.name for p in written] == ["projection_by_experiment.png", "projection_by_sirna.png"]
    for p in written:
        assert p.read_bytes()[:8] == PNG_MAGIC
        assert p.stat().st_size > 10_000
