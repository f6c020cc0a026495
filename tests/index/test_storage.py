"""An index directory on disk: what a load refuses (mismatches, missing or replaced files, bad arrays)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoprint.data.table import EmbeddingTable
from phenoprint.errors import IndexFormatError
from phenoprint.index.build import build_experiment_index
from phenoprint.index.centering import load_centering, save_centering
from phenoprint.index.config import IndexConfig
from phenoprint.index.experiment import ExperimentIndex
from tests.index.conftest import rehash_manifest


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
    other = build_experiment_index(small_table, "HUVEC-02", IndexConfig(center="tvn", mode="centroid")).save(
        tmp_path / "other"
    )
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
