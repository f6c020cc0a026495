"""New-batch onboarding end to end on the tiny synthetic preset: scripts/build_index.py and phenoprint build-index."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from phenoprint.data.source import PngSource
from phenoprint.data.synth import preset_config, synthesize
from phenoprint.data.table import read_embeddings
from phenoprint.embedder.config import ModelConfig, TrainConfig
from phenoprint.embedder.export import export_embeddings, select_wells
from phenoprint.embedder.inference import load_model
from phenoprint.embedder.record import EmbedderRecord
from phenoprint.embedder.train import train
from phenoprint.errors import EmbeddingTableError, MetadataError
from phenoprint.index.config import IndexConfig
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.onboard import embedding_settings, onboard_experiment

PROJECT = Path(__file__).resolve().parents[1]
TARGET = "HUVEC-02"


def _load_script():
    spec = importlib.util.spec_from_file_location("build_index_script", PROJECT / "scripts" / "build_index.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """The tiny preset, a model trained on its train experiments, their embeddings, and a new batch whose
    metadata labels only the control wells of TARGET."""
    base = tmp_path_factory.mktemp("onboard")
    data = base / "data"
    synthesize(preset_config("tiny"), data, workers=1, progress=False)
    source = PngSource(data)
    n_classes = int(source.metadata.sirna_id.max()) + 1
    config = TrainConfig(
        model=ModelConfig(backbone="resnet10t", embedding_dim=16, num_classes=n_classes),
        image_size=32,
        epochs=2,
        batch_size=8,
        workers=0,
        device="cpu",
        normalization="experiment",
        holdout=(TARGET, "RPE-02"),
        checkpoint_every=1000,
    )
    train(config, source, base / "run", progress=False)
    model = load_model(base / "run", "cpu")
    reference_wells = select_wells(source.metadata, ("HUVEC-01", "RPE-01"))
    export_embeddings(model, source, base / "reference.parquet", wells=reference_wells, progress=False)
    # the new batch: same images, metadata that labels only TARGET's controls
    batch = base / "batch"
    batch.mkdir()
    (batch / "images").symlink_to(data / "images")
    meta = pd.read_csv(data / "metadata.csv")
    meta = meta[meta.experiment == TARGET].copy()
    meta.loc[meta.well_type == "treatment", ["sirna", "sirna_id"]] = [None, None]
    meta.to_csv(batch / "metadata.csv", index=False)
    return {"data": data, "run": base / "run", "reference": base / "reference.parquet", "batch": batch, "base": base}


def test_build_index_script_onboards_a_batch_from_its_controls(tiny: dict[str, Path]) -> None:
    out = tiny["base"] / "indexes" / TARGET
    queries = tiny["base"] / "queries.parquet"
    argv = [
        "--model",
        str(tiny["run"]),
        "--data",
        str(tiny["batch"]),
        "--experiment",
        TARGET,
        "--out",
        str(out),
        "--reference",
        str(tiny["reference"]),
        "--center",
        "center",
        "--queries-out",
        str(queries),
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    assert _load_script().main(argv) == 0
    model = load_model(tiny["run"], "cpu")
    index = ExperimentIndex.load(out, expected_fingerprint=model.fingerprint, expected_dim=16)
    entries = index.entries
    own = entries[entries.experiment == TARGET]
    assert len(own) > 0
    assert set(own.kind) == {"control"}
    assert set(own.well_type) <= {"positive_control", "negative_control"}
    assert set(entries.experiment) == {TARGET, "HUVEC-01"}  # same cell type only, by default
    assert index.manifest["centering"]["method"] == "center"
    stats = EmbedderRecord.read(index.manifest.get("producer"), index.producer_arrays).channel_stats
    assert stats is not None
    assert stats[0].shape == (6,)
    # every well of the batch was embedded to the queries file, treatments unlabelled as in its metadata
    table = read_embeddings(queries)
    assert len(table) == len(select_wells(PngSource(tiny["batch"]).metadata))
    assert table.meta.loc[table.meta.Metadata_well_type == "treatment", "Metadata_sirna_id"].isna().all()


def test_the_cli_verb_runs_the_same_job_and_replaces_an_index(tiny: dict[str, Path]) -> None:
    from phenoprint.cli import main

    out = tiny["base"] / "indexes2" / TARGET
    argv = [
        "-q",
        "build-index",
        "--model",
        str(tiny["run"]),
        "--data",
        str(tiny["batch"]),
        "--experiment",
        TARGET,
        "--out",
        str(out),
        "--reference",
        str(tiny["reference"]),
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    first = json.loads((out / "manifest.json").read_text())["created"]
    assert main([*argv, "--center", "none"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["centering"]["method"] == "none"
    assert manifest["created"] >= first
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary dir left behind


def test_reference_of_another_model_is_refused(tiny: dict[str, Path], tmp_path: Path) -> None:
    model = load_model(tiny["run"], "cpu")
    table = read_embeddings(tiny["reference"])
    table.fingerprint = "0" * 64
    with pytest.raises(EmbeddingTableError, match="re-export"):
        onboard_experiment(
            model,
            PngSource(tiny["batch"]),
            TARGET,
            table,
            tmp_path / "i",
            IndexConfig(center="tvn", mode="centroid"),
            progress=False,
        )
    assert not (tmp_path / "i").exists()


def test_a_batch_without_labelled_controls_is_refused(tiny: dict[str, Path], tmp_path: Path) -> None:
    batch = tmp_path / "nolabels"
    batch.mkdir()
    (batch / "images").symlink_to(tiny["data"] / "images")
    meta = pd.read_csv(tiny["batch"] / "metadata.csv")
    meta[["sirna", "sirna_id"]] = [None, None]
    meta.to_csv(batch / "metadata.csv", index=False)
    model = load_model(tiny["run"], "cpu")
    with pytest.raises(MetadataError, match="--center-on all"):
        onboard_experiment(
            model,
            PngSource(batch),
            TARGET,
            tiny["reference"],
            tmp_path / "i",
            IndexConfig(center="tvn", mode="centroid"),
            progress=False,
        )
    assert not (tmp_path / "i").exists()


def test_bn_adapted_onboarding_serves_the_same_vectors_it_indexed(tiny: dict[str, Path], tmp_path: Path) -> None:
    import numpy as np

    from phenoprint.embedder.inference import WellImages

    model = load_model(tiny["run"], "cpu")
    source = PngSource(tiny["batch"])
    onboard_experiment(
        model,
        source,
        TARGET,
        tiny["reference"],
        tmp_path / "i",
        IndexConfig(center="center", mode="centroid"),
        bn_adapt=True,
        allow_mismatch=True,  # the reference was exported without adaptation: only the stored statistics matter here
        queries_out=tmp_path / "q.parquet",
        progress=False,
    )
    index = ExperimentIndex.load(tmp_path / "i", expected_fingerprint=model.fingerprint)
    state = EmbedderRecord.read(index.manifest.get("producer"), index.producer_arrays).bn_state
    assert state is not None
    assert any(k.endswith(".running_var") for k in state)
    table = read_embeddings(tmp_path / "q.parquet")
    row = table.meta.iloc[5]
    sites = np.stack([source.load(TARGET, int(row.Metadata_plate), row.Metadata_well, s) for s in (1, 2)])
    stats = EmbedderRecord.read(index.manifest.get("producer"), index.producer_arrays).channel_stats
    adapted = model.embed_batch([WellImages(sites, channel_stats=stats, bn_state=state)])[0].well
    plain = model.embed_batch([WellImages(sites, channel_stats=stats)])[0].well
    np.testing.assert_allclose(adapted, table.features[5], atol=1e-4)
    assert not np.allclose(plain, table.features[5], atol=1e-3)  # the model's own statistics differ
    # the model is left with its own statistics afterwards
    np.testing.assert_allclose(model.embed_batch([WellImages(sites, channel_stats=stats)])[0].well, plain)


def test_embedding_settings_come_from_the_reference_record() -> None:
    record = {"tta": 8, "bn_adapt": True}
    taken = embedding_settings(record)
    assert (taken.tta, taken.bn_adapt, taken.from_reference) == (8, True, True)
    same = embedding_settings(record, tta=8, bn_adapt=True)  # asking for what the record says is fine
    assert (same.tta, same.bn_adapt) == (8, True)
    with pytest.raises(EmbeddingTableError, match=r"--tta 1 where the reference used 8 \(pass --tta 8\)"):
        embedding_settings(record, tta=1)
    with pytest.raises(
        EmbeddingTableError, match=r"BN adaptation off where the reference had it on \(pass --bn-adapt\)"
    ):
        embedding_settings(record, bn_adapt=False)
    forced = embedding_settings(record, tta=1, bn_adapt=False, allow_mismatch=True)
    assert (forced.tta, forced.bn_adapt, forced.from_reference) == (1, False, False)
    legacy = embedding_settings({})  # a table that records nothing: the old defaults, with a warning
    assert (legacy.tta, legacy.bn_adapt, legacy.from_reference) == (1, False, False)


def test_build_index_embeds_the_batch_as_the_reference_was_embedded(tiny: dict[str, Path], tmp_path: Path) -> None:
    """The reference records TTA 2 and BN adaptation: onboarding with no options follows it, an option that
    contradicts it is refused with the flag to pass, and nothing is written."""
    from phenoprint.cli import main

    model = load_model(tiny["run"], "cpu")
    source = PngSource(tiny["data"])
    reference = tmp_path / "adapted.parquet"
    wells = select_wells(source.metadata, ("HUVEC-01", "RPE-01"))
    export_embeddings(model, source, reference, wells=wells, tta=2, bn_adapt=True, progress=False)
    common = ["--model", str(tiny["run"]), "--data", str(tiny["batch"]), "--experiment", TARGET]
    common += ["--reference", str(reference), "--center", "center", "--workers", "0", "--device", "cpu"]
    out = tmp_path / "indexes" / TARGET
    queries = tmp_path / "q.parquet"
    assert main(["-q", "build-index", *common, "--out", str(out), "--queries-out", str(queries)]) == 0
    producer = json.loads((out / "manifest.json").read_text())["producer"]
    assert (producer["tta"], producer["bn_adapt"]) == (2, True)
    info = read_embeddings(queries).info
    assert (info["tta"], info["bn_adapt"]) == (2, True)

    refused = tmp_path / "refused" / TARGET
    assert main(["-q", "build-index", *common, "--out", str(refused), "--tta", "1", "--no-bn-adapt"]) == 2
    assert not refused.parent.exists() or not any(refused.parent.iterdir())


def test_a_refused_mismatch_is_a_one_line_error_naming_the_flags(tiny: dict[str, Path], tmp_path: Path, capsys) -> None:
    from phenoprint.cli import main

    argv = ["build-index", "--model", str(tiny["run"]), "--data", str(tiny["batch"]), "--experiment", TARGET]
    argv += ["--reference", str(tiny["reference"]), "--out", str(tmp_path / TARGET), "--device", "cpu"]
    assert main([*argv, "--tta", "4"]) == 2  # the tiny reference was exported with TTA 1
    err = capsys.readouterr().err
    assert "phenoprint build-index: error: the new batch would be embedded differently" in err
    assert "--tta 4 where the reference used 1 (pass --tta 1)" in err
    assert not (tmp_path / TARGET).exists()
