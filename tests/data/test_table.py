"""The embedding table: Parquet round trip, foreign profiles, and every refusal the reader promises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phenoprint.data.table import EmbeddingTable, concat_tables, feature_names, read_embeddings, write_embeddings
from phenoprint.errors import EmbeddingTableError, UnknownExperimentError


def _frame(n: int = 6, d: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame(
        {
            "Metadata_experiment": ["HUVEC-01"] * (n // 2) + ["HUVEC-02"] * (n - n // 2),
            "Metadata_plate": [1, 2] * (n // 2),
            "Metadata_well": [f"B{i + 2:02d}" for i in range(n)],
            "Metadata_cell_type": "HUVEC",
            "Metadata_well_type": ["treatment"] * (n - 1) + ["negative_control"],
            "Metadata_sirna_id": pd.array([*range(n - 2), None, 1138], dtype="Int64"),
        }
    )
    feats = pd.DataFrame(rng.normal(size=(n, d)).astype(np.float32), columns=feature_names(d))
    return pd.concat([meta, feats], axis=1)


def test_feature_names_are_zero_padded_and_sort() -> None:
    names = feature_names(12)
    assert names[0] == "emb_0000"
    assert names == sorted(names)


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    table = EmbeddingTable.from_frame(_frame(), fingerprint="abc123", info={"epoch": 3})
    path = write_embeddings(table, tmp_path / "e.parquet")
    back = read_embeddings(path)
    np.testing.assert_array_equal(back.features, table.features)
    pd.testing.assert_frame_equal(back.meta, table.meta)
    assert back.fingerprint == "abc123"
    assert back.info == {"epoch": 3}
    assert back.features.dtype == np.float32
    assert back.labels().tolist() == [0, 1, 2, 3, -1, 1138]
    assert back.labelled_mask().tolist() == [True] * 4 + [False, True]
    assert back.control_mask().tolist() == [False] * 5 + [True]
    assert not list(tmp_path.glob(".*tmp"))


def test_a_folder_of_parts_is_read_in_name_order(tmp_path: Path) -> None:
    frame = _frame(8)
    for i, part in enumerate((frame.iloc[:4], frame.iloc[4:])):
        write_embeddings(EmbeddingTable.from_frame(part.reset_index(drop=True), "m"), tmp_path / f"part-{i}.parquet")
    back = read_embeddings(tmp_path)
    assert len(back) == 8
    assert back.meta["Metadata_well"].tolist() == frame["Metadata_well"].tolist()


def test_hidden_leftovers_in_a_folder_of_parts_are_never_read(tmp_path: Path) -> None:
    """What a killed multi-process export leaves (a hidden temporary, or a hidden copy) is not a part."""
    table = EmbeddingTable.from_frame(_frame(), fingerprint="abc")
    write_embeddings(table, tmp_path / "part-00000-of-00001.parquet")
    write_embeddings(EmbeddingTable.from_frame(_frame(d=5), fingerprint="other"), tmp_path / ".part-00001.parquet")
    (tmp_path / ".part-00000-of-00001.parquet.k2j4h5g6.tmp").write_bytes(b"half a file")
    assert len(read_embeddings(tmp_path)) == len(table)


def test_parts_of_different_dimension_or_model_are_refused(tmp_path: Path) -> None:
    write_embeddings(EmbeddingTable.from_frame(_frame(4, 3), "m"), tmp_path / "part-0.parquet")
    write_embeddings(EmbeddingTable.from_frame(_frame(4, 5), "m"), tmp_path / "part-1.parquet")
    with pytest.raises(EmbeddingTableError, match=r"different feature dimensions \[3, 5\]"):
        read_embeddings(tmp_path)
    write_embeddings(EmbeddingTable.from_frame(_frame(4, 3), "other"), tmp_path / "part-1.parquet")
    with pytest.raises(EmbeddingTableError, match="different models"):
        read_embeddings(tmp_path)


def test_a_cellprofiler_style_profile_loads_unchanged(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "Metadata_experiment": "batch1",
            "Metadata_plate": [7, 7, 8],
            "Metadata_well": ["A01", "A02", "A01"],
            "Metadata_sirna_id": [90210, 31337, 90210],
            "Cells_AreaShape_Area": rng.normal(size=3),
            "Nuclei_Intensity_MeanIntensity_DNA": rng.integers(0, 9, 3),
        }
    )
    frame.to_parquet(tmp_path / "profiles.parquet")
    table = read_embeddings(tmp_path / "profiles.parquet")
    assert table.feature_names == ("Cells_AreaShape_Area", "Nuclei_Intensity_MeanIntensity_DNA")
    assert table.meta["Metadata_well_type"].eq("treatment").all()
    assert table.meta["Metadata_cell_type"].eq("unknown").all()
    assert table.fingerprint is None
    assert table.labels().tolist() == [90210, 31337, 90210]


def test_columns_selects_features(tmp_path: Path) -> None:
    write_embeddings(EmbeddingTable.from_frame(_frame()), tmp_path / "e.parquet")
    table = read_embeddings(tmp_path / "e.parquet", columns=["emb_0002", "emb_0000"])
    assert table.feature_names == ("emb_0002", "emb_0000")
    with pytest.raises(EmbeddingTableError, match="no feature column"):
        read_embeddings(tmp_path / "e.parquet", columns=["emb_0009"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["Metadata_well"]), "missing metadata column.*Metadata_well"),
        (lambda f: f.assign(emb_0001=np.where(np.arange(len(f)) == 2, np.nan, f.emb_0001)), "'emb_0001'.*non-finite"),
        (lambda f: f.assign(emb_0000=np.inf), "'emb_0000'.*non-finite"),
        (lambda f: f.assign(comment="x"), "comment.*neither Metadata_"),
        (lambda f: f.drop(columns=feature_names(3)), "no feature columns"),
        (lambda f: f.assign(Metadata_plate="first"), "Metadata_plate must hold integers"),
        (lambda f: f.assign(Metadata_sirna_id=1.5), "Metadata_sirna_id must hold integers"),
        (lambda f: f.assign(Metadata_well_type="DMSO"), "Metadata_well_type holds 'dmso'"),
    ],
)
def test_invalid_tables_are_refused_with_the_column_named(change, message: str) -> None:
    with pytest.raises(EmbeddingTableError, match=message):
        EmbeddingTable.from_frame(change(_frame()))


def test_unreadable_or_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingTableError, match="no Parquet file"):
        read_embeddings(tmp_path / "absent.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(EmbeddingTableError, match="not a readable Parquet file"):
        read_embeddings(tmp_path / "bad.parquet")


def test_mismatched_rows_and_shapes_are_refused() -> None:
    frame = _frame()
    table = EmbeddingTable.from_frame(frame)
    with pytest.raises(EmbeddingTableError, match="metadata rows"):
        EmbeddingTable(table.meta.iloc[:2], table.features, table.feature_names)
    with pytest.raises(EmbeddingTableError, match="2-D array"):
        EmbeddingTable(table.meta, table.features[:, 0], table.feature_names)
    with pytest.raises(EmbeddingTableError, match="feature names"):
        EmbeddingTable(table.meta, table.features, table.feature_names[:2])


def test_well_type_is_normalized() -> None:
    table = EmbeddingTable.from_frame(_frame().assign(Metadata_well_type=" Positive_Control "))
    assert table.control_mask().all()


def test_sites_are_averaged_to_wells() -> None:
    frame = _frame(4)
    sites = pd.concat([frame.assign(Metadata_site=1), frame.assign(Metadata_site=2)], ignore_index=True)
    sites.loc[4:, feature_names(3)] += 2.0
    table = EmbeddingTable.from_frame(sites)
    assert table.has_sites
    wells = table.aggregate_sites()
    assert not wells.has_sites
    assert len(wells) == 4
    np.testing.assert_allclose(wells.features, frame[feature_names(3)].to_numpy() + 1.0, rtol=1e-6)
    assert wells.meta["Metadata_well"].tolist() == frame["Metadata_well"].tolist()
    assert EmbeddingTable.from_frame(frame).aggregate_sites().meta.equals(EmbeddingTable.from_frame(frame).meta)


def test_helpers_for_experiments_and_plate_metadata() -> None:
    table = EmbeddingTable.from_frame(_frame())
    assert table.experiments == ["HUVEC-01", "HUVEC-02"]
    assert table.cell_type_of("HUVEC-02") == "HUVEC"
    assert table.experiment_mask("HUVEC-01").sum() == 3
    with pytest.raises(UnknownExperimentError, match="HEPG2-09"):
        table.cell_type_of("HEPG2-09")
    canon = table.plate_metadata()
    assert list(canon.columns) == ["experiment", "plate", "well", "well_type", "sirna_id", "cell_type"]
    sub = table.subset(table.labelled_mask())
    assert len(sub) == 5
    assert sub.fingerprint == table.fingerprint


def test_parquet_metadata_is_not_required(tmp_path: Path) -> None:
    arrow = pa.Table.from_pandas(_frame(), preserve_index=False)
    pq.write_table(arrow, tmp_path / "plain.parquet")
    table = read_embeddings(tmp_path / "plain.parquet")
    assert table.fingerprint is None
    assert table.info == {}


def test_tables_of_one_model_are_put_together_and_others_refused_by_name() -> None:
    a, b = EmbeddingTable.from_frame(_frame(4, 3, seed=1), "m"), EmbeddingTable.from_frame(_frame(6, 3, seed=2), "m")
    b.meta["Metadata_sirna"] = "s0001"  # a column only one of them has is dropped, except the siRNA name
    both = concat_tables([a, b])
    assert len(both) == 10
    np.testing.assert_array_equal(both.features, np.concatenate([a.features, b.features]))
    assert both.fingerprint == "m"
    assert list(both.meta.Metadata_well) == [*a.meta.Metadata_well, *b.meta.Metadata_well]
    assert both.meta.Metadata_sirna.isna().sum() == 4
    wider = EmbeddingTable.from_frame(_frame(4, 5), "m")
    with pytest.raises(EmbeddingTableError, match=r"b\.parquet has 5 feature columns .* a\.parquet has 3"):
        concat_tables([a, wider], names=["a.parquet", "b.parquet"])
    with pytest.raises(EmbeddingTableError, match="table 2 comes from model other"):
        concat_tables([a, EmbeddingTable.from_frame(_frame(4, 3), "other")])
    with pytest.raises(EmbeddingTableError, match="no embedding tables"):
        concat_tables([])
