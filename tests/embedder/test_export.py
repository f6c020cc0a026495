"""Embedding export: table columns, fingerprint, per-site rows, and agreement with the in-memory path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from phenoprint.data.table import read_embeddings
from phenoprint.embedder.data import well_table
from phenoprint.embedder.export import export_embeddings, select_wells
from phenoprint.embedder.inference import WellImages, load_model
from phenoprint.errors import UnknownExperimentError


@pytest.fixture(scope="module")
def run_dir(tiny_run: Path) -> Path:
    return tiny_run


def test_export_writes_the_embedding_table_with_the_fingerprint(run_dir: Path, fake_source, tmp_path: Path) -> None:
    model = load_model(run_dir, "cpu")
    path = export_embeddings(model, fake_source, tmp_path / "e.parquet", progress=False)
    table = read_embeddings(path)
    assert len(table) == len(well_table(fake_source.metadata))
    assert table.dim == 16
    assert table.feature_names[:2] == ("emb_0000", "emb_0001")
    assert {
        "Metadata_experiment",
        "Metadata_plate",
        "Metadata_well",
        "Metadata_cell_type",
        "Metadata_well_type",
        "Metadata_sirna_id",
    } <= set(table.meta.columns)
    np.testing.assert_allclose(np.linalg.norm(table.features, axis=1), 1.0, atol=1e-5)
    assert table.fingerprint == model.fingerprint
    assert b"phenoprint" in pq.read_schema(path).metadata


def test_per_site_export_has_two_rows_per_well(run_dir: Path, fake_source, tmp_path: Path) -> None:
    model = load_model(run_dir, "cpu")
    table = read_embeddings(
        export_embeddings(model, fake_source, tmp_path / "s.parquet", per_site=True, progress=False)
    )
    n_wells = len(well_table(fake_source.metadata))
    assert len(table) == 2 * n_wells
    assert sorted(table.meta.Metadata_site.unique()) == [1, 2]
    assert not table.meta.duplicated(["Metadata_experiment", "Metadata_well", "Metadata_site"]).any()


def test_batch_export_agrees_with_the_in_memory_path(run_dir: Path, fake_source, tmp_path: Path) -> None:
    model = load_model(run_dir, "cpu")
    wells = select_wells(fake_source.metadata, ("RPE-01",))
    table = read_embeddings(
        export_embeddings(model, fake_source, tmp_path / "r.parquet", wells=wells, tta=8, progress=False)
    )
    row = wells.iloc[3]
    sites = [fake_source.load(row.experiment, row.plate, row.well, s) for s in (1, 2)]
    well_vec, site_vecs = model.embed_sites(np.stack(sites), tta=8)
    np.testing.assert_allclose(table.features[3], well_vec, atol=1e-4)  # batched vs single: float rounding
    assert site_vecs.shape == (2, 16)


def test_bn_adaptation_changes_the_vectors_but_keeps_them_unit(run_dir: Path, fake_source, tmp_path: Path) -> None:
    model = load_model(run_dir, "cpu")
    plain = read_embeddings(export_embeddings(model, fake_source, tmp_path / "a.parquet", progress=False))
    adapted = read_embeddings(
        export_embeddings(model, fake_source, tmp_path / "b.parquet", bn_adapt=True, progress=False)
    )
    assert not np.allclose(plain.features, adapted.features)
    np.testing.assert_allclose(np.linalg.norm(adapted.features, axis=1), 1.0, atol=1e-5)
    assert adapted.info["bn_adapt"] is True


def test_select_wells(fake_source) -> None:
    controls = select_wells(fake_source.metadata, ("HUVEC-01",), controls_only=True)
    assert set(controls.well_type) == {"positive_control"}
    with pytest.raises(UnknownExperimentError, match="NOPE"):
        select_wells(fake_source.metadata, ("NOPE-01",))


def test_model_with_experiment_normalization_refuses_in_memory_embedding(run_dir: Path) -> None:
    model = load_model(run_dir, "cpu")
    model.config = replace(model.config, normalization="experiment")
    with pytest.raises(ValueError, match="per-experiment channel statistics"):
        model.embed_sites(np.zeros((1, 6, 24, 24), dtype=np.uint8))
    stats = (np.full(6, 100.0), np.full(6, 20.0))
    well, sites = model.embed_sites(np.zeros((1, 6, 24, 24), dtype=np.uint8), channel_stats=stats)
    assert well.shape == (16,)
    assert sites.shape == (1, 16)


def test_embed_batch_equals_one_well_at_a_time(run_dir: Path, fake_source) -> None:
    model = load_model(run_dir, "cpu")
    wells = [
        WellImages(np.stack([fake_source.load("HUVEC-01", 1, w, s) for s in (1, 2)]))
        for w in fake_source.metadata.well.unique()[:3]
    ]
    together = model.embed_batch(wells)
    for w, t in zip(wells, together, strict=True):
        alone, _ = model.embed_sites(w.sites)
        np.testing.assert_allclose(t.well, alone, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(S, 6, H, W\)"):
        model.embed_batch([WellImages(np.zeros((0, 6, 8, 8), dtype=np.uint8))])


def test_embedding_throughput_reports_both_rates_and_their_ratio(run_dir: Path, fake_source) -> None:
    from phenoprint.embedder.throughput import embedding_throughput

    wells = well_table(fake_source.metadata)
    got = embedding_throughput(load_model(run_dir, "cpu"), fake_source, wells, batch_size=4)
    assert got["wells"] == len(wells)
    assert got["sites"] == sum(len(s) for s in wells.sites)
    assert got["pipeline_wells_per_s"] > 0
    assert got["model_only_wells_per_s"] > 0
    ratio = got["pipeline_wells_per_s"] / got["model_only_wells_per_s"]
    assert got["ratio_pipeline_to_model"] == pytest.approx(ratio, rel=0.05)
    with pytest.raises(ValueError, match="no wells"):
        embedding_throughput(load_model(run_dir, "cpu"), fake_source, wells.head(0))
