"""The plate design's treatment groups, learned from the labelled wells of an index's other experiments."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np

from phenoprint.data.plate import PlateGroups, infer_plate_groups
from phenoprint.data.table import EmbeddingTable
from phenoprint.errors import MetadataError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def learn_plate_groups(
    table: EmbeddingTable, exclude: str | None = None, *, within: np.ndarray | None = None, quiet: bool = False
) -> PlateGroups | None:
    """Treatment groups of the plate design, from the labelled treatment wells of every experiment but ``exclude``.

    The target's own labels (when present) are left out so that evaluation never learns from the answers.
    Returns None when there is nothing to learn from (e.g. a profile table without treatment labels).

    Args:
        table: the wells.
        exclude: an experiment whose labels are not used (the target).
        within: (n,) restrict to these rows (e.g. the experiments in the index's scope).
        quiet: silence the summary that :func:`phenoprint.data.infer_plate_groups` logs (for evaluation loops).
    """
    meta = table.plate_metadata()
    rows = (meta["sirna_id"].notna() & (meta["well_type"] == "treatment")).to_numpy()
    if exclude is not None:
        rows = rows & (meta["experiment"] != exclude).to_numpy()
    if within is not None:
        rows = rows & np.asarray(within, dtype=bool)
    if not rows.any():
        log.debug("no labelled treatment wells outside %s: no plate groups", exclude)
        return None
    try:
        with _quiet("phenoprint.data.plate") if quiet else contextlib.nullcontext():
            return infer_plate_groups(meta[rows])
    except MetadataError as exc:
        log.info("plate groups could not be learned (%s); plate assignment will not restrict candidates", exc)
        return None
