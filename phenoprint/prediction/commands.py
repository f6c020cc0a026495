"""Command-line verb ``predict``: every well of onboarded batches, named jointly per plate."""

from __future__ import annotations

import argparse
from pathlib import Path

from phenoprint.cli import Command
from phenoprint.data.layout import LAYOUTS
from phenoprint.embedder.commands import channel_list
from phenoprint.index.config import MODES


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--index",
        type=Path,
        required=True,
        help="an experiment's index directory (indexes/EXP), or the folder of indexes with --experiment",
    )
    p.add_argument("--experiment", default=None, help="comma-separated experiments of the --index folder to predict")
    p.add_argument(
        "--embeddings",
        type=Path,
        nargs="+",
        default=None,
        help="the batch's embedding table (what build-index --queries-out writes); or give --data and --model",
    )
    p.add_argument("--data", type=Path, default=None, help="data root to embed the batch from (with --model)")
    p.add_argument("--pack", type=Path, default=None, help="packed images of --data (faster than its PNGs)")
    p.add_argument("--layout", choices=("auto", *LAYOUTS), default="auto", help="how --data is laid out (auto: detect)")
    p.add_argument(
        "--channels", type=channel_list, default=None, help="read only these channels of --data, by name (as for embed)"
    )
    p.add_argument("--model", type=Path, default=None, help="the run directory the index was built with")
    p.add_argument("--workers", type=int, default=0, help="image loader processes when embedding")
    p.add_argument(
        "--out", type=Path, required=True, help="predictions: OUT.parquet and OUT.csv, one row per well (atomic)"
    )
    p.add_argument("--k", type=int, default=5, help="per-well candidates reported")
    p.add_argument("--mode", choices=MODES, default=None, help="override the classification mode the index records")
    p.add_argument(
        "--kaggle-submission",
        type=Path,
        default=None,
        help="also write id_code,sirna for every test.csv row of these experiments (controls of test_controls.csv "
        "are not predicted; treatments are assigned among their plate's group)",
    )
    p.add_argument(
        "--kaggle-root", type=Path, default=None, help="the Kaggle-layout root holding test.csv (default: --data)"
    )


def _run_predict(args: argparse.Namespace) -> int:
    from phenoprint.data.table import concat_tables, read_embeddings
    from phenoprint.index.experiment import ExperimentIndex
    from phenoprint.prediction.batch import (
        embed_batch,
        index_dirs,
        kaggle_predictions,
        predict_tables,
        write_predictions,
    )

    experiments = tuple(e.strip() for e in (args.experiment or "").split(",") if e.strip())
    dirs = index_dirs(args.index, experiments)
    indexes = [ExperimentIndex.load(d) for d in dirs]
    if args.embeddings is not None:
        if args.model is not None:
            return _usage("give either --embeddings or --data with --model, not both")
        table = concat_tables([read_embeddings(p) for p in args.embeddings], names=[str(p) for p in args.embeddings])
    elif args.data is not None and args.model is not None:
        table = concat_tables(
            [
                embed_batch(args.model, args.data, args.pack, ix, args.workers, args.layout, args.channels)
                for ix in indexes
            ]
        )
    else:
        return _usage("give the batch's --embeddings, or --data and --model to embed it")
    run = predict_tables(indexes, table, k=args.k, mode=args.mode)
    parquet, csv = write_predictions(run.wells, args.out)
    print(run.summary())
    print(f"wrote {parquet} and {csv} ({len(run.wells)} wells)")
    if args.kaggle_submission is not None:
        from phenoprint.prediction.kaggle import read_test_wells, submission, write_submission

        root = args.kaggle_root or args.data
        if root is None:
            return _usage("--kaggle-submission needs --kaggle-root (or --data): the root holding test.csv")
        test = read_test_wells(root, tuple(ix.experiment for ix in indexes))
        frame = kaggle_predictions(indexes, table, test, args.k, args.mode)
        path = write_submission(submission(test, frame), args.kaggle_submission)
        print(f"wrote {path} ({len(test)} test wells of {', '.join(sorted(set(test.experiment)))})")
    return 0


def _usage(message: str) -> int:
    import sys

    print(f"phenoprint predict: error: {message}", file=sys.stderr)
    return 2


COMMANDS = [
    Command(
        "predict",
        "name every well of onboarded batches jointly (plate groups + assignment); Kaggle submission",
        _add_predict,
        _run_predict,
        description="Name every well of a batch: per-well top-k from its index, each plate's treatment group from the "
        "learned plate design, then a one-to-one assignment (each treatment siRNA once per experiment). Writes a "
        "Parquet and a CSV with one row per well; with labels, prints top-1 per well against the joint answer.",
    ),
]
