"""Command-line verbs of ``phenoprint.data``: ``preview``, ``synth`` and ``pack``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from phenoprint.cli import Command


def _add_preview(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "root", type=Path, help="RxRx1 data root (v1.0 layout with metadata.csv, or Kaggle layout with train.csv)"
    )
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


def _run_synth(args: argparse.Namespace) -> int:
    from phenoprint.data.synth import preset_config, synthesize

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
    p.add_argument("root", type=Path, help="RxRx1 data root (v1.0 or Kaggle layout, or a phenoprint synth output)")
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
        result = pack(args.root, args.out, size=args.size, workers=args.workers, progress=not args.quiet)
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
        "write RGB composites (RxRx1 colour map) of the sites of a data root",
        _add_preview,
        _run_preview,
        description="Write one RGB PNG per site with images, coloured with the display map Recursion published "
        "for RxRx1 (w1 blue nuclei, w2 green ER, w3 red actin, w4 cyan nucleoli, w5 magenta mitochondria, "
        "w6 yellow Golgi), each image stretched by its own intensities unless --contrast rxrx1.",
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
        "decode a data root's PNGs once into a memory-mapped uint8 store with a row index",
        _add_pack,
        _run_pack,
        description="Decode every site with images into images.npy (n_sites, 6, S, S) plus index.parquet; "
        "manifest.json is written last, and a rerun resumes an interrupted pack.",
    ),
]
