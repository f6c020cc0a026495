"""IndexConfig: validation and its JSON round trip."""

from __future__ import annotations

import pytest

from phenoprint.index.config import IndexConfig


def test_index_config_validates_and_round_trips() -> None:
    config = IndexConfig(center="center_scale", mode="centroid", kind="hnsw", pca_dim=8)
    assert IndexConfig.from_json(config.to_json()) == config
    with pytest.raises(
        ValueError,
        match="center must be one of none, center, center_scale, tvn, mad_robustize, zca, zca_cor, tvn_pooled, "
        "ensemble, auto; got 'pca'",
    ):
        IndexConfig(center="pca", mode="centroid")
    with pytest.raises(ValueError, match="open_set_quantile must be in"):
        IndexConfig(open_set_quantile=1.5)
    with pytest.raises(ValueError, match="n_neighbors must be >= 1"):
        IndexConfig(n_neighbors=0)
    with pytest.raises(ValueError, match="unknown IndexConfig field"):
        IndexConfig.from_json({"centre": "tvn"})


def test_one_registry_per_family() -> None:
    """Each family's ``Literal`` type names what its registry holds, in its order (the CLI's choices come from
    the registries: ``tests/index/test_commands.py``); every centering method says how many wells it needs."""
    from typing import get_args

    from phenoprint.index.centering import CENTER_METHOD_HELP, CENTER_METHODS, MIN_REFERENCE, CenterMethod
    from phenoprint.index.config import INDEX_KIND_HELP, INDEX_KINDS, MODE_HELP, MODES, IndexKind, Mode

    assert get_args(CenterMethod) == CENTER_METHODS == tuple(CENTER_METHOD_HELP)
    assert tuple(MIN_REFERENCE) == CENTER_METHODS
    assert get_args(IndexKind) == INDEX_KINDS == tuple(INDEX_KIND_HELP)
    assert get_args(Mode) == MODES == tuple(MODE_HELP)


def test_epsilon_is_validated_and_defaults_for_old_manifests() -> None:
    from phenoprint.index.centering import DEFAULT_EPSILON

    assert IndexConfig().epsilon == DEFAULT_EPSILON == 1e-6  # pycytominer's spherize default
    assert IndexConfig.from_json(IndexConfig(center="zca", mode="centroid", epsilon=0.01).to_json()).epsilon == 0.01
    old = IndexConfig(center="zca", mode="centroid").to_json()
    del old["epsilon"]  # a manifest written before the option existed
    assert IndexConfig.from_json(old) == IndexConfig(center="zca", mode="centroid")
    assert IndexConfig(epsilon=0.0).epsilon == 0.0
    for bad in (-1e-6, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="epsilon must be a finite number >= 0"):
            IndexConfig(epsilon=bad)
