"""Typed configs: validation at construction and the JSON round trip."""

from __future__ import annotations

import pytest

from phenoprint.embedder.config import ModelConfig, TrainConfig, config_from_dict, config_to_dict


def test_json_round_trip_keeps_tuples_and_the_nested_model() -> None:
    config = TrainConfig(model=ModelConfig(backbone="resnet10t", cell_type_context=True), holdout=("HUVEC-04",))
    data = config_to_dict(config)
    assert data["holdout"] == ["HUVEC-04"]
    assert config_from_dict(TrainConfig, data) == config


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown field"):
        config_from_dict(TrainConfig, {"epochs": 2, "learning_rate": 1.0})


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
