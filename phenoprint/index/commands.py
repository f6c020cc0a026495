"""Command-line verbs of ``phenoprint.index``: ``index build``, ``index info`` and ``evaluate``."""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Literal

from phenoprint.cli import Command

# The registries and the config live in modules that import numpy only: building the parser never imports faiss.
from phenoprint.index.centering import CENTER_METHOD_HELP, REFERENCES
from phenoprint.index.config import (
    CALIBRATION_SOURCES,
    CENTER_CHOICES,
    INDEX_KIND_HELP,
    MODE_HELP,
    MODES,
    POOL_HELP,
    POOLS,
    SCOPES,
    VOTE_HELP,
    IndexConfig,
)

_AUTO: Literal["auto"] = "auto"


def _default(name: str) -> Any:
    """IndexConfig's default of field ``name``: what an option left out asks for."""
    return next(f.default for f in fields(IndexConfig) if f.name == name)


def _non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0 (a bad value is refused with the option's name, before any work)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0; got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0; got {text!r}")
    return value


def add_centering_options(
    p: argparse.ArgumentParser, deprecated_reference: bool = True, default_center: str | None = None
) -> None:
    """Options of the batch centering and of the index scope (shared by every verb that builds indexes).

    Args:
        default_center: ``auto`` for the verbs that build an index (chosen on the batch's controls); None:
            IndexConfig's default.
        deprecated_reference: also accept ``--reference controls|all``, the old spelling of ``--center-on``, with a
            deprecation warning (off for verbs whose ``--reference`` names the reference embeddings).
    """
    p.add_argument(
        "--center",
        choices=CENTER_CHOICES,
        default=_default("center") if default_center is None else default_center,
        help="batch centering fitted per experiment on its reference wells: "
        + "; ".join(CENTER_METHOD_HELP.values())
        + "; ensemble (the mean cosine over all of them, per experiment and per plate; with --center-on all the "
        "whitening ones are left out); auto (the default: for a model's embeddings, the RxRx1 centerings scored on "
        "the batch's labelled controls against the other experiments' controls, the best kept and the table "
        "recorded in the manifest; for profiles no model was trained on, the ensemble with cosine 1-NN)",
    )
    p.add_argument(
        "--center-on",
        dest="reference",
        choices=REFERENCES,
        default=_default("reference"),
        help="wells the centering is fitted on: the experiment's control wells, or all its wells (for data "
        "without controls, e.g. CellProfiler profiles)",
    )
    if deprecated_reference:
        from phenoprint.cli import DeprecatedAlias

        p.add_argument(
            "--reference", dest="reference", choices=REFERENCES, action=DeprecatedAlias, replacement="--center-on"
        )
    p.add_argument("--per-plate", action="store_true", help="fit the centering per plate instead of per experiment")
    p.add_argument(
        "--pca-dim",
        type=int,
        default=_default("pca_dim"),
        help="TVN: principal components estimated one by one (default: half the reference wells, at most the "
        "dimension)",
    )
    p.add_argument(
        "--ridge",
        type=float,
        default=_default("ridge"),
        help="TVN: λ of (Σ + λI)^-1/2, as a fraction of Σ's mean eigenvalue",
    )
    p.add_argument(
        "--epsilon",
        type=_non_negative_float,
        default=_default("epsilon"),
        help="ZCA / ZCA-cor: the regularizer ε added to each eigenvalue of the pooled covariance before its inverse "
        f"square root (default {_default('epsilon'):g}, pycytominer's spherize default)",
    )
    p.add_argument(
        "--pool",
        choices=POOLS,
        default=_default("pool"),
        help="zca / zca_cor / tvn_pooled: whose reference wells the pooled whitening is fitted on: "
        + "; ".join(f"{k}: {v}" for k, v in POOL_HELP.items()),
    )
    p.add_argument(
        "--scope",
        choices=SCOPES,
        default=_default("scope"),
        help="which other experiments' labelled wells are indexed: those of the same cell type, or all",
    )


def add_knn_options(p: argparse.ArgumentParser) -> None:
    """Options of the kNN vote (every verb that classifies with an index it builds)."""
    p.add_argument(
        "--n-neighbors", type=int, default=_default("n_neighbors"), help="kNN: neighbours that vote (1: 1-NN)"
    )
    p.add_argument(
        "--vote",
        choices=tuple(VOTE_HELP),
        default=_default("vote"),
        help="kNN: " + "; ".join(f"{v}: {what}" for v, what in VOTE_HELP.items()),
    )
    p.add_argument(
        "--temperature", type=float, default=_default("temperature"), help="kNN: the weighted vote's temperature"
    )


def add_build_options(p: argparse.ArgumentParser) -> None:
    """Options of the FAISS index and of the open-set threshold (verbs that write an index directory)."""
    add_knn_options(p)
    p.add_argument(
        "--kind",
        choices=tuple(INDEX_KIND_HELP),
        default=_default("kind"),
        help="; ".join(f"{kind}: {what}" for kind, what in INDEX_KIND_HELP.items()),
    )
    p.add_argument("--nlist", type=int, default=_default("nlist"), help="IVF lists (default: about 4·sqrt(entries))")
    p.add_argument("--nprobe", type=int, default=_default("nprobe"), help="IVF lists visited per query")
    p.add_argument("--hnsw-m", type=int, default=_default("hnsw_m"), help="HNSW neighbours per node")
    p.add_argument("--ef-search", type=int, default=_default("ef_search"), help="HNSW candidate list while searching")
    p.add_argument(
        "--mode",
        choices=(_AUTO, *MODE_HELP),
        default=_default("mode"),  # auto: chosen per batch with the centering
        help="how the index names wells (the service and predict use it): "
        + ", ".join(MODE_HELP.values())
        + ", or auto (the better of the two on the batch's labelled controls)",
    )
    p.add_argument(
        "--open-set-quantile",
        type=float,
        default=_default("open_set_quantile"),
        help="share of the calibration wells allowed below the unknown threshold (0 turns the flag off)",
    )
    p.add_argument(
        "--open-set-calibration",
        choices=CALIBRATION_SOURCES,
        default=_default("open_set_calibration"),
        help="calibrate the unknown threshold on the other experiments' treatment wells (leave-experiment-out), or "
        "on this experiment's control wells (whose strong, whitened-away phenotypes make a poor stand-in for "
        "treatments)",
    )


def index_config_from_args(args: argparse.Namespace, build: bool = False) -> IndexConfig:
    """The IndexConfig the options of :func:`add_centering_options` (and :func:`add_build_options`) ask for."""
    more: dict[str, object] = {}
    if build:
        more = {
            "kind": args.kind,
            "nlist": args.nlist,
            "nprobe": args.nprobe,
            "hnsw_m": args.hnsw_m,
            "ef_search": args.ef_search,
            "open_set_quantile": args.open_set_quantile,
            "open_set_calibration": args.open_set_calibration,
            "mode": args.mode,
        }
    for name in ("n_neighbors", "vote", "temperature"):
        if hasattr(args, name):
            more[name] = getattr(args, name)
    return IndexConfig(
        center=args.center,
        reference=args.reference,
        per_plate=args.per_plate,
        pca_dim=args.pca_dim,
        ridge=args.ridge,
        epsilon=args.epsilon,
        pool=args.pool,
        scope=args.scope,
        **more,  # type: ignore[arg-type]
    )


def _add_embeddings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", type=Path, required=True, help="embedding table (.parquet file or folder of parts)")


def _add_index(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="index_command", metavar="<subcommand>", required=True)
    build = sub.add_parser(
        "build",
        help="build the index of one experiment",
        description="Build the per-experiment index: the experiment's control wells and the labelled wells of the "
        "other experiments (same cell type by default), each centred with its own experiment's statistics, in "
        "FAISS, written atomically as a directory with a manifest.",
    )
    _add_embeddings(build)
    add_centering_options(build, default_center=_AUTO)
    build.add_argument("--experiment", required=True, help="the experiment whose wells the index will name")
    build.add_argument("--out", type=Path, required=True, help="index directory (replaced atomically if it exists)")
    add_build_options(build)
    build.add_argument(
        "--fingerprint", default=None, help="model fingerprint to record (default: the embedding table's)"
    )
    build.set_defaults(_index_run=_run_build)

    info = sub.add_parser(
        "info", help="print the manifest of an index directory, or list the indexes of a folder of them"
    )
    info.add_argument("dir", type=Path, help="an index directory, or a folder of them (as serve --indexes takes)")
    info.set_defaults(_index_run=_run_info)


def _run_index(args: argparse.Namespace) -> int:
    return int(args._index_run(args))


def _run_build(args: argparse.Namespace) -> int:
    from phenoprint.data.table import read_embeddings
    from phenoprint.index.build import build_experiment_index

    config = index_config_from_args(args, build=True)
    table = read_embeddings(args.embeddings)
    index = build_experiment_index(table, args.experiment, config, fingerprint=args.fingerprint)
    index.save(args.out)
    c = index.manifest["counts"]
    print(
        f"wrote {args.out}: {c['entries']} entries ({c['controls']} own controls, {c['training']} from "
        f"{c['source_experiments']} other experiments), {c['sirnas']} siRNAs, dim {index.dim}, "
        f"unknown threshold {index.open_set.threshold:.3f}"
    )
    print_selection(args.out)
    return 0


def print_selection(index_dir: Path) -> None:
    """Print what ``--center auto`` / ``--mode auto`` chose for an index, and whether the lead is within noise."""
    from phenoprint.index.artifact import MANIFEST_NAME, read_json

    manifest = read_json(Path(index_dir) / MANIFEST_NAME)
    selection = manifest.get("selection")
    if selection:
        noisy = "; the lead is within noise" if selection.get("within_noise") else ""
        table = f" (the whole table: phenoprint index info {index_dir})" if selection.get("table") else ""
        print(f"auto chose {selection['reason']}{noisy}{table}")


def _run_info(args: argparse.Namespace) -> int:
    from phenoprint.errors import IndexFormatError
    from phenoprint.index.artifact import MANIFEST_NAME, read_json
    from phenoprint.index.folders import inspect_index_folder

    folder = inspect_index_folder(args.dir)
    if folder.kind == "index":
        print(json.dumps(read_json(args.dir / MANIFEST_NAME), indent=2, sort_keys=True))
        return 0
    if folder.kind != "root":
        raise IndexFormatError(
            folder.problem or f"{args.dir}: not an index directory (no {MANIFEST_NAME}) and holds no index directory"
        )
    print(f"{args.dir}: {len(folder.indexes)} indexes (`phenoprint index info {args.dir}/<NAME>` prints one manifest)")
    rows = [("name", "experiment", "entries", "siRNAs", "centering", "created", "model")]
    for path in folder.indexes:
        try:
            m = read_json(path / MANIFEST_NAME)
            counts, centering = m.get("counts") or {}, m.get("centering") or {}
            rows.append(
                (
                    path.name,
                    str(m.get("experiment")),
                    str(counts.get("entries", "?")),
                    str(counts.get("sirnas", "?")),
                    str(centering.get("method", "?"))
                    + (" per plate" if centering.get("per_plate") else "")
                    + f" + {m.get('mode', 'centroid')}"
                    + (" (auto)" if m.get("selection") else ""),
                    str(m.get("created", "?")),
                    str(m.get("fingerprint") or "-")[:12],
                )
            )
        except (OSError, ValueError) as exc:
            rows.append((path.name, f"unreadable manifest ({exc})", "", "", "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    _add_embeddings(p)
    add_centering_options(p, default_center=_AUTO)
    p.add_argument(
        "--holdout",
        default=None,
        help="comma-separated experiments to query (default: every labelled experiment in turn, leave-one-out)",
    )
    p.add_argument("--k", type=int, default=5, help="top-k accuracy")
    add_knn_options(p)
    p.add_argument(
        "--group-by",
        choices=("batch", "plate"),
        default="batch",
        help="hold out each batch (experiment) in turn, or each plate (its batch's other plates join the reference)",
    )
    p.add_argument(
        "--exclude-same-well",
        action="store_true",
        help="entries at the query's well position (on any plate) are neither neighbours nor part of a centroid: for "
        "plates that share one layout, where a well's position gives its label away",
    )
    p.add_argument("--mode", choices=(*MODES, "both"), default="both", help="classification mode(s) to compare")
    p.add_argument(
        "--assign", action="store_true", help="also score plate-constrained assignment (plate groups from the labels)"
    )
    p.add_argument("--no-map", action="store_true", help="skip the replicate-retrieval mAP")
    p.add_argument("--max-map-queries", type=int, default=None, help="sample this many query wells for the mAP")
    p.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    p.add_argument("--plots", type=Path, default=None, help="write projection PNGs (before/after centering) here")


def _run_evaluate(args: argparse.Namespace) -> int:
    from phenoprint.atomic import write_json_atomic
    from phenoprint.data.table import read_embeddings
    from phenoprint.index.evaluate import EvalConfig, evaluate

    table = read_embeddings(args.embeddings)
    # auto: the choices onboarding would make (centering and mode) per held-out experiment; a fixed centering is
    # scored in every mode asked for (--mode), so the index's own mode plays no part
    mode = _AUTO if args.center == _AUTO else "centroid"
    index_config = replace(index_config_from_args(args), mode=mode)
    config = EvalConfig(
        index=index_config,
        holdout=tuple(e.strip() for e in args.holdout.split(",") if e.strip()) if args.holdout else None,
        k=args.k,
        modes=MODES if args.mode == "both" else (args.mode,),
        assign=args.assign,
        group_by="experiment" if args.group_by == "batch" else args.group_by,
        exclude_same_well=args.exclude_same_well,
        replicate_map=not args.no_map,
        max_map_queries=args.max_map_queries,
    )
    report = evaluate(table, config)
    print(report.format_table())
    if args.out is not None:
        write_json_atomic(report.to_json(), args.out)
        print(f"wrote {args.out}")
    if args.plots is not None:
        from phenoprint.index.plots import plots

        if report.choices:  # auto: the centering chosen most often, as the report's mAP uses
            picks = Counter((c["center"], c["per_plate"]) for c in report.choices.values())
            (center, per_plate), _ = picks.most_common(1)[0]
            index_config = replace(index_config, center=center, per_plate=per_plate)
        for path in plots(table, index_config, args.plots):
            print(f"wrote {path}")
    return 0


COMMANDS = [
    Command(
        "index",
        "build and inspect per-experiment FAISS indexes (index build, index info)",
        _add_index,
        _run_index,
        description="Per-experiment indexes of batch-centred embeddings: `index build` writes one, `index info DIR` "
        "prints its manifest (or, for a folder of indexes, lists them).",
    ),
    Command(
        "evaluate",
        "leave-experiment-out accuracy, replicate mAP and batch mixing of an embedding table",
        _add_evaluate,
        _run_evaluate,
        description="Query each held-out experiment against an index built from the other experiments and its own "
        "controls; print top-1/top-k accuracy (overall, per cell type, per experiment), optionally with "
        "plate-constrained assignment, the replicate-retrieval mAP and the silhouette by experiment before and after "
        "centering.",
    ),
]
