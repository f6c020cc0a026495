"""Run directories: weights in safetensors, everything else in JSON (nothing is ever unpickled)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from phenoprint import __version__
from phenoprint.atomic import atomic_path, held, make_temp_dir, remove_stale, write_json_atomic
from phenoprint.configs import config_from_json, config_to_json
from phenoprint.data.layout import RXRX1_CHANNELS
from phenoprint.embedder.config import ModelConfig, TrainConfig
from phenoprint.errors import CheckpointError

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
RUN_FILE = "run.json"  # written last: its presence marks a finished run
CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
RUN_FORMAT_VERSION = 1
#: Names of checkpoint folders being written (``tempfile.mkdtemp(prefix=".step-NNNNNNNN.")``).
_CHECKPOINT_TEMP = re.compile(r"\.step-\d{8}\.[a-z0-9_]{8}")


def state_dict_to_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of a module's tensors (safetensors needs contiguous, unshared storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_weights(module: nn.Module, path: str | Path) -> Path:
    """Write a module's state dict to safetensors atomically."""
    with atomic_path(path) as tmp:
        save_file(state_dict_to_cpu(module), str(tmp))
    return Path(path)


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load safetensors weights into a module, refusing missing or unexpected keys and shape mismatches.

    Raises:
        CheckpointError: unreadable file or weights that do not fit the module.
    """
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or extra or wrong:
        raise CheckpointError(
            f"{path}: weights do not fit the configured model (missing {missing[:3]}, unexpected {extra[:3]}, "
            f"shape mismatch {wrong[:3]}); was config.json edited, or is this another run's file?"
        )
    non_finite = sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    if non_finite:
        raise CheckpointError(
            f"{path}: {len(non_finite)} weight tensor(s) hold NaN or infinite values ({', '.join(non_finite[:3])}); "
            "the run diverged or the file is damaged: train again or resume from an earlier checkpoint"
        )
    module.load_state_dict(tensors)


def fingerprint(config: TrainConfig, embedder: nn.Module) -> str:
    """SHA-256 of what determines the vectors: the model config, input size and normalization, and the weights."""
    h = hashlib.sha256()
    model = config_to_json(config.model)
    if tuple(config.model.channels) == RXRX1_CHANNELS:
        # added with named channels: runs of RxRx1's six stains, which every earlier run was, keep their fingerprint
        model.pop("channels", None)
    identity = {
        "model": model,
        "image_size": config.image_size,
        "normalization": config.normalization,
    }
    h.update(json.dumps(identity, sort_keys=True).encode())
    for name, tensor in sorted(state_dict_to_cpu(embedder).items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    return h.hexdigest()


# --- training state -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """Where training stands: optimizer steps done, and the epoch and micro-batch the next step starts at."""

    step: int
    epoch: int
    batch: int


def _optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    # data order and augmentations draw from generators seeded by (seed, epoch, item), not global state
    return tensors, {}


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    position: Position,
    config: TrainConfig,
    keep: int = 2,
) -> Path:
    """Write a resumable checkpoint atomically and point ``checkpoints/latest.json`` at it.

    The checkpoint is a folder ``checkpoints/step-NNNNNNNN`` holding ``model.safetensors`` (all training
    weights, heads included), ``optimizer.safetensors`` (optimizer tensors and RNG states), ``state.json``
    (position, optimizer hyper-parameters) and ``config.json``. It is written under a temporary
    name and renamed; the pointer is replaced last, so an interruption leaves the previous one usable.
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    remove_stale(root, _CHECKPOINT_TEMP)  # temporaries of killed writes: tens of MB each
    name = f"step-{position.step:08d}"
    tmp = make_temp_dir(root, prefix=f".{name}.")
    try:
        with held(tmp):  # while it is written: another save must not take it for a leftover
            save_file(state_dict_to_cpu(model), str(tmp / MODEL_FILE))
            opt_tensors, opt_meta = _optimizer_to_flat(optimizer)
            rng_tensors, rng_meta = _rng_state()
            save_file(
                {**{f"optim.{k}": v for k, v in opt_tensors.items()}, **rng_tensors}, str(tmp / "optimizer.safetensors")
            )
            state = {
                "position": {"step": position.step, "epoch": position.epoch, "batch": position.batch},
                "optimizer": opt_meta,
                "rng": rng_meta,
                "created": time.time(),
            }
            (tmp / "state.json").write_text(json.dumps(state))
            (tmp / CONFIG_FILE).write_text(json.dumps(config_to_json(config), indent=2, sort_keys=True))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            final = root / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json_atomic({"name": name, "step": position.step}, root / LATEST)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``latest.json`` points to, or None when the run has none."""
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    try:
        path = pointer.parent / str(json.loads(pointer.read_text())["name"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{pointer}: unreadable checkpoint pointer ({exc}); point it at a step-* folder") from exc
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{pointer} points to {path.name}, which is incomplete or missing")
    return path


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> Position:
    """Restore weights, optimizer and RNG state from :func:`save_checkpoint` output; return the position."""
    path = Path(path)
    load_weights(model, path / MODEL_FILE)
    state = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "optimizer.safetensors"))
    opt = {k.removeprefix("optim."): v for k, v in tensors.items() if k.startswith("optim.")}
    _optimizer_from_flat(optimizer, opt, state["optimizer"])
    _set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, state["rng"])
    p = state["position"]
    return Position(int(p["step"]), int(p["epoch"]), int(p["batch"]))


def checkpoint_config(path: str | Path) -> TrainConfig:
    """The training config stored with a checkpoint (or a run)."""
    return config_from_json(TrainConfig, json.loads((Path(path) / CONFIG_FILE).read_text()))


# --- finished runs --------------------------------------------------------------------------------------------


def write_run(run_dir: str | Path, embedder: nn.Module, config: TrainConfig, info: dict[str, Any]) -> str:
    """Write the exported model of a finished run: weights, resolved config, then ``run.json`` (last, and removed
    first, so that an interruption in between leaves an unfinished run that ``--resume`` finishes).

    Returns:
        The model fingerprint.
    """
    run_dir = Path(run_dir)
    # An extended run (``--resume`` with more steps) replaces the weights of a finished one: until the new run.json
    # is in place the run is unfinished, never new weights beside the old fingerprint.
    (run_dir / RUN_FILE).unlink(missing_ok=True)
    save_weights(embedder, run_dir / MODEL_FILE)
    write_json_atomic(config_to_json(config), run_dir / CONFIG_FILE)
    fp = fingerprint(config, embedder)
    write_json_atomic(
        {
            "format_version": RUN_FORMAT_VERSION,
            "fingerprint": fp,
            "phenoprint_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **info,
        },
        run_dir / RUN_FILE,
    )
    return fp


def read_run(run_dir: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and ``run.json`` of a finished run.

    Raises:
        CheckpointError: not a run directory, an unfinished one, or a ``run.json``/``config.json`` that cannot be read.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).is_file():
        hint = (
            " It has checkpoints: finish it with `phenoprint train … --resume`."
            if (run_dir / CHECKPOINTS).is_dir()
            else ""
        )
        raise CheckpointError(f"{run_dir}: not a finished phenoprint run (no {RUN_FILE}).{hint}")
    try:
        info = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(
            f"{run_dir / RUN_FILE}: unreadable ({exc}); it is written last by `phenoprint train`: restore it, or "
            "rerun `phenoprint train … --resume` to write it again"
        ) from exc
    if not isinstance(info, dict) or not isinstance(info.get("fingerprint"), str):
        raise CheckpointError(
            f"{run_dir / RUN_FILE}: not a phenoprint run record (a JSON object with the model's fingerprint); "
            "rerun `phenoprint train … --resume` to write it again"
        )
    if info.get("format_version") != RUN_FORMAT_VERSION:
        raise CheckpointError(
            f"{run_dir}: run format {info.get('format_version')} (this phenoprint reads {RUN_FORMAT_VERSION})"
        )
    try:
        config = config_from_json(TrainConfig, json.loads((run_dir / CONFIG_FILE).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{run_dir / CONFIG_FILE}: unreadable training config ({exc})") from exc
    return config, info


def model_config_of(run_dir: str | Path) -> ModelConfig:
    """The model config of a finished run."""
    return read_run(run_dir)[0].model
