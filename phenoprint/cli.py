"""The one console entry point, ``phenoprint <verb>``; each package declares its verbs in a ``commands`` module."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from phenoprint import __version__
from phenoprint.errors import PhenoprintError

log = logging.getLogger("phenoprint")


@dataclass(frozen=True)
class Command:
    """One verb of the command line.

    Attributes:
        name: the verb (``phenoprint <name>``).
        help: one line shown in ``phenoprint --help``.
        add_arguments: declares the verb's options on its sub-parser.
        run: does the work from the parsed options; returns the exit status. Heavy imports go inside it.
        description: longer text for ``phenoprint <name> --help`` (defaults to ``help``).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


#: Modules that define ``COMMANDS: list[Command]``; importing them must stay cheap (no torch, no faiss).
COMMAND_MODULES: tuple[str, ...] = (
    "phenoprint.data.commands",
    "phenoprint.index.commands",
    "phenoprint.embedder.commands",
    "phenoprint.api.commands",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every verb of every package)."""
    parser = argparse.ArgumentParser(
        prog="phenoprint",
        description="Name the siRNA of an RxRx1-style Cell Painting well across experimental batches.",
    )
    parser.add_argument("--version", action="version", version=f"phenoprint {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug); tracebacks of errors"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for module_name in COMMAND_MODULES:
        for cmd in importlib.import_module(module_name).COMMANDS:
            p = sub.add_parser(
                cmd.name,
                help=cmd.help,
                description=cmd.description or cmd.help,
                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
            )
            cmd.add_arguments(p)
            p.set_defaults(_run=cmd.run)
    return parser


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Log to stderr with a level chosen by ``-v``/``-q``."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("phenoprint").setLevel(level)
    logging.getLogger("faiss").setLevel(max(level, logging.WARNING))  # its loader reports every CPU-feature probe


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the verb, and turn phenoprint's own errors into a one-line message and status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args._run(args) or 0)
    except PhenoprintError as exc:
        if args.verbose:  # the one line is what a user needs; the traceback is for whoever debugs phenoprint
            traceback.print_exc()
        print(f"phenoprint {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"phenoprint {args.command}: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
