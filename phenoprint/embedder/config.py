"""Typed configuration of the embedder and of a training run, saved as JSON next to every artifact."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from phenoprint.data.layout import CELL_TYPES, RXRX1_CHANNELS

#: The margin heads (:mod:`phenoprint.embedder.heads` builds them), each with how it changes the target logit: the
#: one list the ``HeadName`` type (a test checks they agree), the head builder and the command line's choices use.
HEAD_HELP: dict[str, str] = {
    "arcface": "additive angle",
    "cosface": "additive cosine",
    "cosine": "no margin",
}
HeadName = Literal["arcface", "cosface", "cosine"]
HEADS: tuple[str, ...] = tuple(HEAD_HELP)
NormName = Literal["site", "experiment"]
SamplerName = Literal["random", "experiment", "plate"]
DeviceName = Literal["auto", "cpu", "cuda"]
#: Where the embedder runs (training, embedding, the service): auto picks CUDA when available.
DEVICES: tuple[str, ...] = get_args(DeviceName)
PreprocessName = Literal["auto", "loader", "device"]

#: Classes of the real RxRx1 design: 1,108 treatments + 30 positive controls + 1 untreated.
RXRX1_NUM_CLASSES = 1139


@dataclass(frozen=True)
class ModelConfig:
    """What the network is; everything needed to rebuild it from ``model.safetensors``."""

    backbone: str = "resnet18"  # any timm model name; created with in_chans=len(channels), num_classes=0
    pretrained: bool = False  # ImageNet weights adapted to 6 channels by timm (needs the internet or a cache)
    embedding_dim: int = 512  # width of the neck output, the vector every export and index uses
    num_classes: int = RXRX1_NUM_CLASSES  # siRNA classes of the margin head (controls are classes too)
    head: HeadName = "arcface"  # margin head: arcface (additive angle), cosface (additive cosine), cosine (no margin)
    margin: float = 0.2  # arcface: angle in radians added to the target; cosface: subtracted from its cosine
    scale: float = 30.0  # logit scale s of the margin head (learned start value for `cosine`)
    ce_weight: float = 0.0  # weight of a plain softmax-CE head mixed in (1st place RxRx1: 0.8 CE + 0.2 ArcFace)
    cell_type_context: bool = False  # concatenate a cell-type one-hot before the neck (1st place RxRx1)
    cell_types: tuple[str, ...] = CELL_TYPES  # order of the one-hot
    dropout: float = 0.0  # dropout before the neck's linear layer
    channels: tuple[str, ...] = RXRX1_CHANNELS  # input channel names, in order (data of other channels is refused)
    in_chans: int = 0  # input channels: len(channels) (0 fills it in; kept so that older configs read back)

    def __post_init__(self) -> None:
        if not self.channels or len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channels must be distinct names, at least one; got {self.channels}")
        if self.in_chans == 0:
            object.__setattr__(self, "in_chans", len(self.channels))
        if self.in_chans != len(self.channels):
            raise ValueError(f"in_chans {self.in_chans} differs from the {len(self.channels)} channels {self.channels}")
        _positive(self, "embedding_dim", "num_classes", "in_chans")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}; got {self.head!r}")
        if not 0.0 <= self.ce_weight <= 1.0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(
                f"ce_weight must lie in [0, 1] and dropout in [0, 1); got {self.ce_weight}, {self.dropout}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, schedule, hardware. Saved as ``config.json`` in the run directory."""

    model: ModelConfig = field(default_factory=ModelConfig)
    image_size: int = 224  # side of the training crop / inference resize, in pixels
    normalization: NormName = "site"  # per-site per-channel standardization, or per-experiment statistics
    epochs: int = 10  # passes over the training wells (one random site per well per pass)
    batch_size: int = 32  # wells per optimizer micro-batch (per process under DDP)
    grad_accum: int = 1  # micro-batches accumulated per optimizer step
    lr: float = 1e-3  # peak AdamW learning rate, reached after warmup
    weight_decay: float = 0.05  # AdamW decoupled weight decay
    warmup_steps: int = 100  # linear warmup from 0 before the cosine decay
    min_lr_ratio: float = 0.01  # final learning rate as a fraction of the peak
    sampler: SamplerName = "experiment"  # fill each batch from one experiment (or plate) so BN statistics are per batch
    holdout: tuple[str, ...] = ()  # experiments never trained on; validated on (centred kNN top-1)
    val_every: int = 1  # epochs between validations on the held-out experiments (the last epoch always validates)
    augment: bool = True  # dihedral transforms, random resized crop, per-channel intensity jitter
    crop_scale: tuple[float, float] = (0.6, 1.0)  # area range of the random resized crop
    intensity_jitter: float = 0.1  # x * (1 + U(-j, j)) + U(-j, j) per channel, on standardized input
    workers: int = 2  # data-loading processes (0: in the training process)
    device: DeviceName = "auto"  # auto picks CUDA when available
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # NHWC memory format on CUDA (ignored on CPU)
    compile: bool = False  # torch.compile the model
    preprocess_on: PreprocessName = "auto"  # standardize/augment in the loader or batched on the device (auto: CUDA)
    checkpoint_every: int = 200  # optimizer steps between checkpoints (and one at each epoch end)
    seed: int = 0  # seeds python, numpy and torch; the data order follows from it
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs); None: run all epochs
    data_root: str | None = None  # RxRx1 data root the run was trained on (informational)
    pack: str | None = None  # packed store the run read from (informational)

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "grad_accum", "checkpoint_every", "val_every")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels; got {self.image_size}")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.workers < 0:
            raise ValueError("lr must be > 0, and weight_decay, warmup_steps and workers >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1]; got {self.min_lr_ratio}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1; got {self.crop_scale}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None; got {self.max_steps}")
        for name, allowed in (
            ("normalization", get_args(NormName)),
            ("sampler", get_args(SamplerName)),
            ("device", DEVICES),
            ("preprocess_on", get_args(PreprocessName)),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")


def with_channels(config: TrainConfig, channels: tuple[str, ...]) -> TrainConfig:
    """The config with its model's input set to these channel names (the data's, when training starts)."""
    model = dataclasses.replace(config.model, channels=tuple(channels), in_chans=0)
    return dataclasses.replace(config, model=model)


def check_channels(model: ModelConfig, channels: tuple[str, ...], where: str) -> None:
    """Refuse data whose channels are not the model's, by name and order (a model of RxRx1's six stains cannot read
    five-channel JUMP sites, and two sources of the same count but another order would be read silently wrong).

    Raises:
        ValueError: the channels differ; says which, and how to select channels by name.
    """
    if tuple(channels) != tuple(model.channels):
        raise ValueError(
            f"{where} has channels {', '.join(channels)}, the model was trained on {', '.join(model.channels)}; "
            "pass --channels with the model's names to select (and order) them by name, where the data has them all"
        )


def _positive(config: object, *names: str) -> None:
    for name in names:
        if int(getattr(config, name)) < 1:
            raise ValueError(f"{name} must be >= 1; got {getattr(config, name)}")


def train_config(**options: Any) -> TrainConfig:
    """A training config from flat options named like the fields of :class:`ModelConfig` and :class:`TrainConfig`
    (as the CLI, the demo and the benchmarks name them); options left out keep the dataclasses' defaults.

    Raises:
        ValueError: an option that is a field of neither.
    """
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    unknown = sorted(set(options) - model_fields - train_fields)
    if unknown:
        raise ValueError(
            f"unknown training option(s) {', '.join(unknown)}; expected fields of ModelConfig or TrainConfig"
        )
    model = ModelConfig(**{k: v for k, v in options.items() if k in model_fields})
    return TrainConfig(model=model, **{k: v for k, v in options.items() if k in train_fields})
