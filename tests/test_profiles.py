"""Profile import: the real shared CellProfiler profiles, and hand-made CSVs with bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoprint.errors import EmbeddingTableError
from phenoprint.profiles import ProfileColumns, import_profiles
from tests.conftest import PROJECT_ROOT

NEGCON = 'Metadata_control_type == "negcon"'


def _profiles_root() -> Path:
    override = os.environ.get("PHENOPRINT_PROFILES")
    return Path(override) if override else PROJECT_ROOT.parent / "shared" / "profiles"


@pytest.fixture(scope="module")
def profiles_root() -> Path:
    root = _profiles_root()
    if not (root / "cdot").is_dir():
        pytest.skip(f"the real profiles are not at {root} (set PHENOPRINT_PROFILES to the shared profiles folder)")
    return root


def _csv(path: Path, batch: str = "b1", n_plates: int = 2, extra: dict | None = None, seed: int = 0) -> Path:
    """A pycytominer-like profile CSV: 2 plates x 6 wells (2 DMSO), features f0-f3 plus ``extra`` columns."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_plates):
        for w in range(6):
            rows.append(
                {
                    "Metadata_batch": batch,
                    "Metadata_Plate": f"BR{p:04d}",
                    "Metadata_Well": f"A{w + 1:02d}",
                    "Metadata_control_type": "negcon" if w < 2 else "trt",
                    "Metadata_broad_sample": None if w < 2 else f"BRD-{w}",
                    **{f"f{j}": rng.normal() for j in range(4)},
                }
            )
    frame = pd.DataFrame(rows)
    for name, values in (extra or {}).items():
        frame[name] = values
    frame.to_csv(path, index=False)
    return path


def _columns(**kw: object) -> ProfileColumns:
    return ProfileColumns(label=("Metadata_broad_sample",), controls=NEGCON, **kw)  # type: ignore[arg-type]


def test_real_cdot_batches_import_with_their_controls_and_shared_features(profiles_root: Path) -> None:
    files = [
        next((profiles_root / "cdot").glob(f"*{tag}_normalized_feature_select_batch.csv.gz"))
        for tag in ("Batch1", "Batch5")
    ]
    result = import_profiles(files, _columns())
    table = result.table
    assert table.experiments == sorted(pd.read_csv(f, usecols=["Metadata_batch"]).iloc[0, 0] for f in files)
    feats = [{c for c in pd.read_csv(f, nrows=0).columns if not c.startswith("Metadata_")} for f in files]
    assert set(table.feature_names) | set(result.mostly_missing) == feats[0] & feats[1]
    assert len(result.not_shared) == len(feats[0] ^ feats[1])
    # 24 DMSO wells per plate (README), one label "DMSO"; plates numbered within each batch
    per_plate = table.meta[table.control_mask()].groupby(["Metadata_experiment", "Metadata_plate"]).size()
    assert set(per_plate) == {24}
    assert set(table.meta.loc[table.control_mask(), "Metadata_label"]) == {"control"}  # their label column is empty
    assert np.isfinite(table.features).all()
    assert len(table) + result.dropped_wells == sum(len(pd.read_csv(f, usecols=["Metadata_Well"])) for f in files)


def test_real_varchamp_gene_labels_with_two_label_columns(profiles_root: Path) -> None:
    f = next((profiles_root / "varchamp").glob("*Batch_12_*normalized_feature_select_batch.csv.gz"))
    result = import_profiles([f], ProfileColumns(label=("Metadata_symbol", "Metadata_gene_allele")))
    labels = result.table.meta["Metadata_label"].dropna()
    assert labels.str.contains("@").all()
    assert result.controls == 0
    assert result.table.control_mask().sum() == 0


def test_cli_import_writes_a_table_evaluate_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from phenoprint.cli import main
    from phenoprint.data.table import read_embeddings

    a, b = _csv(tmp_path / "a.csv.gz", "b1", seed=1), _csv(tmp_path / "b.csv", "b2", seed=2)
    out = tmp_path / "t.parquet"
    argv = ["profiles", "import", str(a), str(b), "--label", "Metadata_broad_sample", "--controls", NEGCON]
    assert main([*argv, "--out", str(out)]) == 0
    table = read_embeddings(out)
    assert len(table) == 24
    assert table.experiments == ["b1", "b2"]
    assert table.control_mask().sum() == 8
    assert table.info["labels"][int(table.meta["Metadata_sirna_id"].iloc[0])] == "control"
    assert "wrote" in capsys.readouterr().out


def test_missing_label_column_is_named(tmp_path: Path) -> None:
    path = _csv(tmp_path / "p.csv")
    with pytest.raises(EmbeddingTableError, match=r"no column 'Metadata_compound'.*metadata columns are"):
        import_profiles([path], ProfileColumns(label=("Metadata_compound",)))


def test_a_control_query_that_selects_nothing_or_is_invalid_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path / "p.csv")
    cols = ProfileColumns(label=("Metadata_broad_sample",), controls='Metadata_control_type == "DMSO"')
    with pytest.raises(EmbeddingTableError, match=r"selects no well of the profiles; leave it out.*--center-on all"):
        import_profiles([path], cols)
    cols = ProfileColumns(label=("Metadata_broad_sample",), controls="Metadata_nope == 1")
    with pytest.raises(EmbeddingTableError, match="not a valid query"):
        import_profiles([path], cols)


def test_a_text_feature_column_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path / "p.csv", extra={"Image_FileName": "a.tiff"})
    with pytest.raises(EmbeddingTableError, match=r"Image_FileName are not numeric.*a.tiff"):
        import_profiles([path], _columns())


def test_nan_columns_are_dropped_as_pycytominer_feature_select_does(tmp_path: Path) -> None:
    col = np.ones(12)
    col[:6] = np.nan  # half missing: over the cutoff
    one = np.ones(12)
    one[3] = np.inf  # 1 of 12 missing: over 0.05, under 0.1
    path = _csv(tmp_path / "p.csv", extra={"f_half": col, "f_one": one})
    result = import_profiles([path], _columns())
    assert result.mostly_missing == ("f_half", "f_one")
    assert result.dropped_wells == 0
    assert "f_half" not in result.table.feature_names
    kept = import_profiles([path], _columns(na_cutoff=0.1))
    assert kept.mostly_missing == ("f_half",)
    assert kept.dropped_wells == 1
    assert len(kept.table) == 11
    pycytominer = pytest.importorskip("pycytominer", reason="pycytominer (the profiles extra) is not installed")
    frame = pd.read_csv(path).replace([np.inf, -np.inf], np.nan)
    features = [c for c in frame.columns if not c.startswith("Metadata_")]
    selected = pycytominer.feature_select(frame, features=features, operation="drop_na_columns", na_cutoff=0.05)
    assert [c for c in features if c not in selected.columns] == list(result.mostly_missing)


def test_every_feature_missing_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    frame = pd.read_csv(_csv(path))
    frame[["f0", "f1", "f2", "f3"]] = np.nan
    frame.to_csv(path, index=False)
    with pytest.raises(EmbeddingTableError, match="every one of the 4 shared features is missing"):
        import_profiles([path], _columns())


def test_files_without_a_shared_feature_or_unreadable_are_refused(tmp_path: Path) -> None:
    a = _csv(tmp_path / "a.csv")
    b = tmp_path / "b.csv"
    pd.read_csv(a).rename(columns={f"f{j}": f"g{j}" for j in range(4)}).to_csv(b, index=False)
    with pytest.raises(EmbeddingTableError, match="no feature column is shared"):
        import_profiles([a, b], _columns())
    with pytest.raises(EmbeddingTableError, match="no such profile file"):
        import_profiles([tmp_path / "nope.csv"], _columns())


def test_duplicate_wells_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    frame = pd.read_csv(_csv(path))
    pd.concat([frame, frame.head(1)]).to_csv(path, index=False)
    with pytest.raises(EmbeddingTableError, match="appears twice"):
        import_profiles([path], _columns())


def test_rows_keep_only_the_wells_a_query_selects(tmp_path: Path) -> None:
    path = _csv(tmp_path / "p.csv")
    result = import_profiles([path], _columns(rows='Metadata_Plate == "BR0000"'))
    assert len(result.table) == 6
    with pytest.raises(EmbeddingTableError, match=r"--rows .* selects no well of .*p.csv"):
        import_profiles([path], _columns(rows='Metadata_Plate == "BR9"'))
