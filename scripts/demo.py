#!/usr/bin/env python
"""`make demo`: the main job on synthetic RxRx1 — generate, train, export, onboard, evaluate, serve.

Reruns reuse finished steps. Set DEMO_SERVE=0 to stop after the HTTP query instead of serving until Ctrl-C.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

from phenoprint.cli import ArgumentParser, setup_logging
from phenoprint.pipeline import DemoConfig, env_flag, run_demo


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run the demo; returns the exit status."""
    d = DemoConfig()
    p = ArgumentParser(prog="demo.py", description=__doc__)
    p.add_argument("--workdir", type=Path, default=d.workdir, help="folder for everything the demo writes")
    p.add_argument("--preset", choices=("tiny", "demo"), default=d.preset, help="synthetic data preset")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the data and of training")
    p.add_argument("--backbone", default=d.backbone, help="timm backbone")
    p.add_argument("--image-size", type=int, default=d.image_size, help="network input side in pixels")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs")
    p.add_argument("--max-steps", type=int, default=None, help="cap on training steps (smoke runs)")
    p.add_argument("--workers", type=int, default=d.workers, help="processes for data generation")
    p.add_argument("--port", type=int, default=d.port, help="API port (a free one when taken; 0: always a free one)")
    p.add_argument("--no-serve", action="store_true", help="stop after the HTTP query (also: DEMO_SERVE=0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    setup_logging(0)
    logging.getLogger("faiss").setLevel(logging.WARNING)
    config = DemoConfig(
        workdir=args.workdir,
        preset=args.preset,
        seed=args.seed,
        backbone=args.backbone,
        image_size=args.image_size,
        epochs=args.epochs,
        max_steps=args.max_steps,
        workers=args.workers,
        port=args.port,
        serve=env_flag("DEMO_SERVE", True) and not args.no_serve,
        progress=not args.no_progress,
    )
    run_demo(config, say=functools.partial(print, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
