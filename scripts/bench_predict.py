#!/usr/bin/env python
"""Benchmark of `predict`: time to name a full-size experiment jointly, and auto against each fixed centering.

Timing: one experiment of the RxRx1 design (4 plates x 308 wells, 1,139 classes) against an index of its cell type
(synthetic vectors, :mod:`phenoprint.index.simulate`), scored per well (the baseline) and decoded jointly (plate
groups + assignment); the goal is <= 2 s on 2 cores. Accuracy: `phenoprint evaluate` with plate assignment for each
fixed centering and for ``auto``, on ``--embeddings`` (e.g. the demo's labelled tables) or, without it, on synthetic
vectors; ``--oracle`` adds the no-batch-effects twin.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from phenoprint.atomic import write_json_atomic
from phenoprint.cli import ArgumentParser, setup_logging


def time_predict(dim: int, repeats: int) -> dict:
    """Seconds to predict one full-size experiment: per-well top-k alone, and with plate decoding."""
    from phenoprint.index.build import build_experiment_index
    from phenoprint.index.classify import classify
    from phenoprint.index.config import IndexConfig
    from phenoprint.index.decode import predict_experiment
    from phenoprint.index.simulate import VectorDesign, simulate_table

    design = VectorDesign(cell_types=(("HUVEC", 6),), dim=dim)
    table = simulate_table(design, seed=0)
    target = "HUVEC-01"
    index = build_experiment_index(table, target, IndexConfig(center="tvn", mode="centroid"))
    wells = table.subset(table.experiment_mask(target))
    per_well, joint = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        classify(index.center(wells.features), index, k=5, mode="centroid")
        per_well.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        bp = predict_experiment(index, wells, k=5)
        joint.append(time.perf_counter() - t0)
    labelled = bp.wells.true_sirna_id.notna()
    return {
        "wells": len(wells),
        "classes": len(index.sirna_ids),
        "entries": len(index),
        "dim": dim,
        "per_well_seconds": float(np.median(per_well)),
        "predict_seconds": float(np.median(joint)),
        "ratio_predict_to_per_well": float(np.median(joint) / np.median(per_well)),
        "goal_seconds": 2.0,
        "assigned_top1": float((bp.wells.assigned_sirna_id[labelled] == bp.wells.true_sirna_id[labelled]).mean()),
        "per_well_top1": float((bp.wells.top1_sirna_id[labelled] == bp.wells.true_sirna_id[labelled]).mean()),
    }


def accuracy(table, holdout: tuple[str, ...] | None) -> dict:
    """Held-out top-1 with plate assignment for every fixed centering and for auto."""
    from phenoprint.index.config import IndexConfig
    from phenoprint.index.evaluate import EvalConfig, evaluate

    out = {}
    for center in ("none", "center", "center_scale", "tvn", "auto"):
        cfg = EvalConfig(
            index=IndexConfig(center=center, mode="auto" if center == "auto" else "centroid"),
            holdout=holdout,
            assign=True,
            replicate_map=False,
            silhouette=False,
        )
        o = evaluate(table, cfg).overall
        out[center] = {k: o[k] for k in o if k.endswith("assigned_top1") or k.endswith("_top1")}
    fixed = [max(v["knn_assigned_top1"], v["centroid_assigned_top1"]) for c, v in out.items() if c != "auto"]
    out["best_fixed_assigned_top1"] = max(fixed)
    out["auto_minus_best_fixed"] = out["auto"]["auto_assigned_top1"] - max(fixed)
    return out


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="bench_predict.py", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_predict.json"), help="JSON result")
    p.add_argument("--dim", type=int, default=128, help="embedding dimension of the timed experiment")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (the median is reported)")
    p.add_argument("--embeddings", type=Path, nargs="*", default=None, help="labelled tables to score auto on")
    p.add_argument("--oracle", type=Path, nargs="*", default=None, help="the oracle twin's labelled tables")
    p.add_argument("--holdout", default=None, help="comma-separated held-out experiments (default: all in turn)")
    args = p.parse_args(argv)
    setup_logging(0, quiet=True)
    from phenoprint.data.table import concat_tables, read_embeddings
    from phenoprint.index.simulate import VectorDesign, simulate_table

    holdout = tuple(args.holdout.split(",")) if args.holdout else None
    from datetime import datetime, timezone

    result: dict = {
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "cpu_count": os.cpu_count(),
        "timing": time_predict(args.dim, args.repeats),
    }
    if args.embeddings:
        result["accuracy"] = accuracy(concat_tables([read_embeddings(e) for e in args.embeddings]), holdout)
        result["accuracy_source"] = [str(e) for e in args.embeddings]
    else:
        design = VectorDesign.small(n_treatments=200, n_positive_controls=10, dim=32)
        result["accuracy"] = accuracy(simulate_table(design, seed=1), holdout)
        result["accuracy_source"] = "synthetic vectors (VectorDesign.small: 7 experiments, 211 classes, 32-d)"
    if args.oracle:
        result["oracle"] = accuracy(concat_tables([read_embeddings(e) for e in args.oracle]), holdout)
    write_json_atomic(result, args.out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
