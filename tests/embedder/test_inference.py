"""Loading a finished run for inference: the fingerprint is verified against the weights, bad runs are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from phenoprint.embedder.checkpoint import fingerprint
from phenoprint.embedder.config import ModelConfig
from phenoprint.embedder.inference import load_model
from phenoprint.embedder.model import Embedder
from phenoprint.errors import CheckpointError


@pytest.fixture(scope="module")
def run_dir(tiny_run: Path) -> Path:
    return tiny_run


@pytest.fixture
def copy(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    return out


def _edit_weights(run: Path, edit) -> None:
    tensors = load_file(str(run / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(run / "model.safetensors"))


def _first_weight(tensors: dict[str, torch.Tensor]) -> str:
    return sorted(k for k, t in tensors.items() if t.is_floating_point() and t.ndim > 1)[0]


def test_a_finished_run_loads_with_the_fingerprint_of_its_weights(run_dir: Path) -> None:
    model = load_model(run_dir, "cpu")
    assert model.fingerprint == json.loads((run_dir / "run.json").read_text())["fingerprint"]
    assert model.fingerprint == fingerprint(model.config, model.embedder)


def test_another_runs_weights_of_the_same_architecture_are_refused(copy: Path) -> None:
    """They used to be served under the old fingerprint, so matched to indexes another model built."""
    torch.manual_seed(1)
    other = Embedder(ModelConfig(backbone="resnet10t", embedding_dim=16, num_classes=8, pretrained=False))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(copy / "model.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: these weights are not the model run\.json describes"
    ):
        load_model(copy, "cpu")


def test_slightly_changed_weights_are_refused(copy: Path) -> None:
    _edit_weights(copy, lambda t: t[_first_weight(t)].add_(1e-3))
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_model(copy, "cpu")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(copy: Path, value: float) -> None:
    def poison(tensors: dict[str, torch.Tensor]) -> None:
        tensors[_first_weight(tensors)].view(-1)[0] = value

    _edit_weights(copy, poison)
    with pytest.raises(CheckpointError, match="hold NaN or infinite values"):
        load_model(copy, "cpu")


@pytest.mark.parametrize(
    ("content", "words"),
    [("{not json", "run.json: unreadable"), ("[1, 2]", "not a phenoprint run record"), ('{"steps": 3}', "record")],
)
def test_a_run_json_that_is_not_a_run_record_names_the_file(copy: Path, content: str, words: str) -> None:
    (copy / "run.json").write_text(content)
    with pytest.raises(CheckpointError, match=words) as info:
        load_model(copy, "cpu")
    assert "run.json" in str(info.value)


def test_input_statistics_in_run_json_must_be_finite(copy: Path) -> None:
    info = json.loads((copy / "run.json").read_text())
    info["channel_stats"] = {"HUVEC-01": [[1.0] * 6, [float("nan")] * 6]}
    (copy / "run.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="input statistics of HUVEC-01 are not finite"):
        load_model(copy, "cpu")
