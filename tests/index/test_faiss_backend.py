"""FAISS indexes against numpy brute force, approximate recall, and the GPU/CPU choice."""

from __future__ import annotations

import logging
from pathlib import Path

import faiss
import numpy as np
import pytest

from phenoprint.index import faiss_backend as fb


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(db: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = q.astype(np.float64) @ db.T.astype(np.float64)
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(sims, ids, axis=1)


@pytest.mark.parametrize("n_queries", [1, 7, 64])
def test_exact_index_top_k_is_identical_to_brute_force(n_queries: int) -> None:
    db, q = _unit(800, 32, 0), _unit(n_queries, 32, 1)
    got = fb.search(fb.make_index(db, "flat"), q, 10)
    ids, scores = _brute(db, q, 10)
    np.testing.assert_array_equal(got.ids, ids)
    np.testing.assert_allclose(got.scores, scores, atol=1e-5)
    assert got.ids.dtype == np.int64
    assert got.scores.dtype == np.float32


def test_small_searches_run_on_one_thread_and_leave_the_thread_count_as_it_was() -> None:
    db, q = _unit(300, 16, 2), _unit(fb.SMALL_SEARCH, 16, 3)
    index = fb.make_index(db, "flat")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(3)  # a team of several, so that "one thread" is observable on any machine
    seen = []
    original = index.search

    def spy(x, k):
        seen.append(faiss.omp_get_max_threads())
        return original(x, k)

    index.search = spy
    try:
        small = fb.search(index, q, 5)
        fb.search(index, np.concatenate([q, q]), 5)
        assert seen == [1, 3]
        assert faiss.omp_get_max_threads() == 3
    finally:
        faiss.omp_set_num_threads(before)
    np.testing.assert_array_equal(small.ids, _brute(db, q, 5)[0])


@pytest.mark.parametrize(("kind", "options", "min_recall"), [("ivf", {"nprobe": 32}, 0.9), ("hnsw", {}, 0.95)])
def test_approximate_indexes_recall_most_true_neighbours(kind: str, options: dict, min_recall: float) -> None:
    db, q = _unit(4000, 24, 2), _unit(100, 24, 3)
    got = fb.search(fb.make_index(db, kind, **options), q, 10)
    truth, _ = _brute(db, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.ids, truth, strict=True)])
    assert recall >= min_recall


def test_fewer_entries_than_k_are_padded() -> None:
    db = _unit(3, 8, 4)
    got = fb.search(fb.make_index(db), _unit(2, 8, 5), 5)
    assert (got.ids[:, 3:] == -1).all()
    assert np.isneginf(got.scores[:, 3:]).all()
    assert sorted(got.ids[0, :3]) == [0, 1, 2]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_stored_vectors_round_trip(kind: str, tmp_path: Path) -> None:
    db = _unit(400, 16, 6)
    index = fb.make_index(db, kind)
    fb.write_index(index, tmp_path / "i.faiss")
    back = fb.read_index(tmp_path / "i.faiss")
    np.testing.assert_array_equal(fb.reconstruct_all(back), db)
    assert back.ntotal == 400


def test_default_nlist_keeps_enough_points_per_list() -> None:
    assert fb.default_nlist(10) == 1
    assert fb.default_nlist(10_000) == 256
    assert fb.default_nlist(28_000) == min(int(4 * np.sqrt(28_000)), 28_000 // 39)


def test_bad_arguments_are_refused() -> None:
    db = _unit(10, 4, 7)
    with pytest.raises(ValueError, match="kind must be one of flat, ivf, hnsw; got 'lsh'"):
        fb.make_index(db, "lsh")
    with pytest.raises(ValueError, match=r"2-D array \(n, d\)"):
        fb.make_index(db[0])
    with pytest.raises(ValueError, match="queries have dimension 3 but the index holds dimension 4"):
        fb.search(fb.make_index(db), db[:, :3], 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        fb.search(fb.make_index(db), db, 0)
    with pytest.raises(ValueError, match="nlist must be between 1 and the number of vectors 10"):
        fb.make_index(db, "ivf", nlist=11)


class _FakeResources:
    pass


def test_gpu_is_chosen_when_faiss_has_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faiss, "StandardGpuResources", _FakeResources, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    fb._gpu_resources.cache_clear()
    moved = []
    monkeypatch.setattr(
        faiss, "index_cpu_to_gpu", lambda res, dev, index: moved.append((res, dev)) or index, raising=False
    )
    assert fb.gpu_available()
    assert fb.choose_device("flat") == "gpu"
    assert fb.choose_device("ivf") == "gpu"
    assert fb.choose_device("hnsw") == "cpu"  # faiss has no GPU HNSW
    index = fb.make_index(_unit(5, 4, 8))
    assert fb.to_device(index, "gpu") is index
    assert len(moved) == 1
    assert isinstance(moved[0][0], _FakeResources)
    assert moved[0][1] == 0
    fb._gpu_resources.cache_clear()


def test_cpu_fallback_is_noted_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delattr(faiss, "StandardGpuResources", raising=False)
    monkeypatch.setattr(fb, "_noted_cpu", False)
    with caplog.at_level(logging.INFO, logger="phenoprint.index.faiss_backend"):
        assert fb.choose_device("flat") == "cpu"
        assert fb.choose_device("flat") == "cpu"
    notes = [r for r in caplog.records if "no GPU" in r.getMessage()]
    assert len(notes) == 1
    index = fb.make_index(_unit(5, 4, 9))
    assert fb.to_device(index, "cpu") is index


def test_no_gpu_when_the_build_has_gpu_symbols_but_no_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faiss, "StandardGpuResources", _FakeResources, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    assert not fb.gpu_available()
