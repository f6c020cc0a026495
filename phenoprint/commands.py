"""Command-line verbs of the jobs that use the embedder and the index together: ``train`` (validated through the
index) and ``build-index`` (onboarding a new batch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from phenoprint.cli import Command
from phenoprint.embedder.commands import add_source, add_train_arguments, train_config_from_args
from phenoprint.embedder.config import DEVICES, with_channels


def _run_train(args: argparse.Namespace) -> int:
    from phenoprint.data.source import open_source
    from phenoprint.embedder.train import train
    from phenoprint.index.evaluate import validation_top1

    source = open_source(args.data, args.pack, layout=args.layout, channels=args.channels)
    config = with_channels(train_config_from_args(args), source.channel_names)  # the model records the data's
    result = train(config, source, args.out, resume=args.resume, validate=validation_top1)
    if result.fingerprint is not None:
        val = "none (nothing held out)" if result.val_top1 is None else f"{result.val_top1:.3f}"
        print(f"trained {result.steps} steps; loss {result.final_loss:.4f}; validation top-1 {val}")
        print(f"run: {result.run_dir}  fingerprint: {result.fingerprint[:16]}  (see MODEL_CARD.md there)")
    return 0


def add_build_index_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `phenoprint build-index` and `scripts/build_index.py` (one function, two entry points)."""
    from phenoprint.index.commands import add_build_options, add_centering_options

    p.add_argument("--model", type=Path, required=True, help="a finished run directory (phenoprint train --out)")
    add_source(p)
    p.add_argument("--experiment", required=True, help="the new batch's experiment name")
    p.add_argument("--out", type=Path, required=True, help="index directory to create or replace (atomically)")
    p.add_argument(
        "--reference",
        type=Path,
        required=True,
        dest="reference_embeddings",
        help="embeddings of the training experiments (phenoprint embed output of the same model)",
    )
    add_centering_options(p, deprecated_reference=False, default_center="auto")
    add_build_options(p)
    p.add_argument(
        "--queries-out",
        type=Path,
        default=None,
        help="also embed all the batch's wells and write them here (to classify them later)",
    )
    p.add_argument(
        "--tta",
        type=int,
        default=None,
        help="dihedral transforms averaged per site (1-8); default: as the reference embeddings were made (their "
        "table records it), so that the batch and the reference are embedded alike",
    )
    p.add_argument(
        "--bn-adapt",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="re-estimate batch-norm statistics on the batch; default: as the reference embeddings were made",
    )
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="embed with the --tta / --bn-adapt given even where the reference was embedded otherwise (a warning "
        "instead of an error; accuracy drops)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="wells per forward pass")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--device", choices=DEVICES, default="auto", help="where to run")


def run_build_index(args: argparse.Namespace) -> int:
    """Onboard one batch: embed its controls, fit its centering, write its index."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.inference import load_model
    from phenoprint.index.commands import index_config_from_args
    from phenoprint.onboard import onboard_experiment, onboard_summary

    result = onboard_experiment(
        load_model(args.model, args.device),
        open_source(args.data, args.pack, layout=args.layout, channels=args.channels),
        args.experiment,
        args.reference_embeddings,
        args.out,
        index_config_from_args(args, build=True),
        queries_out=args.queries_out,
        progress=not getattr(args, "quiet", False),
        tta=args.tta,
        bn_adapt=args.bn_adapt,
        allow_mismatch=args.allow_mismatch,
        batch_size=args.batch_size,
        workers=args.workers,
    )
    print(onboard_summary(result))
    from phenoprint.index.commands import print_selection

    print_selection(result.index_dir)
    return 0


def _add_profiles(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="profiles_command", metavar="<subcommand>", required=True)
    imp = sub.add_parser(
        "import",
        help="read CellProfiler / pycytominer well profiles (CSV or Parquet, gzip ok) into an embedding table",
        description="Map profile files onto phenoprint's embedding table: features are the non-Metadata_ numeric "
        "columns shared by every file; features missing in more than --na-cutoff of the wells are dropped (as "
        "pycytominer's feature_select drop_na_columns does), then wells still missing one. The table then goes to "
        "evaluate, index build and predict like phenoprint's own embeddings.",
    )
    imp.add_argument("files", nargs="+", type=Path, help="profile files (.csv, .csv.gz, .parquet), one or more")
    imp.add_argument("--out", type=Path, required=True, help="the embedding table to write (.parquet, atomically)")
    imp.add_argument(
        "--label",
        required=True,
        help="the label column, or several comma-separated (joined with '@', e.g. compound and dose)",
    )
    imp.add_argument("--experiment", default="Metadata_batch", help="the column naming each well's batch")
    imp.add_argument("--plate", default="Metadata_Plate", help="the plate barcode column")
    imp.add_argument("--well", default="Metadata_Well", help="the well position column")
    imp.add_argument("--cell-type", default=None, help="a column naming the cell type (default: every well unknown)")
    imp.add_argument(
        "--controls",
        default=None,
        help="a pandas query selecting the control wells, as pycytominer's samples= takes it, e.g. "
        "'Metadata_control_type == \"negcon\"' (default: no controls; then centre on all wells, --center-on all)",
    )
    imp.add_argument(
        "--rows", default=None, help="a pandas query keeping only some wells, e.g. 'Metadata_node_type != \"TC\"'"
    )
    imp.add_argument(
        "--control-label", default="control", help="the label of control wells whose label column is empty"
    )
    imp.add_argument(
        "--na-cutoff",
        type=float,
        default=None,
        help="drop a feature missing (NaN/inf) in more than this share of the wells (default: pycytominer's 0.05)",
    )
    imp.set_defaults(_profiles_run=_run_profiles_import)


def _run_profiles(args: argparse.Namespace) -> int:
    return int(args._profiles_run(args))


def _run_profiles_import(args: argparse.Namespace) -> int:
    from phenoprint.data.table import write_embeddings
    from phenoprint.profiles import DEFAULT_NA_CUTOFF, ProfileColumns, import_profiles

    columns = ProfileColumns(
        label=tuple(c.strip() for c in args.label.split(",") if c.strip()),
        experiment=args.experiment,
        plate=args.plate,
        well=args.well,
        controls=args.controls,
        rows=args.rows,
        control_label=args.control_label,
        cell_type=args.cell_type,
        na_cutoff=DEFAULT_NA_CUTOFF if args.na_cutoff is None else args.na_cutoff,
    )
    result = import_profiles(args.files, columns)
    write_embeddings(result.table, args.out)
    print(result.summary())
    print(f"wrote {args.out}")
    return 0


COMMANDS = [
    Command(
        "train",
        "train the 6-channel margin-loss embedder (CPU, GPU, or torchrun for many GPUs)",
        add_train_arguments,
        _run_train,
        description="Train a timm backbone with a BN-Linear-BN neck and an ArcFace / CosFace / cosine-softmax head "
        "on the labelled wells of a data root. Multi-GPU: torchrun --nproc-per-node N -m phenoprint train …",
    ),
    Command(
        "build-index",
        "onboard a new batch: embed its controls, fit its centering, build its index",
        add_build_index_arguments,
        run_build_index,
        description="The per-new-batch job (also scripts/build_index.py). From the batch's images and a metadata "
        "file that labels only its control wells: embed the controls, fit the batch's centering on them, and build "
        "its index against the reference embeddings of the training experiments.",
    ),
    Command(
        "profiles",
        "read CellProfiler / pycytominer well profiles into an embedding table (profiles import)",
        _add_profiles,
        _run_profiles,
        description="Real Cell Painting profiles as phenoprint's input: `profiles import FILES --label COLUMN "
        "--controls QUERY --out table.parquet`, then evaluate / index build / predict on the table.",
    ),
]
