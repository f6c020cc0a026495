"""Domain errors of phenoprint; the API maps them to HTTP statuses at its edge."""

from __future__ import annotations

from collections.abc import Iterable


class PhenoprintError(Exception):
    """Base class: every error phenoprint raises on purpose derives from it."""


class LayoutError(PhenoprintError):
    """A data root is not in a layout phenoprint can read (RxRx1 v1.0, Kaggle, or a pack)."""


class MetadataError(PhenoprintError):
    """A metadata table lacks a column, or holds a value outside what RxRx1 allows."""


class ImageFormatError(PhenoprintError):
    """An image file is missing, not a PNG, truncated, of the wrong mode, or of a different size.

    Attributes:
        source: the file (or upload name) the problem is about.
        problem: what was wrong, phrased so a user can act on it.
    """

    def __init__(self, source: object, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class EmbeddingTableError(PhenoprintError):
    """An embedding table lacks metadata columns, mixes dimensions or holds non-finite values."""


class IndexFormatError(PhenoprintError):
    """An index directory is incomplete, of an unknown format version, or does not match the model."""


class UnknownExperimentError(PhenoprintError, KeyError):
    """An experiment is asked for that no loaded index or table knows.

    Attributes:
        experiment: the name that was asked for.
        known: the names that would have been accepted.
    """

    def __init__(self, experiment: str, known: Iterable[str]) -> None:
        self.experiment = experiment
        self.known = sorted(known)
        shown = ", ".join(self.known[:20]) + (" …" if len(self.known) > 20 else "")
        super().__init__(f"unknown experiment {experiment!r}; known: {shown or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the whole message otherwise
        return str(self.args[0])


class CheckpointError(PhenoprintError):
    """A model run directory is incomplete or its files disagree with each other."""
