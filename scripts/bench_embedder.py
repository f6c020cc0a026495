#!/usr/bin/env python
"""Embedder benchmark on the synthetic `demo` preset (JSON output).

Held-out-experiment top-1 of the centred kNN against: the same embeddings uncentred, a hand-crafted
profile (per-channel intensity and texture statistics) through the same index, and the same recipe
trained and tested on the no-batch-effects twin (the oracle). Also CPU embedding throughput of the
whole pipeline (pack → standardize → network) against the network alone on the same batch shape.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phenoprint import __version__
from phenoprint.atomic import write_json_atomic
from phenoprint.cli import ArgumentParser
from phenoprint.pipeline import DemoConfig, generate, holdout_experiments, pack_root, train_model

log = logging.getLogger("bench_embedder")
CENTERINGS = ("none", "center", "center_scale", "tvn")


def evaluate_table(table, holdout: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """kNN and centroid top-1 of the held-out treatment wells for every centering."""
    from phenoprint.index.config import IndexConfig
    from phenoprint.index.evaluate import EvalConfig, evaluate

    out = {}
    for center in CENTERINGS:
        cfg = EvalConfig(
            index=IndexConfig(center=center, mode="centroid"), holdout=holdout, replicate_map=False, silhouette=False
        )
        o = evaluate(table, cfg).overall
        out[center] = {k: round(float(o[k]), 4) for k in ("knn_top1", "knn_top5", "centroid_top1")}
    return out


def embed_all(config: DemoConfig, run: Path, root: Path, pack: Path, bn_adapt: bool):
    """Every well of a data root through a trained run, as a labelled table."""
    from phenoprint.data.source import open_source
    from phenoprint.data.table import read_embeddings
    from phenoprint.embedder.export import export_embeddings
    from phenoprint.embedder.inference import load_model

    out = run / f"all{'_bn' if bn_adapt else ''}.parquet"
    if not out.is_file():
        export_embeddings(
            load_model(run), open_source(root, pack), out, tta=config.tta, bn_adapt=bn_adapt, progress=False
        )
    return read_embeddings(out)


def handcrafted_table(root: Path, pack: Path):
    """The hand-crafted profile of every well, standardized over the whole table, as an embedding table."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.baseline import well_profiles
    from phenoprint.embedder.data import well_table
    from phenoprint.embedder.export import wells_to_table

    source = open_source(root, pack)
    wells = well_table(source.metadata)
    x = well_profiles(source, wells, progress=False)
    x = (x - x.mean(0)) / x.std(0).clip(min=1e-6)
    return wells_to_table(wells, x)


def throughput(run: Path, root: Path, pack: Path, n_wells: int, batch_size: int) -> dict[str, Any]:
    """Wells/s of the embedding pipeline from the pack vs the network alone on tensors already in memory."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.data import well_table
    from phenoprint.embedder.inference import load_model
    from phenoprint.embedder.throughput import embedding_throughput

    source = open_source(root, pack)
    wells = well_table(source.metadata).head(n_wells)
    return embedding_throughput(load_model(run, "cpu"), source, wells, batch_size=batch_size)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON; returns the exit status."""
    d = DemoConfig()
    p = ArgumentParser(prog="bench_embedder.py", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    p.add_argument("--workdir", type=Path, default=None, help="data and runs (default: a temporary folder)")
    p.add_argument("--preset", default="demo", help="synthetic preset")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs (the demo's recipe by default)")
    p.add_argument("--image-size", type=int, default=d.image_size, help="network input side")
    p.add_argument("--workers", type=int, default=d.workers, help="data generation processes")
    p.add_argument("--seed", type=int, default=0, help="seed of data and training")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_embedder.") as tmp:
        workdir = args.workdir or Path(tmp)
        config = replace(
            d,
            workdir=workdir,
            preset=args.preset,
            epochs=args.epochs,
            image_size=args.image_size,
            workers=args.workers,
            seed=args.seed,
            progress=False,
            serve=False,
        )
        oracle_config = replace(config, workdir=workdir / "oracle-recipe")
        t0 = time.perf_counter()
        root, twin = generate(config, False), generate(config, True)
        pack, twin_pack = pack_root(config, root), pack_root(config, twin)
        holdout = holdout_experiments(root)
        started = time.perf_counter()
        run = train_model(config, root, pack, holdout)
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        oracle_run = train_model(oracle_config, twin, twin_pack, holdout)
        oracle_train_s = time.perf_counter() - started
        results: dict[str, Any] = {
            "holdout": list(holdout),
            "recipe": {k: str(v) for k, v in vars(config).items() if k not in ("workdir", "progress", "serve")},
            "train_seconds": round(train_s, 1),
            "oracle_train_seconds": round(oracle_train_s, 1),
        }
        for bn in (False, True):
            key = "bn_adapt" if bn else "plain"
            results[f"cnn_{key}"] = evaluate_table(embed_all(config, run, root, pack, bn), holdout)
            results[f"oracle_{key}"] = evaluate_table(
                embed_all(oracle_config, oracle_run, twin, twin_pack, bn), holdout
            )
        results["handcrafted"] = evaluate_table(handcrafted_table(root, pack), holdout)
        results["throughput"] = throughput(run, root, pack, n_wells=400, batch_size=64)
        rec = "bn_adapt" if config.bn_adapt else "plain"
        best = config.projection_center  # one fixed centering for every experiment
        cnn, base, oracle = results[f"cnn_{rec}"], results["handcrafted"], results[f"oracle_{rec}"]
        knn = {name: t[best]["knn_top1"] for name, t in (("cnn", cnn), ("handcrafted", base), ("oracle", oracle))}
        centroid = {
            name: t[best]["centroid_top1"] for name, t in (("cnn", cnn), ("handcrafted", base), ("oracle", oracle))
        }
        results["headline"] = {
            "metric": f"held-out kNN top-1, embeddings as the demo makes them ({rec}), centering {best}",
            "centred": knn["cnn"],
            "uncentred": cnn["none"]["knn_top1"],
            "handcrafted_same_index": knn["handcrafted"],
            "oracle_same_recipe": knn["oracle"],
            "ratio_centred_to_uncentred": _ratio(knn["cnn"], cnn["none"]["knn_top1"]),
            "ratio_centred_to_handcrafted": _ratio(knn["cnn"], knn["handcrafted"]),
            "ratio_centred_to_oracle": _ratio(knn["cnn"], knn["oracle"]),
            "centroid": {
                "centred": centroid["cnn"],
                "uncentred": cnn["none"]["centroid_top1"],
                "handcrafted_same_index": centroid["handcrafted"],
                "oracle_same_recipe": centroid["oracle"],
            },
            "ratio_pipeline_to_model_only": results["throughput"]["ratio_pipeline_to_model"],
            "goals": {
                "centred/uncentred": 1.5,
                "centred/handcrafted": 1.5,
                "centred/oracle": 0.8,
                "pipeline/model": 0.8,
            },
        }
        chance = 1.0 / max(1, len(np.unique(embed_all(config, run, root, pack, config.bn_adapt).labels())))
        results["chance_top1"] = round(chance, 4)
        results["seconds"] = round(time.perf_counter() - t0, 1)
    results.update(
        {
            "phenoprint_version": __version__,
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "cpus": _cpus(),
            },
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        }
    )
    write_json_atomic(results, args.out)
    print(json.dumps(results["headline"], indent=2))
    return 0


def _ratio(a: float, b: float) -> float | None:
    return None if b == 0 else round(a / b, 3)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


if __name__ == "__main__":
    sys.exit(main())
