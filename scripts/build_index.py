#!/usr/bin/env python
"""Onboard a new batch: embed its control wells, fit its centering, and build its per-experiment index.

The same job as `phenoprint build-index`; run `python scripts/build_index.py --help` for the options.
"""

from __future__ import annotations

import sys

from phenoprint.cli import ArgumentParser
from phenoprint.cli import main as cli_main
from phenoprint.commands import add_build_index_arguments


def main(argv: list[str] | None = None) -> int:
    """Parse the options (to give this script its own --help) and run `phenoprint build-index`."""
    argv = sys.argv[1:] if argv is None else argv
    parser = ArgumentParser(
        prog="build_index.py",
        description=__doc__,
    )
    add_build_index_arguments(parser)
    parser.parse_args(argv)  # validates and answers --help; the CLI does the work (logging, errors, exit codes)
    return cli_main(["build-index", *argv])


if __name__ == "__main__":
    sys.exit(main())
