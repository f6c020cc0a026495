"""Command-line verbs of ``phenoprint.data``: ``preview``, ``synth`` and ``pack``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from phenoprint.cli import Command


def _add_layout(p: argparse.ArgumentParser) -> None:
    from phenoprint.data.layout import LAYOUTS

    p.add_argument(
        "--layout",
        choices=("auto", *LAYOUTS),
        default="auto",
        help="how the root is laid out: v1 (RxRx1 metadata.csv), kaggle (RxRx1 train.csv …), loaddata (a CellProfiler "
        "LoadData CSV, optionally with layout.toml); auto detects it and says why",
    )


def _layout_arg(args: argparse.Namespace) -> str | None:
    return None if args.layout == "auto" else str(args.layout)


def _add_preview(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "root",
        type=Path,
        help="data root: RxRx1 (v1.0 layout with metadata.csv, or Kaggle layout with train.csv) or a folder with a "
        "CellProfiler LoadData CSV",
    )
    _add_layout(p)
    p.add_argument("--out", type=Path, required=True, help="folder for the RGB PNGs (created)")
    p.add_argument(
        "--experiment", action="append", default=None, help="only this experiment (repeat for several); default: all"
    )
    p.add_argument("--limit", type=int, default=None, help="write at most this many sites; default: all with images")
    p.add_argument(
        "--contrast",
        choices=("percentile", "rxrx1"),
        default="percentile",
        help="percentile: each channel stretched by the image's own intensities (every cell type readable); rxrx1: "
        "the fixed display ranges of rxrx1-utils (they suit HUVEC; HEPG2 comes out nearly white)",
    )


def _run_preview(args: argparse.Namespace) -> int:
    from phenoprint.data.rgb import write_previews

    written = write_previews(
        args.root,
        args.out,
        experiments=args.experiment,
        limit=args.limit,
        contrast=args.contrast,
        progress=not args.quiet,
        layout=_layout_arg(args),
    )
    print(f"wrote {len(written)} RGB previews to {args.out}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a seed in 0 … 2**63-1, got {value}")
    return value


def _add_synth(p: argparse.ArgumentParser) -> None:
    from phenoprint.data.synth.design import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, PRESETS

    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="demo",
        help="design size: tiny (tests, 64 px, seconds), demo (CPU demo, 128 px, about 2,000 sites), "
        "full (the release's 51 experiments x 308 wells x 2 sites at 512 px)",
    )
    p.add_argument("--out", type=Path, required=True, help="data root to write (new or empty, or an interrupted run)")
    p.add_argument("--seed", type=_seed, default=0, help="root of every random stream; same seed, same bytes")
    p.add_argument(
        "--no-batch-effects",
        action="store_true",
        help="render the oracle twin: the same wells, cells and biology without experiment, plate, edge or site "
        "effects",
    )
    p.add_argument(
        "--layout-from",
        type=Path,
        default=None,
        help="copy real plate maps from a Kaggle train.csv (with train_controls.csv beside it) or a v1.0 "
        "metadata.csv instead of drawing the preset's design",
    )
    p.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        help=f"pixels per side ({MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE}); default: the preset's",
    )
    p.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1, help="rendering processes")
    g = p.add_argument_group("LoadData layout (--layout loaddata)")
    g.add_argument(
        "--layout",
        choices=("v1", "loaddata"),
        default="v1",
        help="v1: an RxRx1 v1.0 root of 8-bit PNGs (the preset's design); loaddata: 16-bit TIFFs of 5 stains (DNA, "
        "ER, RNA, AGP, Mito) listed by load_data.csv, DMSO negative controls and a few positive controls per plate",
    )
    g.add_argument("--plate-size", type=int, choices=(96, 384, 1536), default=96, help="wells per plate")
    g.add_argument("--sites-per-well", type=_positive_int, default=4, help="fields of view per well")
    g.add_argument("--batches", type=_positive_int, default=2, help="batches (experiments) of one plate map")
    g.add_argument("--plates-per-batch", type=_positive_int, default=1, help="plates per batch")
    g.add_argument("--negative-controls", type=_positive_int, default=8, help="DMSO wells per plate")
    g.add_argument("--positive-controls", type=int, default=3, help="positive-control compounds (two wells each)")
    g.add_argument(
        "--treatments", type=_positive_int, default=None, help="treatment wells per plate (default: every other well)"
    )
    g.add_argument("--multipage", action="store_true", help="one multi-page TIFF per site instead of one per channel")


def _run_synth_loaddata(args: argparse.Namespace) -> int:
    from phenoprint.data.synth.loaddata import LoadDataSynthConfig, synthesize_loaddata

    try:
        config = LoadDataSynthConfig(
            plate_size=args.plate_size,
            sites_per_well=args.sites_per_well,
            n_batches=args.batches,
            plates_per_batch=args.plates_per_batch,
            n_negative=args.negative_controls,
            n_positive=args.positive_controls,
            n_treatments=args.treatments,
            image_size=args.image_size or 64,
            seed=args.seed,
            batch_effects=not args.no_batch_effects,
            multipage=args.multipage,
        )
    except ValueError as exc:
        print(f"phenoprint synth: error: {exc}", file=sys.stderr)
        return 2
    result = synthesize_loaddata(config, args.out, workers=args.workers, progress=not args.quiet)
    print(
        f"wrote {result.n_sites} sites of {result.n_plates} plates (LoadData layout) to {result.root} in "
        f"{result.seconds:.1f} s"
    )
    return 0


def _run_synth(args: argparse.Namespace) -> int:
    from phenoprint.data.synth import preset_config, synthesize

    if args.layout == "loaddata":
        return _run_synth_loaddata(args)
    try:
        config = preset_config(
            args.preset,
            seed=args.seed,
            image_size=args.image_size,
            batch_effects=not args.no_batch_effects,
            layout_from=None if args.layout_from is None else str(args.layout_from),
        )
    except ValueError as exc:
        print(f"phenoprint synth: error: {exc}", file=sys.stderr)
        return 2
    result = synthesize(config, args.out, workers=args.workers, progress=not args.quiet)
    print(
        f"wrote {result.n_sites} sites ({result.n_rendered} rendered, {result.n_skipped} already there) "
        f"to {result.root} in {result.seconds:.1f} s"
    )
    return 0


def _add_pack(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "root",
        type=Path,
        help="data root: RxRx1 (v1.0 or Kaggle layout, or a phenoprint synth output) or a LoadData CSV's folder",
    )
    _add_layout(p)
    p.add_argument(
        "--out", type=Path, required=True, help="pack folder to write (new or empty, or an interrupted pack)"
    )
    p.add_argument(
        "--size",
        type=_positive_int,
        default=None,
        help="resize every site to SIZE x SIZE with an area (box) filter; default: the PNGs' pixels, unchanged",
    )
    p.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1, help="decoding processes")


def _run_pack(args: argparse.Namespace) -> int:
    from phenoprint.data.pack import pack

    try:
        result = pack(
            args.root,
            args.out,
            layout=_layout_arg(args),
            size=args.size,
            workers=args.workers,
            progress=not args.quiet,
        )
    except ValueError as exc:
        print(f"phenoprint pack: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"packed {result.n_sites} sites ({result.n_decoded} decoded now, {result.n_resumed} before) into "
        f"{result.path} in {result.seconds:.1f} s"
        + (f"; {result.n_missing} listed sites had no images" if result.n_missing else "")
    )
    return 0


COMMANDS = [
    Command(
        "preview",
        "write RGB composites (RxRx1 colour map, other stains by name) of the sites of a data root",
        _add_preview,
        _run_preview,
        description="Write one RGB PNG per site with images, coloured with the display map Recursion published "
        "for RxRx1 (w1 blue nuclei, w2 green ER, w3 red actin, w4 cyan nucleoli, w5 magenta mitochondria, "
        "w6 yellow Golgi), each image stretched by its own intensities unless --contrast rxrx1. Channels of other "
        "layouts are coloured by stain name (DNA/Hoechst blue, ER green, AGP red, RNA cyan, Mito magenta).",
    ),
    Command(
        "synth",
        "generate a synthetic RxRx1 data root (v1.0 layout) with the release's design and batch effects",
        _add_synth,
        _run_synth,
        description="Render rendered-cell Cell Painting sites for the RxRx1 design (experiments of 4 plates, "
        "untreated and positive controls on every plate, treatment groups rotating over the plates), with "
        "siRNA phenotypes and experiment, plate, edge and site batch effects. Deterministic for a seed, parallel, "
        "resumable; synth.json is written last.",
    ),
    Command(
        "pack",
        "decode a data root's images once into a memory-mapped store (their own bit depth) with a row index",
        _add_pack,
        _run_pack,
        description="Decode every site with images into images.npy (n_sites, C, S, S), uint8 for 8-bit images and "
        "uint16 for 16-bit ones (nothing is lost), plus index.parquet; "
        "manifest.json is written last, and a rerun resumes an interrupted pack.",
    ),
]
