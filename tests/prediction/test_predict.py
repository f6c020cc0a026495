"""``phenoprint predict`` on the tiny run's onboarded indexes: files, labels, summary, fallback, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoprint.cli import main
from phenoprint.data.table import EmbeddingTable, feature_names, read_embeddings, write_embeddings
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.prediction.batch import predict_tables
from tests.api.conftest import TARGET, Artifacts


def _predict(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["predict", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_predict_names_every_well_of_the_batch_jointly_and_writes_parquet_and_csv(
    artifacts: Artifacts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "predictions" / TARGET
    rc, stdout, err = _predict(
        capsys,
        "--index",
        str(artifacts.indexes),
        "--experiment",
        TARGET,
        "--embeddings",
        str(artifacts.reference),
        "--out",
        str(out),
        "--k",
        "3",
    )
    assert rc == 0, err
    parquet, csv = out.with_name(f"{TARGET}.parquet"), out.with_name(f"{TARGET}.csv")
    assert sorted(p.name for p in parquet.parent.iterdir()) == [csv.name, parquet.name]  # no temporaries left
    wells = pd.read_parquet(parquet)
    table = read_embeddings(artifacts.reference).aggregate_sites()
    expected_wells = table.meta[table.meta.Metadata_experiment == TARGET]
    assert len(wells) == len(expected_wells)  # one row per well (sites averaged), controls included
    assert set(wells.Metadata_well) == set(expected_wells.Metadata_well)
    assert {"top1_sirna_id", "top3_score", "unknown", "plate_group", "plate_group_margin"} <= set(wells.columns)
    assert {"assigned_sirna_id", "assigned_score", "confidence", "assigned", "true_sirna_id"} <= set(wells.columns)
    truth = expected_wells.set_index("Metadata_well").Metadata_sirna_id
    assert (wells.set_index("Metadata_well").true_sirna_id == truth.loc[wells.Metadata_well]).all()
    assert wells.assigned.all()
    assert wells.plate_group.notna().all()
    for _, plate in wells.groupby("Metadata_plate"):
        assert not plate.assigned_sirna_id.duplicated().any()  # each candidate once per plate
    # the CSV is the same table; the files are what the library computes in process
    pd.testing.assert_frame_equal(
        pd.read_csv(csv)[["Metadata_well", "assigned_sirna_id"]], wells[["Metadata_well", "assigned_sirna_id"]]
    )
    index = ExperimentIndex.load(artifacts.indexes / TARGET)
    in_process = predict_tables([index], read_embeddings(artifacts.reference), k=3).wells
    pd.testing.assert_frame_equal(wells, in_process, check_dtype=False)
    # the summary: how it was decoded, then per plate and overall top-1 per well against the joint answer
    assert f"{TARGET}: {len(wells)} wells named jointly by plate design, mode {index.config.mode}" in stdout
    known = wells.true_sirna_id.notna()
    per_well = np.mean(wells.top1_sirna_id[known] == wells.true_sirna_id[known])
    assigned = np.mean(wells.assigned_sirna_id[known] == wells.true_sirna_id[known])
    assert f"all labelled wells: top-1 per well {per_well:.3f}, assigned {assigned:.3f}" in stdout
    assert "plate 1: group" in stdout
    assert f"wrote {parquet} and {csv} ({len(wells)} wells)" in stdout


def test_predict_takes_one_index_directory_too(
    artifacts: Artifacts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "one.parquet"
    rc, _, err = _predict(
        capsys, "--index", str(artifacts.indexes / TARGET), "--embeddings", str(artifacts.reference), "--out", str(out)
    )
    assert rc == 0, err
    assert set(pd.read_parquet(out).Metadata_experiment) == {TARGET}
    assert (tmp_path / "one.csv").is_file()


def test_without_a_plate_design_predict_falls_back_to_per_well_top1_and_says_so(
    artifacts: Artifacts, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # a reference without treatment labels: no plate groups can be learned, so the index knows no plate design
    table = read_embeddings(artifacts.reference)
    meta = table.meta.copy()
    meta.loc[meta.Metadata_well_type == "treatment", "Metadata_sirna_id"] = pd.NA
    unlabelled = tmp_path / "controls_only.parquet"
    write_embeddings(EmbeddingTable(meta, table.features, table.feature_names, table.fingerprint), unlabelled)
    index_dir = tmp_path / "indexes" / TARGET
    build = ["index", "build", "--embeddings", str(unlabelled), "--experiment", TARGET, "--out", str(index_dir)]
    assert main([*build, "--center", "center", "--mode", "centroid"]) == 0
    assert ExperimentIndex.load(index_dir).plate_groups is None
    capsys.readouterr()
    out = tmp_path / "fallback"
    rc, stdout, err = _predict(
        capsys, "--index", str(index_dir), "--embeddings", str(artifacts.reference), "--out", str(out)
    )
    assert rc == 0, err
    assert "per well (no plate design)" in stdout
    assert "no plate groups were learned" in stdout
    assert any("no plate groups were learned" in r.message for r in caplog.records if r.levelname == "WARNING")
    wells = pd.read_parquet(tmp_path / "fallback.parquet")
    assert not wells.assigned.any()
    assert wells.plate_group.isna().all()
    assert (wells.assigned_sirna_id == wells.top1_sirna_id).all()


def _wrong_tables(artifacts: Artifacts, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Embedding tables predict must refuse, with the words its message must hold."""
    table = read_embeddings(artifacts.reference)
    narrow = EmbeddingTable(
        table.meta, table.features[:, :-2], tuple(feature_names(table.dim - 2)), table.fingerprint, dict(table.info)
    )
    foreign = EmbeddingTable(table.meta, table.features, table.feature_names, "0" * 64, dict(table.info))
    others = table.subset(~table.experiment_mask(TARGET))
    not_parquet = tmp_path / "wells.parquet"
    not_parquet.write_text("Metadata_well,x\nB02,1\n")
    tables = {
        "dimension": (write_embeddings(narrow, tmp_path / "narrow.parquet"), "has dimension 14 but the index of"),
        "model": (write_embeddings(foreign, tmp_path / "foreign.parquet"), "comes from model 0000000000000000"),
        "experiment": (write_embeddings(others, tmp_path / "others.parquet"), f"holds no wells of {TARGET}"),
        "not parquet": (not_parquet, "not a readable Parquet file"),
        "absent": (tmp_path / "nothing.parquet", "no Parquet file found"),
    }
    return tables


def test_a_wrong_embedding_table_gets_a_clear_error_and_no_output(
    artifacts: Artifacts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    for name, (path, words) in _wrong_tables(artifacts, tmp_path).items():
        rc, _, err = _predict(
            capsys, "--index", str(artifacts.indexes), "--experiment", TARGET, "--embeddings", str(path), "--out",
            str(out_dir / name),
        )  # fmt: skip
        assert rc == 2, name
        assert err.startswith("phenoprint predict: error:"), (name, err)
        assert words in err, (name, err)
        assert err.count("\n") == 1, (name, err)  # one line, no traceback
    assert not out_dir.exists()  # nothing written, not even the folder


def test_a_missing_index_gets_a_clear_error_and_no_output(
    artifacts: Artifacts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "p"
    emb = str(artifacts.reference)
    cases = {
        "unknown experiment": (
            ["--index", str(artifacts.indexes), "--experiment", "NOPE-01"],
            "unknown experiment 'NOPE-01'; known: HUVEC-02, RPE-01",
        ),
        "no such folder": (["--index", str(tmp_path / "indexes")], "does not exist"),
        "empty folder": (["--index", str(tmp_path)], "holds no index directory"),
        "a model run": (["--index", str(artifacts.run)], "is a model run (pass it as --model)"),
    }
    for name, (args, words) in cases.items():
        rc, _, err = _predict(capsys, *args, "--embeddings", emb, "--out", str(out))
        assert rc == 2, name
        assert words in err, (name, err)
    rc, _, err = _predict(capsys, "--index", str(artifacts.indexes), "--out", str(out))
    assert rc == 2
    assert "give the batch's --embeddings, or --data and --model" in err
    assert not out.parent.exists()
