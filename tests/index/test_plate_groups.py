"""Plate groups learned for an index: from the other experiments' labelled treatments only."""

from __future__ import annotations

import pandas as pd

from phenoprint.data.plate import infer_plate_groups
from phenoprint.data.table import EmbeddingTable
from phenoprint.index.plate_groups import learn_plate_groups


def test_groups_come_from_the_other_experiments_labels(small_table: EmbeddingTable) -> None:
    got = learn_plate_groups(small_table, exclude="HUVEC-01")
    assert got is not None
    meta = small_table.plate_metadata()
    others = meta[(meta.experiment != "HUVEC-01") & (meta.well_type == "treatment") & meta.sirna_id.notna()]
    assert got.groups == infer_plate_groups(others).groups


def test_no_labelled_treatments_means_no_groups(small_table: EmbeddingTable) -> None:
    meta = small_table.meta.copy()
    meta.loc[meta.Metadata_well_type == "treatment", "Metadata_sirna_id"] = pd.NA
    table = EmbeddingTable(meta, small_table.features.copy(), small_table.feature_names, small_table.fingerprint)
    assert learn_plate_groups(table, exclude="HUVEC-01") is None
