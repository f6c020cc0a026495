"""FAISS inner-product indexes (exact, IVF, HNSW) on unit vectors, on the GPU when faiss has one."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from phenoprint.index.config import INDEX_KINDS

log = logging.getLogger(__name__)

#: faiss warns when an IVF quantizer gets fewer than ~39 training points per list; stay above that.
_MIN_POINTS_PER_LIST = 39
#: Searches of at most this many queries run on one OpenMP thread: waking a thread team costs more than it saves
#: for a single query, and on a busy machine a spinning team can make one query several times slower.
SMALL_SEARCH = 16
_noted_cpu = False


@dataclass(frozen=True)
class Neighbors:
    """Nearest entries of each query, best first.

    Attributes:
        ids: (n, k) int64 entry rows (-1 where the index returned fewer than k).
        scores: (n, k) float32 cosine similarities (-inf where ``ids`` is -1).
    """

    ids: np.ndarray
    scores: np.ndarray


def gpu_available() -> bool:
    """Whether this faiss build can run on a GPU and sees at least one."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def choose_device(kind: str) -> Literal["cpu", "gpu"]:
    """Where to search an index of this kind: the GPU when faiss has one (HNSW has no GPU version), else CPU.

    Logs one note per process when it falls back to the CPU, so a missing GPU is visible but not noisy.
    """
    global _noted_cpu
    if gpu_available():
        if kind != "hnsw":
            return "gpu"
        log.info("faiss has no GPU HNSW index; searching HNSW on the CPU")
        return "cpu"
    if not _noted_cpu:
        log.info("faiss sees no GPU (faiss-cpu build or no device): indexes are searched on the CPU")
        _noted_cpu = True
    return "cpu"


def to_device(index: faiss.Index, device: str) -> faiss.Index:
    """A copy of a CPU index on the GPU (device ``"gpu"``), or the index itself (``"cpu"``)."""
    if device == "cpu":
        return index
    return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)


@functools.lru_cache(maxsize=1)
def _gpu_resources() -> Any:
    """One set of GPU resources (streams, scratch memory) shared by every index, alive for the whole process."""
    return faiss.StandardGpuResources()


def default_nlist(n: int) -> int:
    """IVF lists for n vectors: about 4·sqrt(n), with at least 39 training points per list."""
    return max(1, min(int(4 * math.sqrt(n)), n // _MIN_POINTS_PER_LIST))


def make_index(
    vectors: np.ndarray,
    kind: str = "flat",
    *,
    nlist: int | None = None,
    nprobe: int = 16,
    hnsw_m: int = 32,
    ef_construction: int = 200,
    ef_search: int = 128,
) -> faiss.Index:
    """A CPU inner-product index holding ``vectors`` (row i gets id i).

    Args:
        vectors: (n, d) float32 unit vectors (inner product = cosine).
        kind: ``flat`` (exact), ``ivf`` (inverted lists; approximate, for very large references) or ``hnsw``
            (graph; approximate, fastest single queries on a CPU).
        nlist: IVF lists (None: :func:`default_nlist`).
        nprobe: IVF lists visited per query.
        hnsw_m: HNSW neighbours per node.
        ef_construction: HNSW candidate list while building.
        ef_search: HNSW candidate list while searching (at least k is used).

    Raises:
        ValueError: bad shape or kind.
    """
    x = _check_vectors(vectors)
    n, d = x.shape
    index: Any
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        lists = default_nlist(n) if nlist is None else nlist
        if not 1 <= lists <= max(n, 1):
            raise ValueError(f"nlist must be between 1 and the number of vectors {n}; got {lists}")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.nprobe = min(nprobe, lists)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    else:
        raise ValueError(f"kind must be one of {', '.join(INDEX_KINDS)}; got {kind!r}")
    if n:
        index.add(x)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> Neighbors:
    """The k best entries per query; pads with id -1 / score -inf where the index holds fewer than k."""
    q = _check_vectors(queries)
    if q.shape[1] != index.d:
        raise ValueError(f"queries have dimension {q.shape[1]} but the index holds dimension {index.d}")
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    kk = min(k, int(index.ntotal))
    ids = np.full((len(q), k), -1, dtype=np.int64)
    scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    if kk and len(q):
        hnsw = getattr(index, "hnsw", None)
        if hnsw is not None and hnsw.efSearch < kk:
            hnsw.efSearch = kk
        with _one_thread_if(len(q) <= SMALL_SEARCH and not _is_gpu(index)):
            s, i = index.search(q, kk)
        ids[:, :kk] = i
        scores[:, :kk] = np.where(i >= 0, s, -np.inf)
    return Neighbors(ids, scores)


@contextmanager
def _one_thread_if(small: bool) -> Iterator[None]:
    """Run the block on one OpenMP thread when ``small`` (OpenMP thread counts are per calling thread)."""
    if not small:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def reconstruct_all(index: faiss.Index) -> np.ndarray:
    """Every stored vector, in id order (for IVF, after building its direct map)."""
    n = int(index.ntotal)
    if n == 0:
        return np.zeros((0, index.d), dtype=np.float32)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
    return index.reconstruct_n(0, n)


def write_index(index: faiss.Index, path: str | Path) -> None:
    """Write a CPU copy of the index (GPU indexes are copied back first)."""
    cpu = faiss.index_gpu_to_cpu(index) if _is_gpu(index) else index
    faiss.write_index(cpu, str(path))


def read_index(path: str | Path) -> faiss.Index:
    return faiss.read_index(str(path))


def _is_gpu(index: faiss.Index) -> bool:
    return type(index).__name__.startswith("Gpu")


def _check_vectors(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"vectors must be a 2-D array (n, d) with d > 0; got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)
