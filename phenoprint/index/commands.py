"""Command-line verbs of ``phenoprint.index``."""

from __future__ import annotations

from phenoprint.cli import Command

COMMANDS: list[Command] = []
