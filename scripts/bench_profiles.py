#!/usr/bin/env python
"""Real Cell Painting profiles as the judge: phenoprint's centerings and ``auto`` beside pycytominer's own recipes.

For each set of ``../shared/profiles`` (see its README) and task, leave-one-group-out top-1 of the held-out batch's
(or plate's) labelled treatment wells against the other groups' labelled wells, in one run:

(a) the features as they come + cosine 1-NN;
(b) pycytominer ``normalize(method="standardize", samples=<controls>)`` per plate + cosine 1-NN;
(c) pycytominer ``normalize(method="mad_robustize", samples=<controls>)`` per plate, then ``normalize(
    method="spherize", samples=<controls>)`` (ZCA-cor, ε 1e-6: pycytominer's defaults) on all plates + cosine 1-NN;
(d) every phenoprint centering (per batch and per plate, fitted on the controls), and their ensemble (the mean cosine
    over all of them), x mode (kNN as configured, 1-NN, centroid);
(e) phenoprint ``--center auto --mode auto``, the default of ``build-index`` and ``evaluate`` (on profiles: the
    ensemble with cosine 1-NN).

pycytominer is called, not reimplemented (the ``profiles`` extra). Sets: ``cdot-standard`` (CDoT batches 1-3) and
``cdot-live`` (5, 6, 8; the two dye families share few features), tasks compound and MoA, leave-one-batch-out, with
and without the same-well neighbours (every CDoT plate has one layout); ``varchamp`` (batches 12, 20, 21; 1 lacks the
gene column), the gene symbol of allele / disease_wt wells, controls the NC wells, leave-one-plate-out and
leave-one-batch-out.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenoprint.atomic import write_json_atomic
from phenoprint.cli import ArgumentParser, setup_logging

NEGCON_CDOT = 'Metadata_control_type == "negcon"'
SETS: dict[str, dict[str, Any]] = {
    "cdot-standard": {"folder": "cdot", "batches": ("Batch1_", "Batch2_", "Batch3_"), "controls": NEGCON_CDOT},
    "cdot-live": {"folder": "cdot", "batches": ("Batch5_", "Batch6_", "Batch8_"), "controls": NEGCON_CDOT},
    "varchamp": {
        "folder": "varchamp",
        "batches": ("Batch_12_", "Batch_20_", "Batch_21_"),
        "controls": 'Metadata_node_type == "NC"',
        "rows": 'Metadata_node_type in ["allele", "disease_wt", "NC"]',
    },
}
#: (set, task name, label column, hold out, exclude same-well neighbours)
TASKS: tuple[tuple[str, str, str, str, bool], ...] = (
    *(
        (s, f"{what}, leave-one-batch-out{', same well excluded' if ex else ''}", col, "experiment", ex)
        for s in ("cdot-standard", "cdot-live")
        for what, col in (("compound", "Metadata_broad_sample"), ("MoA", "Metadata_MoA"))
        for ex in (False, True)
    ),
    ("varchamp", "gene, leave-one-plate-out", "Metadata_symbol", "plate", False),
    ("varchamp", "gene, leave-one-batch-out", "Metadata_symbol", "experiment", False),
)
META = ["Metadata_experiment", "Metadata_plate", "Metadata_well", "Metadata_well_type"]
CONTROLS_QUERY = 'Metadata_well_type == "negative_control"'


def load(root: Path, name: str, label: str):
    """The set's files through ``phenoprint profiles import`` (the reader a user would use)."""
    from phenoprint.profiles import ProfileColumns, import_profiles

    spec = SETS[name]
    files = []
    for tag in spec["batches"]:
        found = sorted((root / spec["folder"]).glob(f"*{tag}*normalized_feature_select_batch.csv.gz"))
        found = [f for f in found if "negcon" not in f.name]
        if len(found) != 1:
            raise FileNotFoundError(f"{root / spec['folder']}: expected one *{tag}*normalized_feature_select_batch")
        files.append(found[0])
    cols = ProfileColumns(label=(label,), controls=spec["controls"], rows=spec.get("rows"))
    return import_profiles(files, cols)


def pycytominer_tables(table) -> dict[str, Any]:
    """Baselines (b) and (c): the table's features normalized by pycytominer itself (per plate, on the controls)."""
    import pycytominer

    from phenoprint.data.table import EmbeddingTable

    feats = list(table.feature_names)
    frame = pd.concat([table.meta[META].reset_index(drop=True), pd.DataFrame(table.features, columns=feats)], axis=1)
    out: dict[str, Any] = {}

    def per_plate(method: str) -> pd.DataFrame:
        parts = []
        for _, plate in frame.groupby(["Metadata_experiment", "Metadata_plate"], sort=False):
            parts.append(
                pycytominer.normalize(plate, features=feats, meta_features=META, samples=CONTROLS_QUERY, method=method)
            )
        return pd.concat(parts).loc[frame.index]

    def as_table(normalized: pd.DataFrame) -> EmbeddingTable:
        x = normalized[feats].to_numpy(dtype=np.float64)
        x = np.where(np.isfinite(x), x, 0.0)  # a feature constant on a plate's controls: pycytominer gives inf/NaN
        return EmbeddingTable(table.meta, x.astype(np.float32), table.feature_names, None, dict(table.info))

    out["(b) pycytominer standardize per plate + 1-NN"] = as_table(per_plate("standardize"))
    mad = per_plate("mad_robustize")
    try:
        sph = pycytominer.normalize(mad, features=feats, meta_features=META, samples=CONTROLS_QUERY, method="spherize")
        out["(c) pycytominer mad_robustize per plate + spherize + 1-NN"] = as_table(sph)
    except ValueError as exc:  # e.g. its rank check
        out["(c) pycytominer mad_robustize per plate + spherize + 1-NN"] = f"pycytominer refused: {exc}"
    return out


def score(table, center: str, per_plate: bool, modes: tuple[str, ...], group_by: str, exclude: bool, **index: Any):
    """Leave-one-group-out top-1 by mode (phenoprint's evaluate, the same for every row of the table)."""
    from phenoprint.index.config import IndexConfig
    from phenoprint.index.evaluate import EvalConfig, evaluate

    index = {"mode": "centroid", **index}  # a fixed mode unless auto is asked for (the modes scored are ``modes``)
    ic = IndexConfig(center=center, per_plate=per_plate, scope="all", open_set_quantile=0.0, **index)
    cfg = EvalConfig(
        index=ic,
        modes=modes,
        replicate_map=False,
        silhouette=False,
        group_by=group_by,
        exclude_same_well=exclude,
    )
    rep = evaluate(table, cfg)
    return rep


def _hits(rep: Any, mode: str) -> np.ndarray:
    """Each query's top-1 right (True) or wrong, in the report's query order (experiment, plate, well)."""
    frame = rep.per_query.sort_values(["experiment", "plate", "well"], kind="stable")
    return frame[f"{mode}_top1"].to_numpy(dtype=bool)


def run_task(table, baselines: dict[str, Any], group_by: str, exclude: bool) -> dict[str, Any]:
    from phenoprint.index.centering import CENTER_METHODS

    one_nn = {"n_neighbors": 1}
    rows: dict[str, Any] = {}
    rep = score(table, "none", False, ("knn",), group_by, exclude, **one_nn)
    rows["(a) raw features + 1-NN"] = rep.overall["knn_top1"]
    n_queries = rep.n_queries
    hits: dict[str, np.ndarray] = {}  # each query's right/wrong, for the paired standard error of auto's lead
    for name, t in baselines.items():
        if isinstance(t, str):
            rows[name] = t
            continue
        rep = score(t, "none", False, ("knn",), group_by, exclude, **one_nn)
        rows[name], hits[name] = rep.overall["knn_top1"], _hits(rep, "knn")
    fixed: dict[str, float] = {}
    for method in (*CENTER_METHODS, "ensemble"):
        for per_plate in (False, True) if method not in ("none", "ensemble") else (False,):
            name = f"{method}{' per plate' if per_plate else ''}"
            rep = score(table, method, per_plate, ("knn", "centroid"), group_by, exclude)
            for mode in ("knn", "centroid"):
                fixed[f"{name} + {mode}"] = rep.overall[f"{mode}_top1"]
            rep = score(table, method, per_plate, ("knn",), group_by, exclude, **one_nn)
            fixed[f"{name} + 1-NN"] = rep.overall["knn_top1"]
    auto = score(table, "auto", False, ("knn", "centroid"), group_by, exclude, mode="auto")
    numeric = {k: v for k, v in rows.items() if not isinstance(v, str) and not k.startswith("(a)")}
    best_base = max(numeric, key=numeric.__getitem__) if numeric else None
    best_fixed = max(fixed, key=fixed.__getitem__)
    a = auto.overall["auto_top1"]
    lead_se = None
    if best_base is not None:  # the same queries in the same order: a paired difference
        d = _hits(auto, "auto").astype(float) - hits[best_base]
        lead_se = round(float(d.std(ddof=1) / np.sqrt(len(d))), 4)
    return {
        "queries": n_queries,
        "baselines": rows,
        "phenoprint": fixed,
        "auto": a,
        "auto_choices": {e: c["reason"] for e, c in auto.choices.items()},
        "best_pycytominer": best_base,
        "best_pycytominer_top1": numeric.get(best_base) if best_base else None,
        "auto_minus_best_pycytominer": None if best_base is None else round(a - numeric[best_base], 4),
        "auto_minus_best_pycytominer_se": lead_se,
        "best_phenoprint_fixed": best_fixed,
        "best_phenoprint_fixed_top1": fixed[best_fixed],
    }


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="bench_profiles.py", description=__doc__)
    p.add_argument("--profiles", type=Path, default=Path("../shared/profiles"), help="the shared profiles folder")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated sets of {', '.join(SETS)}")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_profiles.json"), help="JSON result")
    args = p.parse_args(argv)
    setup_logging(0, quiet=True)
    if importlib.util.find_spec("pycytominer") is None:
        print("pycytominer is not installed: pip install '.[profiles]' (baselines b and c call it)", file=sys.stderr)
        return 2
    if not (args.profiles / "cdot").is_dir():
        print(f"no profiles at {args.profiles} (expected the shared profiles folder, see its README)", file=sys.stderr)
        return 2
    import platform

    from phenoprint.index.choose import CRITERION

    wanted = {s.strip() for s in args.sets.split(",") if s.strip()}
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "pycytominer": importlib.metadata.version("pycytominer"),
        "auto_criterion": CRITERION,
        "tasks": {},
    }
    started = time.perf_counter()
    loaded: dict[tuple[str, str], Any] = {}
    for set_name, task, label, group_by, exclude in TASKS:
        if set_name not in wanted:
            continue
        t0 = time.perf_counter()
        if (set_name, label) not in loaded:
            imp = load(args.profiles, set_name, label)
            loaded[set_name, label] = (imp, pycytominer_tables(imp.table))
        imp, baselines = loaded[set_name, label]
        r = run_task(imp.table, baselines, group_by, exclude)
        r["table"] = {"wells": len(imp.table), "features": imp.table.dim, "batches": imp.table.experiments}
        r["seconds"] = round(time.perf_counter() - t0, 1)
        key = f"{set_name}: {task}"
        result["tasks"][key] = r
        print(
            f"{key}: auto {r['auto']:.3f} vs best pycytominer {r['best_pycytominer_top1']} ({r['best_pycytominer']}); "
            f"best phenoprint fixed {r['best_phenoprint_fixed']} {r['best_phenoprint_fixed_top1']:.3f}",
            flush=True,
        )
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(result, args.out)
    print(json.dumps({k: v["auto_minus_best_pycytominer"] for k, v in result["tasks"].items()}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
