"""IndexConfig: validation and its JSON round trip."""

from __future__ import annotations

import pytest

from phenoprint.index.config import IndexConfig


def test_index_config_validates_and_round_trips() -> None:
    config = IndexConfig(center="center_scale", kind="hnsw", pca_dim=8)
    assert IndexConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="center must be one of none, center, center_scale, tvn, auto; got 'pca'"):
        IndexConfig(center="pca")
    with pytest.raises(ValueError, match="open_set_quantile must be in"):
        IndexConfig(open_set_quantile=1.5)
    with pytest.raises(ValueError, match="n_neighbors must be >= 1"):
        IndexConfig(n_neighbors=0)
    with pytest.raises(ValueError, match="unknown IndexConfig field"):
        IndexConfig.from_json({"centre": "tvn"})
