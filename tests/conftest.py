"""Shared fixtures: the real RxRx1 sample (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def rxrx1_sample_root() -> Path:
    """The Kaggle-layout folder of the shared real RxRx1 sample (``$PHENOPRINT_RXRX1`` overrides)."""
    override = os.environ.get("PHENOPRINT_RXRX1")
    if override:
        return Path(override)
    return PROJECT_ROOT.parent / "shared" / "rxrx1" / "kaggle"


@pytest.fixture(scope="session")
def rxrx1_root() -> Path:
    root = rxrx1_sample_root()
    if not (root / "train.csv").is_file():
        pytest.skip(f"the real RxRx1 sample is not at {root} (set PHENOPRINT_RXRX1 to a Kaggle-layout folder)")
    return root


@pytest.fixture(scope="session")
def rxrx1_metadata(rxrx1_root: Path):
    from phenoprint.data import read_metadata

    return read_metadata(rxrx1_root)


@pytest.fixture(autouse=True)
def _fresh_warn_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the warnings given once per process (phenoprint.logs.warn_once) as a fresh process would."""
    from phenoprint import logs

    monkeypatch.setattr(logs, "_warned", set())
