"""Typed configs: validation at construction and the JSON round trip."""

from __future__ import annotations

import pytest

from phenoprint.configs import config_from_json, config_to_json
from phenoprint.embedder.config import ModelConfig, TrainConfig


def test_json_round_trip_keeps_tuples_and_the_nested_model() -> None:
    config = TrainConfig(model=ModelConfig(backbone="resnet10t", cell_type_context=True), holdout=("HUVEC-04",))
    data = config_to_json(config)
    assert data["holdout"] == ["HUVEC-04"]
    assert config_from_json(TrainConfig, data) == config


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        config_from_json(TrainConfig, {"epochs": 2, "learning_rate": 1.0})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"image_size": 4}, "image_size"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"crop_scale": (0.8, 0.5)}, "crop_scale"),
        ({"sampler": "by_well"}, "sampler must be one of"),
        ({"max_steps": 0}, "max_steps"),
    ],
)
def test_invalid_training_configs_say_what_is_expected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_invalid_model_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="head must be"):
        ModelConfig(head="softmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="embedding_dim"):
        ModelConfig(embedding_dim=0)


def test_a_train_command_line_without_options_asks_for_the_default_config() -> None:
    """The parser's defaults are TrainConfig's (and ModelConfig's), read from the dataclasses: none drifts."""
    import argparse
    import dataclasses
    from typing import get_args

    from phenoprint.cli import build_parser
    from phenoprint.embedder.commands import train_config_from_args
    from phenoprint.embedder.config import NormName, SamplerName

    parser = build_parser()
    parsed = parser.parse_args(["train", "--data", "d", "--out", "o"])
    assert train_config_from_args(parsed) == dataclasses.replace(TrainConfig(), data_root="d")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"]
    choices = {a.dest: tuple(a.choices) for a in train._actions if a.choices}
    assert choices["normalization"] == get_args(NormName)
    assert choices["sampler"] == get_args(SamplerName)


def test_channels_by_name_set_the_input_width() -> None:
    from phenoprint.data.layout import RXRX1_CHANNELS
    from phenoprint.embedder.config import ModelConfig

    assert ModelConfig().channels == RXRX1_CHANNELS
    assert ModelConfig().in_chans == 6
    five = ModelConfig(channels=("DNA", "ER", "RNA", "AGP", "Mito"))
    assert five.in_chans == 5
    assert ModelConfig(in_chans=6).in_chans == 6  # configs written before channel names read back
    with pytest.raises(ValueError, match="in_chans 6 differs from the 5 channels"):
        ModelConfig(channels=five.channels, in_chans=6)
    with pytest.raises(ValueError, match="distinct names"):
        ModelConfig(channels=("DNA", "DNA"))


def test_data_of_other_channels_is_refused() -> None:
    from phenoprint.embedder.config import ModelConfig, check_channels

    model = ModelConfig(channels=("DNA", "ER", "RNA", "AGP", "Mito"))
    check_channels(model, ("DNA", "ER", "RNA", "AGP", "Mito"), "data")
    with pytest.raises(ValueError, match=r"data has channels DNA, ER, RNA, AGP, Mito, Brightfield.*--channels"):
        check_channels(model, ("DNA", "ER", "RNA", "AGP", "Mito", "Brightfield"), "data")
    with pytest.raises(ValueError, match="trained on DNA, ER, RNA, AGP, Mito"):
        check_channels(model, ("ER", "DNA", "RNA", "AGP", "Mito"), "data")  # same count, another order
