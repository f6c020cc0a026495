"""Benchmark the index at the real design's scale: accuracy by centering method, search latency and build time.

A synthetic vector set with the RxRx1 design (1,139 siRNAs, 51 experiments: 24 HUVEC / 11 RPE / 11 HEPG2 /
5 U2OS, 4 plates x 308 wells with 277 treatments + 30 positive controls + 1 untreated per plate, 512-d, experiment
and plate offsets, per-feature gains and nuisance directions all larger than the siRNA signal) is evaluated
leave-experiment-out for every centering method (kNN vs centroid, with and without plate assignment); search
latency (single queries and batches) and build time are measured on full-size indexes next to numpy brute force in
the same run. Writes one JSON file and a log next to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from phenoprint.atomic import write_json_atomic
from phenoprint.cli import ArgumentParser
from phenoprint.data.table import EmbeddingTable
from phenoprint.index import faiss_backend
from phenoprint.index.build import build_experiment_index
from phenoprint.index.centering import CENTER_METHODS
from phenoprint.index.classify import classify
from phenoprint.index.config import IndexConfig
from phenoprint.index.evaluate import EvalConfig, evaluate
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.index.simulate import VectorDesign, simulate_table

log = logging.getLogger("bench_index")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_index.json"), help="JSON result file")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic vector set and of every sample")
    p.add_argument(
        "--holdouts-per-cell-type",
        type=int,
        default=3,
        help="query experiments per cell type for the accuracy section (0: all 51; each is queried against an "
        "index of all the others of its cell type and its own controls)",
    )
    p.add_argument("--methods", default=",".join(CENTER_METHODS), help="centering methods compared, comma-separated")
    p.add_argument("--map-queries", type=int, default=2000, help="query wells sampled for the replicate mAP")
    p.add_argument("--latency-queries", type=int, default=300, help="single queries timed per search method")
    p.add_argument("--build-repeats", type=int, default=3, help="timed builds per cell type (the median is reported)")
    p.add_argument(
        "--novel", type=int, default=100, help="treatment siRNAs hidden from the index in the open-set check"
    )
    p.add_argument("--skip-accuracy", action="store_true", help="only latency and build time")
    return p.parse_args(argv)


def pick_holdouts(table: EmbeddingTable, per_cell_type: int) -> tuple[str, ...] | None:
    """The first ``per_cell_type`` experiments of each cell type (None: all)."""
    if per_cell_type <= 0:
        return None
    exps = table.meta.drop_duplicates("Metadata_experiment")
    chosen = exps.groupby("Metadata_cell_type", sort=True).head(per_cell_type)["Metadata_experiment"]
    return tuple(sorted(chosen))


def accuracy_section(table: EmbeddingTable, methods: list[str], holdout: tuple[str, ...] | None, args) -> dict:
    out: dict[str, Any] = {"holdout": list(holdout) if holdout else "all"}
    for method in methods:
        started = time.perf_counter()
        config = EvalConfig(
            index=IndexConfig(center=method, mode="centroid"),
            holdout=holdout,
            assign=True,
            max_map_queries=args.map_queries,
            seed=args.seed,
        )
        report = evaluate(table, config)
        out[method] = {
            "overall": _round(report.overall),
            "per_cell_type": {k: _round(v) for k, v in report.per_cell_type.items()},
            "replicate_map": _round(report.replicate_map),
            "silhouette_by_experiment": _round(report.silhouette),
            "n_queries": report.n_queries,
            "seconds": round(time.perf_counter() - started, 1),
        }
        o = report.overall
        log.info(
            "%-12s knn top1 %.3f top5 %.3f assigned %.3f | centroid top1 %.3f top5 %.3f assigned %.3f | "
            "mAP %.3f -> %.3f (%.0f s)",
            method,
            o["knn_top1"],
            o["knn_top5"],
            o["knn_assigned_top1"],
            o["centroid_top1"],
            o["centroid_top5"],
            o["centroid_assigned_top1"],
            report.replicate_map["before"] or float("nan"),
            report.replicate_map["after"] or float("nan"),
            out[method]["seconds"],
        )
    return out


def open_set_section(table: EmbeddingTable, target: str, n_novel: int, seed: int) -> dict:
    """Hide ``n_novel`` treatment siRNAs from every other experiment; unknown rates on novel vs known queries."""
    rng = np.random.default_rng(seed)
    treatments = np.unique(table.labels()[table.meta["Metadata_well_type"].to_numpy() == "treatment"])
    novel = rng.choice(treatments, n_novel, replace=False)
    meta = table.meta.copy()
    hide = meta["Metadata_sirna_id"].isin(novel) & (meta["Metadata_experiment"] != target)
    meta.loc[hide, "Metadata_sirna_id"] = pd.NA
    hidden = EmbeddingTable(meta, table.features, table.feature_names, table.fingerprint)
    rows = hidden.experiment_mask(target) & (hidden.meta["Metadata_well_type"] == "treatment").to_numpy()
    is_novel = np.isin(hidden.labels()[rows], novel)
    out: dict[str, Any] = {
        "target": target,
        "novel_sirnas": int(n_novel),
        "quantile": 0.05,
        "statistic": "best centroid cosine (the flag is the same in knn and centroid mode)",
    }
    for method in ("center", "tvn"):
        for calibration in ("training", "controls"):
            index = build_experiment_index(
                hidden, target, IndexConfig(center=method, mode="centroid", open_set_calibration=calibration)
            )
            got = classify(index.center(hidden.features[rows]), index, k=1, mode="centroid")
            key = f"{method}/{calibration}"
            out[key] = {
                "threshold": round(float(index.open_set.threshold), 4),
                "unknown_rate_novel": round(float(got.unknown[is_novel].mean()), 3),
                "unknown_rate_known": round(float(got.unknown[~is_novel].mean()), 3),
            }
            log.info("open set %s: %s", key, out[key])
    return out


def build_section(table: EmbeddingTable, repeats: int) -> tuple[dict, ExperimentIndex]:
    """Median build time of full-size indexes (one experiment per cell type, every method) and save time."""
    targets = list(table.meta.drop_duplicates("Metadata_cell_type")["Metadata_experiment"])
    result: dict[str, Any] = {}
    huvec_index = None
    for method in CENTER_METHODS:
        for target in targets:
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                index = build_experiment_index(table, target, IndexConfig(center=method, mode="centroid"))
                times.append(time.perf_counter() - started)
            result[f"{method}/{target}"] = {
                "seconds_median": round(float(np.median(times)), 3),
                "seconds_max": round(float(np.max(times)), 3),
                "entries": len(index),
            }
            if method == "tvn" and huvec_index is None:
                huvec_index = index
    assert huvec_index is not None
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        huvec_index.save(Path(tmp) / "index")
        result["save_seconds_tvn_largest"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        ExperimentIndex.load(Path(tmp) / "index")
        result["load_seconds_tvn_largest"] = round(time.perf_counter() - started, 3)
    worst = max(v["seconds_median"] for k, v in result.items() if isinstance(v, dict))
    result["worst_median_seconds"] = worst
    result["goal_seconds"] = 1.0
    result["meets_goal"] = bool(worst <= 1.0)
    return result, huvec_index


def _percentiles_ms(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1e6
    return {"p50_ms": round(float(np.percentile(a, 50)), 4), "p99_ms": round(float(np.percentile(a, 99)), 4)}


def _numpy_topk(vectors: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    sims = q @ vectors.T
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def latency_section(index: ExperimentIndex, table: EmbeddingTable, n_single: int, seed: int) -> dict:  # noqa: C901 (one measurement after another)
    """Per-query search time of FAISS (flat, HNSW, IVF), numpy brute force and ``classify``; recall vs brute force.

    Methods are timed interleaved (every single query runs through every method in turn; batches alternate), so
    that load from other processes on a shared machine hits them all alike; batches report the best of repeats.
    """
    k = 10
    rows = table.experiment_mask(index.experiment) & (table.meta["Metadata_well_type"] == "treatment").to_numpy()
    queries = index.center(table.features[rows])
    rng = np.random.default_rng(seed)
    singles = queries[rng.choice(len(queries), min(n_single, len(queries)), replace=False)]
    plate = queries[:277]  # the treatment wells of one plate
    vectors = index.vectors
    build_s = {}
    for kind in ("flat", "hnsw", "ivf"):
        t0 = time.perf_counter()
        built = faiss_backend.make_index(vectors, kind)
        build_s[kind] = round(time.perf_counter() - t0, 3)
        if kind == "flat":
            flat = built
        elif kind == "hnsw":
            hnsw = built
        else:
            ivf = built

    def with_params(searcher: Any, **params: int):
        def run(q: np.ndarray) -> np.ndarray:
            if "ef" in params:
                searcher.hnsw.efSearch = params["ef"]
            if "nprobe" in params:
                searcher.nprobe = params["nprobe"]
            return faiss_backend.search(searcher, q, k).ids

        return run

    methods = {
        "numpy_bruteforce": lambda q: _numpy_topk(vectors, q, k),
        "faiss_flat": with_params(flat),
        "faiss_hnsw_ef128": with_params(hnsw, ef=128),
        "faiss_hnsw_ef512": with_params(hnsw, ef=512),
        "faiss_ivf_nprobe16": with_params(ivf, nprobe=16),
        "faiss_ivf_nprobe64": with_params(ivf, nprobe=64),
        "faiss_ivf_nprobe256": with_params(ivf, nprobe=256),
        "classify_knn_k5": lambda q: classify(q, index, k=5, mode="knn").sirna_ids,
        "classify_centroid_k5": lambda q: classify(q, index, k=5, mode="centroid").sirna_ids,
    }
    names = list(methods)
    for q in singles[:5]:  # warm-up (lazy centroids, page faults)
        for name in names:
            methods[name](q[None])
    single_ns: dict[str, list[int]] = {name: [] for name in names}
    for i, q in enumerate(singles):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter_ns()
            methods[name](q[None])
            single_ns[name].append(time.perf_counter_ns() - t0)
    batch_s: dict[str, dict[str, float]] = {name: {"plate": np.inf, "experiment": np.inf} for name in names}
    for _ in range(3):
        for name in names:
            for label, batch in (("plate", plate), ("experiment", queries)):
                batch_s[name][label] = min(batch_s[name][label], _timed(methods[name], batch))

    truth = _numpy_topk(vectors, queries, k)
    out: dict[str, Any] = {
        "experiment": index.experiment,
        "entries": len(vectors),
        "dim": int(vectors.shape[1]),
        "k": k,
        "ivf_nlist": int(ivf.nlist),
        "hnsw_m": 32,
        "single_queries": len(singles),
        "plate_batch": len(plate),
        "experiment_batch": len(queries),
        "goal_single_query_ms": 1.0,
        "faiss_add_seconds": build_s,
    }
    base = None
    for name in names:
        entry: dict[str, Any] = {
            "single": _percentiles_ms(single_ns[name]),
            "batch_plate_ms_per_query": round(batch_s[name]["plate"] / len(plate) * 1e3, 4),
            "batch_experiment_ms_per_query": round(batch_s[name]["experiment"] / len(queries) * 1e3, 4),
        }
        if name.startswith("faiss"):
            got = methods[name](queries)
            entry["recall_at_10_vs_bruteforce"] = round(
                float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth, strict=True)])), 4
            )
            if name == "faiss_flat":
                entry["identical_top10_fraction"] = round(float(np.mean((got == truth).all(axis=1))), 4)
        if base is None:
            base = entry
        else:
            entry["speedup_vs_numpy"] = {
                "single_p50": round(base["single"]["p50_ms"] / entry["single"]["p50_ms"], 2),
                "batch_plate": round(base["batch_plate_ms_per_query"] / entry["batch_plate_ms_per_query"], 2),
                "batch_experiment": round(
                    base["batch_experiment_ms_per_query"] / entry["batch_experiment_ms_per_query"], 2
                ),
            }
        out[name] = entry
        log.info("%s: %s", name, entry)
    return out


def _timed(fn, batch: np.ndarray) -> float:
    t0 = time.perf_counter()
    fn(batch)
    return time.perf_counter() - t0


def _round(d: dict) -> dict:
    return {k: (None if v is None else round(float(v), 4)) for k, v in d.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log_path = args.out.with_suffix(".log")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(log_path, mode="w")],
    )
    logging.getLogger("phenoprint").setLevel(logging.WARNING)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "command": " ".join(["python", "scripts/bench_index.py", *(argv if argv is not None else sys.argv[1:])]),
        "environment": {
            "cpus": os.cpu_count(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()],
            "faiss": faiss.__version__,
            "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
            "faiss_omp_threads": faiss.omp_get_max_threads(),
            "thread_env": {v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "seed": args.seed,
    }
    design = VectorDesign()
    t0 = time.perf_counter()
    table = simulate_table(design, seed=args.seed)
    result["design"] = {
        **{k: v for k, v in vars(design).items() if k != "cell_types"},
        "cell_types": dict(design.cell_types),
        "n_classes": design.n_classes,
        "wells": len(table),
        "seconds_to_generate": round(time.perf_counter() - t0, 1),
    }
    log.info("synthetic table: %d wells x %d dims", len(table), table.dim)

    build, huvec_index = build_section(table, args.build_repeats)
    result["build"] = build
    log.info("build: %s", build)
    result["latency"] = latency_section(huvec_index, table, args.latency_queries, args.seed)
    if not args.skip_accuracy:
        holdout = pick_holdouts(table, args.holdouts_per_cell_type)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        result["accuracy"] = accuracy_section(table, methods, holdout, args)
        result["open_set"] = open_set_section(table, "HUVEC-01", args.novel, args.seed)
    result["environment"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds_total"] = round(time.perf_counter() - started, 1)
    write_json_atomic(result, args.out)
    log.info("wrote %s (log %s) in %.0f s", args.out, log_path, result["seconds_total"])
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
