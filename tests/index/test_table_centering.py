"""Centering a whole table: each batch on its own reference wells, and the minimum count each method needs."""

from __future__ import annotations

import numpy as np
import pytest

from phenoprint.data.table import EmbeddingTable
from phenoprint.errors import EmbeddingTableError
from phenoprint.index.centering import MIN_REFERENCE, apply_centering, fit_centering
from phenoprint.index.table_centering import batch_keys, center_table, fit_table_centering


def test_every_batch_is_fitted_on_its_own_controls(small_table: EmbeddingTable) -> None:
    stats = fit_table_centering(small_table, "center_scale", "controls", pca_dim=None, ridge=0.1, per_plate=False)
    assert sorted(stats) == sorted(set(small_table.meta.Metadata_experiment))
    got = center_table(small_table, stats, per_plate=False)
    for exp in ("HUVEC-02", "RPE-01"):
        rows = small_table.experiment_mask(exp)
        x = small_table.features[rows]
        want = apply_centering(x, fit_centering(x, small_table.control_mask()[rows], "center_scale"))
        np.testing.assert_allclose(got[rows], want, atol=1e-6)
    keys = batch_keys(small_table.meta, per_plate=True)
    assert set(keys[small_table.experiment_mask("HUVEC-02")]) == {f"HUVEC-02/{p}" for p in range(1, 5)}


@pytest.mark.parametrize("method", ["center", "center_scale", "tvn"])
def test_each_method_needs_its_minimum_of_reference_wells(small_table: EmbeddingTable, method: str) -> None:
    """A batch with one control well fewer than the method needs is refused before fitting, naming the minimum;
    one with exactly the minimum is fitted."""
    need = MIN_REFERENCE[method]
    assert need == (1 if method == "center" else 2)  # a mean needs one well, a spread two
    rows = small_table.experiment_mask("HUVEC-01")
    controls = np.flatnonzero(rows & small_table.control_mask())
    treatments = rows & ~small_table.control_mask()
    for n in (need - 1, need):
        keep = treatments.copy()
        keep[controls[:n]] = True
        table = small_table.subset(keep)
        if n < need:
            with pytest.raises(
                EmbeddingTableError, match=rf"has {n} control wells .* {method!r} needs at least {need}"
            ):
                fit_table_centering(table, method, "controls", pca_dim=None, ridge=0.1, per_plate=False)
        else:
            stats = fit_table_centering(table, method, "controls", pca_dim=None, ridge=0.1, per_plate=False)
            assert stats["HUVEC-01"].n_reference == need
