"""The one JSON codec of config dataclasses: round trips of each config, and the files they write unchanged."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pytest

from phenoprint.configs import config_from_json, config_to_json
from phenoprint.data.synth.design import PRESETS, SynthConfig
from phenoprint.embedder.config import ModelConfig, TrainConfig
from phenoprint.index.config import IndexConfig

CONFIGS = {
    "synth": PRESETS["demo"],
    "train": TrainConfig(model=ModelConfig(head="cosface", cell_type_context=True), holdout=("HUVEC-04",)),
    "index": IndexConfig(center="center_scale", mode="centroid", kind="hnsw", pca_dim=8),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_config_round_trips(name: str) -> None:
    config = CONFIGS[name]
    data = json.loads(json.dumps(config_to_json(config)))  # as read back from a file
    assert config_from_json(type(config), data) == config


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_json_is_what_each_config_wrote_before_the_codec_was_shared(name: str) -> None:
    """Byte for byte: ``dataclasses.asdict`` dumped as JSON, as the three writers did (manifests, run configs and
    synthetic metadata written before still read, and fingerprints stay the same)."""
    config = CONFIGS[name]
    for indent, sort_keys in ((None, False), (2, True)):
        before = json.dumps(dataclasses.asdict(config), indent=indent, sort_keys=sort_keys)
        assert json.dumps(config_to_json(config), indent=indent, sort_keys=sort_keys) == before
    if isinstance(config, (IndexConfig, SynthConfig)):
        assert config.to_json() == config_to_json(config)
        assert type(config).from_json(config.to_json()) == config


@dataclass(frozen=True)
class Inner:
    xs: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    inners: tuple[Inner, ...] = ()
    pair: tuple[float, float] = (0.5, 1.0)


def test_nested_configs_and_tuples_are_rebuilt_from_their_types() -> None:
    config = Outer(inners=(Inner((3,)), Inner()))
    back = config_from_json(Outer, json.loads(json.dumps(config_to_json(config))))
    assert back == config
    assert isinstance(back.inners[0], Inner)
    assert isinstance(back.pair, tuple)


def test_unknown_fields_and_non_objects_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown SynthConfig field\(s\) colour; known: .*group_size"):
        config_from_json(SynthConfig, {**config_to_json(PRESETS["tiny"]), "colour": "red"})
    with pytest.raises(ValueError, match="IndexConfig: expected a JSON object, got list"):
        config_from_json(IndexConfig, [1, 2])  # type: ignore[arg-type]
