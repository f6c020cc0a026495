"""Per-experiment indexes: what goes in, centring with each experiment's own statistics, and the artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoprint.data.table import EmbeddingTable
from phenoprint.errors import EmbeddingTableError, IndexFormatError, UnknownExperimentError
from phenoprint.index import build as build_module
from phenoprint.index import experiment as experiment_module
from phenoprint.index import storage
from phenoprint.index.build import build_experiment_index
from phenoprint.index.centering import apply_centering, fit_centering, load_centering, save_centering
from phenoprint.index.config import IndexConfig
from phenoprint.index.experiment import ExperimentIndex
from tests.index.conftest import rehash_manifest


@pytest.fixture(scope="module")
def huvec_index(small_table: EmbeddingTable) -> ExperimentIndex:
    return build_experiment_index(small_table, "HUVEC-01", IndexConfig())


def _rows(table: EmbeddingTable, experiment: str) -> np.ndarray:
    return table.experiment_mask(experiment)


def test_entries_are_own_controls_plus_labelled_wells_of_the_same_cell_type(huvec_index: ExperimentIndex) -> None:
    e = huvec_index.entries
    own = e[e.experiment == "HUVEC-01"]
    assert len(own) == 4 * 4  # 4 plates x (3 positive controls + 1 untreated)
    assert set(own.kind) == {"control"}
    assert set(own.well_type) == {"positive_control", "negative_control"}
    others = e[e.experiment != "HUVEC-01"]
    assert set(others.experiment) == {"HUVEC-02", "HUVEC-03", "HUVEC-04"}
    assert set(others.kind) == {"training"}
    assert len(others) == 3 * 4 * 10
    assert list(e.columns) == list(storage.ENTRY_COLUMNS)
    m = huvec_index.manifest
    assert m["counts"] == {
        "entries": 136,
        "controls": 16,
        "training": 120,
        "sirnas": 28,
        "source_experiments": 3,
        "reference_wells": 16,
    }
    assert m["cell_type"] == "HUVEC"
    assert m["dim"] == 16
    assert m["fingerprint"] == "synthetic"
    assert m["centering"]["method"] == "tvn"
    assert huvec_index.plate_groups is not None
    assert sorted(len(g) for g in huvec_index.plate_groups.groups.values()) == [6, 6, 6, 6]


def test_scope_all_adds_the_other_cell_types(small_table: EmbeddingTable) -> None:
    index = build_experiment_index(small_table, "HUVEC-01", IndexConfig(scope="all"))
    assert len(index) == 136 + 3 * 40
    assert set(index.entries.cell_type) == {"HUVEC", "RPE"}


def test_every_experiment_is_centred_with_its_own_statistics(
    small_table: EmbeddingTable, huvec_index: ExperimentIndex
) -> None:
    for exp in ("HUVEC-01", "HUVEC-03"):
        rows = _rows(small_table, exp)
        x = small_table.features[rows]
        stats = fit_centering(x, small_table.control_mask()[rows], "tvn")
        want = apply_centering(x, stats)
        if exp == "HUVEC-01":
            np.testing.assert_allclose(huvec_index.center(x), want, atol=1e-6)
        entry_rows = np.flatnonzero(huvec_index.entries.experiment.to_numpy() == exp)
        wells = huvec_index.entries.well.to_numpy()[entry_rows]
        plates = huvec_index.entries.plate.to_numpy()[entry_rows]
        meta = small_table.meta[rows].reset_index(drop=True)
        key = {(p, w): i for i, (p, w) in enumerate(zip(meta.Metadata_plate, meta.Metadata_well, strict=True))}
        order = [key[(p, w)] for p, w in zip(plates, wells, strict=True)]
        np.testing.assert_allclose(huvec_index.vectors[entry_rows], want[order], atol=1e-6)


def test_a_new_batch_needs_only_its_control_labels(small_table: EmbeddingTable, huvec_index: ExperimentIndex) -> None:
    """Onboarding: the target's treatments have no label; the index is the same as with labels."""
    meta = small_table.meta.copy()
    unlabelled = (meta.Metadata_experiment == "HUVEC-01") & (meta.Metadata_well_type == "treatment")
    meta.loc[unlabelled, "Metadata_sirna_id"] = pd.NA
    table = EmbeddingTable(meta, small_table.features.copy(), small_table.feature_names, small_table.fingerprint)
    index = build_experiment_index(table, "HUVEC-01", IndexConfig())
    pd.testing.assert_frame_equal(index.entries, huvec_index.entries)
    np.testing.assert_array_equal(index.vectors, huvec_index.vectors)
    x = small_table.features[_rows(small_table, "HUVEC-01")]
    np.testing.assert_array_equal(index.center(x), huvec_index.center(x))


def test_save_and_load_round_trip(huvec_index: ExperimentIndex, tmp_path: Path) -> None:
    out = huvec_index.save(tmp_path / "idx")
    assert sorted(p.name for p in out.iterdir()) == [
        "centering.npz",
        "entries.parquet",
        "index.faiss",
        "manifest.json",
        "plate_groups.json",
    ]
    back = ExperimentIndex.load(out, expected_fingerprint="synthetic", expected_dim=16)
    pd.testing.assert_frame_equal(back.entries, huvec_index.entries)
    np.testing.assert_array_equal(back.vectors, huvec_index.vectors)
    np.testing.assert_array_equal(back.centroids, huvec_index.centroids)
    assert back.config == huvec_index.config
    assert back.open_set == huvec_index.open_set
    assert back.plate_groups is not None
    assert huvec_index.plate_groups is not None
    assert back.plate_groups.groups == huvec_index.plate_groups.groups
    q = back.vectors[:5]
    a, b = back.search(q, 7), huvec_index.search(q, 7)
    np.testing.assert_array_equal(a.ids, b.ids)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == storage.FORMAT_VERSION
    assert manifest["config"] == IndexConfig().to_json()
    assert set(manifest["files"]) == {"centering.npz", "entries.parquet", "index.faiss", "plate_groups.json"}
    assert manifest["created"].endswith("+00:00")


@pytest.mark.parametrize(
    ("edit", "kwargs", "message"),
    [
        (None, {"expected_fingerprint": "resnet-other"}, "model 'synthetic', but the queries come from model"),
        (None, {"expected_dim": 512}, "dimension 16, but the queries have dimension 512"),
        ({"format_version": 99}, {}, "format version 99, but this phenoprint reads version 2"),
        ({"format_version": 1}, {}, "format version 1, but this phenoprint reads version 2; rebuild"),
        ({"artifact": "something.else"}, {}, "not that of a phenoprint experiment index"),
        ({"dim": 8}, {}, "index.faiss has dimension 16, the manifest says 8"),
    ],
)
def test_load_refuses_a_mismatch(
    huvec_index: ExperimentIndex, tmp_path: Path, edit: dict | None, kwargs: dict, message: str
) -> None:
    out = huvec_index.save(tmp_path / "idx")
    if edit:
        manifest = json.loads((out / "manifest.json").read_text())
        manifest.update(edit)
        (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=message):
        ExperimentIndex.load(out, **kwargs)


def test_load_refuses_incomplete_directories(huvec_index: ExperimentIndex, tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match=r"no manifest\.json"):
        ExperimentIndex.load(tmp_path)
    out = huvec_index.save(tmp_path / "idx")
    (out / "centering.npz").unlink()
    with pytest.raises(IndexFormatError, match=r"missing file.*centering\.npz"):
        ExperimentIndex.load(out)
    out = huvec_index.save(tmp_path / "idx2")
    (out / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexFormatError, match=r"index\.faiss is 7 bytes, the manifest says"):
        ExperimentIndex.load(out)
    rehash_manifest(out)
    with pytest.raises(IndexFormatError, match="unreadable index file"):
        ExperimentIndex.load(out)
    out = huvec_index.save(tmp_path / "idx3")
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        ExperimentIndex.load(out)
    (out / "manifest.json").write_text("[1, 2]")
    with pytest.raises(IndexFormatError, match="not a JSON object"):
        ExperimentIndex.load(out)


def _edit_centering(folder: Path, edit) -> None:
    stats = load_centering(folder / "centering.npz")
    save_centering(folder / "centering.npz", edit(stats))


def _replace_stats(stats: dict, **fields) -> dict:
    from dataclasses import replace

    return {k: replace(v, **fields) for k, v in stats.items()}


def _shuffled_entries(folder: Path) -> None:
    entries = pd.read_parquet(folder / "entries.parquet")
    entries.sample(frac=1.0, random_state=0).to_parquet(folder / "entries.parquet", index=False)


def _random_vectors(folder: Path) -> None:
    import faiss

    n, d = 136, 16
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    index = faiss.IndexFlatIP(d)
    index.add(x / np.linalg.norm(x, axis=1, keepdims=True))
    faiss.write_index(index, str(folder / "index.faiss"))


# Files replaced after the save, the manifest left as it was: each is a wrong index that used to be served.
SWAPPED = {
    "random vectors of the right count": _random_vectors,
    "shuffled entry rows": _shuffled_entries,
    "a NaN centering mean": lambda f: _edit_centering(f, lambda s: _replace_stats(s, mean=np.full(16, np.nan))),
}


@pytest.mark.parametrize("tamper", list(SWAPPED), ids=list(SWAPPED))
def test_files_that_no_longer_match_their_content_hashes_are_refused(
    huvec_index: ExperimentIndex, tmp_path: Path, tamper: str
) -> None:
    out = huvec_index.save(tmp_path / "idx")
    SWAPPED[tamper](out)
    with pytest.raises(IndexFormatError, match="replaced or damaged after the index was written"):
        ExperimentIndex.load(out)


def test_an_index_file_of_another_experiment_is_refused(
    small_table: EmbeddingTable, huvec_index: ExperimentIndex, tmp_path: Path
) -> None:
    out = huvec_index.save(tmp_path / "idx")
    other = build_experiment_index(small_table, "HUVEC-02", IndexConfig()).save(tmp_path / "other")
    assert len(ExperimentIndex.load(other)) == len(huvec_index)  # the same count: nothing else tells them apart
    (out / "index.faiss").write_bytes((other / "index.faiss").read_bytes())
    with pytest.raises(IndexFormatError, match=r"index\.faiss does not match the content hash"):
        ExperimentIndex.load(out)


# Files a buggy writer could produce consistently (the manifest rehashed): the loader's checks must refuse them.
INCONSISTENT = {
    "centering scale of the wrong length": (
        lambda f: _edit_centering(f, lambda s: _replace_stats(s, scale=np.ones(15))),
        r"scale has shape \(15,\) \(float64\), expected \(16,\)",
    ),
    "TVN gains of the wrong length": (
        lambda f: _edit_centering(f, lambda s: _replace_stats(s, gains=np.ones(3))),
        r"gains has shape \(3,\) \(float64\), expected \(8,\)",
    ),
    "a renamed centering key": (
        lambda f: _edit_centering(f, lambda s: {"HUVEC-99": next(iter(s.values()))}),
        r"centering statistics for HUVEC-99; expected HUVEC-01",
    ),
    "a NaN centering mean": (
        lambda f: _edit_centering(f, lambda s: _replace_stats(s, mean=np.full(16, np.nan))),
        r"mean holds non-finite values",
    ),
    "an infinite whitening gain": (
        lambda f: _edit_centering(f, lambda s: _replace_stats(s, isotropic=float("inf"))),
        r"isotropic gain is inf",
    ),
    "a zero scale": (
        lambda f: _edit_centering(f, lambda s: _replace_stats(s, scale=np.zeros(16))),
        r"scale holds values <= 0",
    ),
    "text siRNA ids": (
        lambda f: (
            pd.read_parquet(f / "entries.parquet")
            .astype({"sirna_id": str})
            .to_parquet(f / "entries.parquet", index=False)
        ),
        r"entries\.parquet column sirna_id is of type \w+, expected integers",
    ),
    "an unknown entry kind": (
        lambda f: (
            pd.read_parquet(f / "entries.parquet").assign(kind="mystery").to_parquet(f / "entries.parquet", index=False)
        ),
        r"column kind holds 'mystery'",
    ),
}


@pytest.mark.parametrize("tamper", list(INCONSISTENT), ids=list(INCONSISTENT))
def test_stored_arrays_are_checked_against_the_manifest(huvec_index: ExperimentIndex, tmp_path: Path, tamper) -> None:
    edit, message = INCONSISTENT[tamper]
    out = huvec_index.save(tmp_path / "idx")
    edit(out)
    rehash_manifest(out)
    with pytest.raises(IndexFormatError, match=message):
        ExperimentIndex.load(out)


def test_non_finite_vectors_are_refused(huvec_index: ExperimentIndex, tmp_path: Path) -> None:
    import faiss

    out = huvec_index.save(tmp_path / "idx")
    x = huvec_index.vectors.copy()
    x[3, 2] = np.nan
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    faiss.write_index(index, str(out / "index.faiss"))
    rehash_manifest(out)
    with pytest.raises(IndexFormatError, match=r"index\.faiss holds non-finite vectors"):
        ExperimentIndex.load(out)


def test_the_manifest_records_each_file_size_and_content_hash(huvec_index: ExperimentIndex, tmp_path: Path) -> None:
    import hashlib

    out = huvec_index.save(tmp_path / "idx")
    files = json.loads((out / "manifest.json").read_text())["files"]
    for name, entry in files.items():
        data = (out / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_crash_during_save_leaves_the_previous_index_intact(
    small_table: EmbeddingTable, huvec_index: ExperimentIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = huvec_index.save(tmp_path / "idx")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = build_experiment_index(small_table, "HUVEC-02", IndexConfig(center="center"))

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(experiment_module, "save_centering", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        other.save(out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert ExperimentIndex.load(out).experiment == "HUVEC-01"
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]
    other.save(out)  # and a save that completes replaces it
    assert ExperimentIndex.load(out).experiment == "HUVEC-02"
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_a_crash_while_building_changes_nothing_on_disk(
    small_table: EmbeddingTable, huvec_index: ExperimentIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = huvec_index.save(tmp_path / "idx")

    def crash(*args, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(build_module.faiss_backend, "make_index", crash)
    with pytest.raises(MemoryError):
        build_experiment_index(small_table, "HUVEC-02", IndexConfig()).save(out)
    monkeypatch.undo()
    assert ExperimentIndex.load(out).experiment == "HUVEC-01"


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_build_save_and_load(small_table: EmbeddingTable, tmp_path: Path, kind: str) -> None:
    index = build_experiment_index(small_table, "RPE-01", IndexConfig(kind=kind, nprobe=4, ef_search=64))
    back = ExperimentIndex.load(index.save(tmp_path / kind))
    np.testing.assert_array_equal(back.vectors, index.vectors)
    assert back.manifest["index"]["kind"] == kind
    assert back.search(back.vectors[:3], 1).ids[:, 0].tolist() == [0, 1, 2]


def test_per_plate_centering_needs_the_plates(small_table: EmbeddingTable) -> None:
    index = build_experiment_index(small_table, "HUVEC-02", IndexConfig(center="center", per_plate=True))
    assert sorted(index.centering) == [f"HUVEC-02/{p}" for p in range(1, 5)]
    rows = _rows(small_table, "HUVEC-02")
    x = small_table.features[rows]
    plates = small_table.meta.Metadata_plate.to_numpy()[rows]
    with pytest.raises(ValueError, match="centred per plate: pass plates"):
        index.center(x)
    got = index.center(x, plates)
    on3 = plates == 3
    stats = fit_centering(x[on3], small_table.control_mask()[rows][on3], "center")
    np.testing.assert_allclose(got[on3], apply_centering(x[on3], stats), atol=1e-6)
    with pytest.raises(ValueError, match="no centering statistics for HUVEC-02/9"):
        index.center(x[:1], np.array([9]))


def test_refusals(small_table: EmbeddingTable) -> None:
    with pytest.raises(UnknownExperimentError, match="unknown experiment 'HUVEC-99'"):
        build_experiment_index(small_table, "HUVEC-99", IndexConfig())
    with pytest.raises(EmbeddingTableError, match="model 'synthetic' but fingerprint 'x'"):
        build_experiment_index(small_table, "HUVEC-01", IndexConfig(), fingerprint="x")
    no_controls = small_table.subset(~small_table.control_mask())
    with pytest.raises(EmbeddingTableError, match=r"has 0 control wells.*use --center-on all"):
        build_experiment_index(no_controls, "HUVEC-01", IndexConfig())
    index = build_experiment_index(no_controls, "HUVEC-01", IndexConfig(reference="all"))
    assert index.manifest["counts"]["controls"] == 0
    assert index.open_set.source == "training_entries"
    with pytest.raises(ValueError, match="x_raw must have shape"):
        index.center(np.zeros((2, 3)))


def test_site_tables_are_indexed_as_wells(small_table: EmbeddingTable) -> None:
    rows = small_table.experiment_mask("RPE-01") | small_table.experiment_mask("RPE-02")
    wells = small_table.subset(rows)
    frame = wells.to_frame()
    sites = pd.concat([frame.assign(Metadata_site=1), frame.assign(Metadata_site=2)], ignore_index=True)
    table = EmbeddingTable.from_frame(sites, fingerprint="synthetic")
    index = build_experiment_index(table, "RPE-01", IndexConfig(center="center"))
    assert len(index) == 16 + 40
    ref = build_experiment_index(wells, "RPE-01", IndexConfig(center="center"))
    np.testing.assert_allclose(np.sort(index.vectors, axis=0), np.sort(ref.vectors, axis=0), atol=1e-6)


def test_control_ids_come_from_the_well_type(huvec_index: ExperimentIndex) -> None:
    assert huvec_index.control_ids == frozenset({24, 25, 26, 27})


def test_index_config_validates_and_round_trips() -> None:
    config = IndexConfig(center="center_scale", kind="hnsw", pca_dim=8)
    assert IndexConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="center must be one of none, center, center_scale, tvn, auto; got 'pca'"):
        IndexConfig(center="pca")
    with pytest.raises(ValueError, match="open_set_quantile must be in"):
        IndexConfig(open_set_quantile=1.5)
    with pytest.raises(ValueError, match="n_neighbors must be >= 1"):
        IndexConfig(n_neighbors=0)
    with pytest.raises(ValueError, match="unknown IndexConfig field"):
        IndexConfig.from_json({"centre": "tvn"})
