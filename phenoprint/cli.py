"""The one console entry point, ``phenoprint <verb>``; each package declares its verbs in a ``commands`` module."""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from phenoprint import __version__
from phenoprint.errors import PhenoprintError
from phenoprint.logs import level_from_flags
from phenoprint.logs import setup_logging as _setup_logging

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
    "phenoprint.commands",
    "phenoprint.prediction.commands",
    "phenoprint.api.commands",
)
#: The verbs in the order a user runs them (``phenoprint --help`` lists them so); verbs not named here come last.
COMMAND_ORDER: tuple[str, ...] = (
    "synth",
    "preview",
    "pack",
    "train",
    "embed",
    "profiles",
    "evaluate",
    "build-index",
    "index",
    "predict",
    "serve",
)
_EPILOG = (
    "Start with `make demo` (the whole chain on synthetic data, with the commands it runs). On your own data the "
    "verbs run in the order listed: preview, pack, train, embed, evaluate, then build-index once per new batch and "
    "serve. `phenoprint <command> --help` explains each."
)


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows an option's default only when it has one worth reading (not on required options, not
    ``None``, ``False`` or empty)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or isinstance(action, argparse._CountAction)
            or action.required
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or (isinstance(default, (tuple, list)) and not default)
        ):
            return text
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's conventions: no prefix matching (``--epoch`` is not taken for ``--epochs``),
    a suggestion for a mistyped option, verb or choice, and :class:`HelpFormatter`. Every parser of phenoprint
    (the CLI, its sub-commands, the scripts) is one of these."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = _deepest_parser(self, ns)
            parser.error(_unrecognized(parser, extras))
        return ns

    def error(self, message: str) -> Any:
        super().error(_suggest_choice(self, message))


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option, still accepted: it stores its value like the new one and says, on stderr, which
    spelling to use (argparse's own ``deprecated=`` needs Python 3.13). Hidden from ``--help``."""

    def __init__(self, option_strings: Sequence[str], dest: str, replacement: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.replacement = replacement

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"{parser.prog}: warning: {option_string} is deprecated here; use {self.replacement} (same values)",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def _deepest_parser(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> argparse.ArgumentParser:
    """The sub-command parser the parsed namespace went through (so its options are the ones suggested)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(ns, action.dest, None)
            if chosen in action.choices:
                return _deepest_parser(action.choices[chosen], ns)
    return parser


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    options = [s for a in parser._actions for s in a.option_strings if a.help is not argparse.SUPPRESS]
    hints = []
    for extra in extras:
        if extra.startswith("-"):
            close = difflib.get_close_matches(extra.split("=", 1)[0], options, n=1, cutoff=0.6)
            if close:
                hints.append(f"{extra.split('=', 1)[0]}: did you mean {close[0]}?")
    return f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else "")


def _suggest_choice(parser: argparse.ArgumentParser, message: str) -> str:
    match = re.search(r"invalid choice: '([^']*)'", message)
    if match is None:
        return message
    choices = [str(c) for a in parser._actions if a.choices is not None for c in a.choices]
    close = difflib.get_close_matches(match.group(1), choices, n=1, cutoff=0.5)
    return f"{message}; did you mean {close[0]!r}?" if close else message


def build_parser() -> ArgumentParser:
    """The full argument parser (every verb of every package, in :data:`COMMAND_ORDER`)."""
    parser = ArgumentParser(
        prog="phenoprint",
        description="Name the siRNA of an RxRx1-style Cell Painting well across experimental batches.",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"phenoprint {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug); tracebacks of errors"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    commands = [cmd for name in COMMAND_MODULES for cmd in importlib.import_module(name).COMMANDS]
    rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
    for cmd in sorted(commands, key=lambda c: rank.get(c.name, len(rank))):
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description or cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Log to stderr with a level chosen by ``-v``/``-q`` (see :func:`phenoprint.logs.setup_logging`)."""
    _setup_logging(level_from_flags(verbose, quiet))


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
