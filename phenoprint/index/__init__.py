"""Batch centering, per-experiment FAISS indexes, siRNA classification, plate assignment and evaluation.

The embedding table these work on lives in :mod:`phenoprint.data.table` (re-exported here).

Names are imported lazily (PEP 562), so that ``import phenoprint.index`` (done by the command line to list its
verbs) stays cheap and does not load faiss. The functions named like their modules (``classify``, ``evaluate``,
``plots``) are imported from those modules: ``from phenoprint.index.classify import classify``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phenoprint.data.table import EmbeddingTable, feature_names, read_embeddings, write_embeddings
    from phenoprint.index.assign import Assignment, assign_experiment, assign_plate
    from phenoprint.index.build import build_experiment_index
    from phenoprint.index.centering import (
        CenteringStats,
        apply_centering,
        center_on_controls,
        fit_centering,
    )
    from phenoprint.index.classify import Classification, Prediction, SirnaScores, similar_sirnas, sirna_scores
    from phenoprint.index.config import IndexConfig
    from phenoprint.index.evaluate import EvalConfig, EvalReport
    from phenoprint.index.experiment import ExperimentIndex
    from phenoprint.index.faiss_backend import Neighbors
    from phenoprint.index.openset import OpenSetThreshold

_WHERE = {
    "Assignment": "assign",
    "assign_experiment": "assign",
    "assign_plate": "assign",
    "ExperimentIndex": "experiment",
    "IndexConfig": "config",
    "build_experiment_index": "build",
    "CenteringStats": "centering",
    "apply_centering": "centering",
    "center_on_controls": "centering",
    "fit_centering": "centering",
    "Classification": "classify",
    "Prediction": "classify",
    "SirnaScores": "classify",
    "similar_sirnas": "classify",
    "sirna_scores": "classify",
    "EvalConfig": "evaluate",
    "EvalReport": "evaluate",
    "Neighbors": "faiss_backend",
    "OpenSetThreshold": "openset",
    "EmbeddingTable": "phenoprint.data.table",
    "feature_names": "phenoprint.data.table",
    "read_embeddings": "phenoprint.data.table",
    "write_embeddings": "phenoprint.data.table",
}

__all__ = [
    "Assignment",
    "CenteringStats",
    "Classification",
    "EmbeddingTable",
    "EvalConfig",
    "EvalReport",
    "ExperimentIndex",
    "IndexConfig",
    "Neighbors",
    "OpenSetThreshold",
    "Prediction",
    "SirnaScores",
    "apply_centering",
    "assign_experiment",
    "assign_plate",
    "build_experiment_index",
    "center_on_controls",
    "feature_names",
    "fit_centering",
    "read_embeddings",
    "similar_sirnas",
    "sirna_scores",
    "write_embeddings",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
