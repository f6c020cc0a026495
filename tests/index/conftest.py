"""Shared fixtures of the index tests: small synthetic embedding tables with the RxRx1 plate design."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoprint.data.table import EmbeddingTable
from phenoprint.index.build import build_experiment_index
from phenoprint.index.config import IndexConfig
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.index.simulate import VectorDesign, simulate_table


@pytest.fixture(scope="session")
def small_design() -> VectorDesign:
    """2 cell types (4 + 3 experiments), 4 plate groups of 6 treatments, 3 positive controls, 16-d."""
    return VectorDesign.small()


@pytest.fixture(scope="session")
def small_table(small_design: VectorDesign) -> EmbeddingTable:
    """A labelled well table drawn from the small design (do not mutate: take ``.subset`` or copy first)."""
    return simulate_table(small_design, seed=0)


#: The labels of the foreign profile table: arbitrary integers, as a compound or gene id column would hold.
PROFILE_LABELS = (5003, 77, 123456, 9, 4242, 31337, 808, 1)


@pytest.fixture(scope="session")
def profiles_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CellProfiler-like profile table: 3 batches x 2 plates x 8 labels, no well type, no cell type, named
    features, written with pandas (not with phenoprint's writer)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(PROFILE_LABELS), 12))
    rows = []
    for b in range(3):
        offset = rng.normal(size=12) * 4
        for plate in (1, 2):
            for i, label in enumerate(PROFILE_LABELS):
                feats = centres[i] + offset + rng.normal(size=12) * 0.3
                rows.append(
                    {
                        "Metadata_experiment": f"batch{b}",
                        "Metadata_plate": plate,
                        "Metadata_well": f"A{i + 1:02d}",
                        "Metadata_sirna_id": label,
                        **{f"Cells_Feature_{j}": feats[j] for j in range(12)},
                    }
                )
    path = tmp_path_factory.mktemp("profiles") / "profiles.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def rehash_manifest(folder: Path) -> None:
    """Make an index folder's manifest describe its files as they are now (sizes, and content hashes where the
    manifest records them): a folder that a buggy writer produced consistently, so only the loader's own checks of
    the contents can refuse it."""
    import json

    from phenoprint.index.storage import file_record

    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"] = {name: file_record(folder / name) for name in manifest["files"]}
    path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def huvec_index(small_table: EmbeddingTable) -> ExperimentIndex:
    return build_experiment_index(small_table, "HUVEC-01", IndexConfig(center="tvn", mode="centroid"))


@pytest.fixture(scope="module")
def index(small_table: EmbeddingTable) -> ExperimentIndex:
    return build_experiment_index(
        small_table, "HUVEC-01", IndexConfig(center="tvn", mode="centroid", n_neighbors=20, temperature=0.2)
    )


def reference_centroids(index: ExperimentIndex) -> tuple[list[int], np.ndarray]:
    """Each siRNA's centroid by the textbook formula, from the entries' labels and vectors (not the index's own)."""
    ids = sorted({int(s) for s in index.entries["sirna_id"]})
    rows = []
    for sid in ids:
        mean = index.vectors[index.entries["sirna_id"].to_numpy() == sid].astype(np.float64).mean(axis=0)
        rows.append(mean / np.linalg.norm(mean))
    return ids, np.array(rows)
