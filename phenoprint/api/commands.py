"""Command-line verbs of ``phenoprint.api``."""

from __future__ import annotations

from phenoprint.cli import Command

COMMANDS: list[Command] = []
