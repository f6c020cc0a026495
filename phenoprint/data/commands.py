"""Command-line verbs of ``phenoprint.data``: ``preview``."""

from __future__ import annotations

import argparse
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


def _run_preview(args: argparse.Namespace) -> int:
    from phenoprint.data.rgb import write_previews

    written = write_previews(args.root, args.out, experiments=args.experiment, limit=args.limit)
    print(f"wrote {len(written)} RGB previews to {args.out}")
    return 0


COMMANDS = [
    Command(
        "preview",
        "write RGB composites (RxRx1 colour map) of the sites of a data root",
        _add_preview,
        _run_preview,
        description="Write one RGB PNG per site with images, coloured with the display map Recursion published "
        "for RxRx1 (w1 blue nuclei, w2 green ER, w3 red actin, w4 cyan nucleoli, w5 magenta mitochondria, "
        "w6 yellow Golgi).",
    ),
]
