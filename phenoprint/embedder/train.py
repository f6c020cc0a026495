"""Training the embedder: AdamW with warmup + cosine, bf16/channels_last on CUDA, DDP, atomic checkpoints, resume.

Kept as one module although long: the loop's steps share ``TrainingRun`` and ``LoopState`` and are only read together.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from phenoprint.atomic import write_json_atomic
from phenoprint.configs import config_to_json
from phenoprint.data.source import SiteSource
from phenoprint.data.table import EmbeddingTable
from phenoprint.embedder.checkpoint import (
    CONFIG_FILE,
    RUN_FILE,
    Position,
    checkpoint_config,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_run,
)
from phenoprint.embedder.config import TrainConfig, check_channels
from phenoprint.embedder.data import GroupBatchSampler, WellDataset, collate_train, experiment_channel_stats, well_table
from phenoprint.embedder.device_data import RawWellDataset, TrainPrepare, collate_raw_train, preprocess_on_device
from phenoprint.embedder.distributed import DistContext, init_distributed, shutdown_distributed
from phenoprint.embedder.model import LossParts, TrainingModel
from phenoprint.embedder.prefetch import DevicePrefetcher
from phenoprint.embedder.report import MODEL_CARD, VALIDATION_METHOD, write_run_report
from phenoprint.errors import CheckpointError, UnknownExperimentError

log = logging.getLogger(__name__)

#: Scores held-out wells: (their embeddings and the reference wells', the held-out experiments) -> a figure in [0, 1].
Validator = Callable[[EmbeddingTable, tuple[str, ...]], float]

METRICS_FILE = "metrics.jsonl"
#: Validation embeds the held-out wells and the training wells of at most this many experiments per cell
#: type as the kNN reference: enough for a stable top-1, bounded cost per epoch on the full release.
VAL_REFERENCE_EXPERIMENTS = 3
#: What scripts/demo.py trains (phenoprint.pipeline.DemoConfig), in `phenoprint train` options: the recipe the
#: data-fit warnings point to.
DEMO_RECIPE = (
    "--backbone resnet10t --image-size 64 --embedding-dim 128 --normalization experiment --epochs 20 "
    "--batch-size 32 --lr 0.003 --num-classes <largest siRNA id + 1> --holdout <one experiment per cell type>"
)
#: Config fields that may differ on --resume (they change where and how fast, not what is computed).
RESUMABLE_CHANGES = frozenset(
    {"workers", "device", "checkpoint_every", "max_steps", "data_root", "pack", "compile", "val_every", "preprocess_on"}
)


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) training run produced."""

    run_dir: Path
    fingerprint: str | None  # the model fingerprint (None on ranks other than 0, which write nothing)
    steps: int
    final_loss: float
    val_top1: float | None


def start_of_next_batch(pos: Position, per_epoch: int) -> Position:
    """The position to resume from: a checkpoint written at the very end of an epoch (batch == per_epoch, as
    earlier versions wrote them) continues at the start of the next epoch, so the epoch count still advances."""
    if pos.batch >= per_epoch:
        return Position(pos.step, pos.epoch + 1, 0)
    return pos


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier at optimizer step ``step``: linear warmup, then cosine to ``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def split_wells(
    metadata: pd.DataFrame, holdout: tuple[str, ...], require_images_in: SiteSource | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labelled wells for training and for validation (the held-out experiments).

    Raises:
        UnknownExperimentError: a held-out experiment the data does not have.
        ValueError: nothing left to train on.
    """
    known = set(metadata.experiment)
    for exp in holdout:
        if exp not in known:
            raise UnknownExperimentError(exp, known)
    if require_images_in is not None:
        metadata = require_images_in.with_images(metadata, "left out of training")
    wells = well_table(metadata)
    wells = wells[wells.sirna_id.notna()].reset_index(drop=True)
    is_val = wells.experiment.isin(holdout)
    train_w, val_w = wells[~is_val].reset_index(drop=True), wells[is_val].reset_index(drop=True)
    if train_w.empty:
        raise ValueError("no labelled wells with images left to train on (check --holdout and the data root)")
    return train_w, val_w


def data_fit_warnings(config: TrainConfig, source: SiteSource, train_w: pd.DataFrame, val_w: pd.DataFrame) -> list[str]:
    """What in a configuration does not fit the data it trains on: sites enlarged to the input size, nothing held
    out, a head far wider than the labels. Each message says what to pass, and where the demo's recipe is."""
    recipe = f"the demo's recipe (scripts/demo.py): phenoprint train {DEMO_RECIPE}"
    warnings = []
    first = train_w.iloc[0]
    side = min(source.load(first.experiment, int(first.plate), first.well, int(first.sites[0])).shape[1:])
    if config.image_size > side:
        warnings.append(
            f"--image-size {config.image_size} enlarges the {side}-px sites of this data: the network sees "
            f"interpolated pixels at {(config.image_size / side) ** 2:.1f}x the cost; pass --image-size {side} or "
            f"less ({recipe})"
        )
    if val_w.empty:
        warnings.append(
            "nothing is held out (--holdout): training reports no validation, and nothing tells learning the siRNAs "
            f"from memorizing these batches; hold out one experiment per cell type ({recipe})"
        )
    n_labels = int(train_w.sirna_id.max()) + 1
    if config.model.num_classes > 2 * n_labels:
        warnings.append(
            f"the head has {config.model.num_classes:,} classes but the labels use ids 0-{n_labels - 1}: pass "
            f"--num-classes {n_labels} (the default fits the real RxRx1 ids; {recipe})"
        )
    return warnings


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norm weights and the logit scale (1-d or 0-d tensors)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _check_resumable(saved: TrainConfig, asked: TrainConfig) -> None:
    a, b = config_to_json(saved), config_to_json(asked)
    changed = sorted(k for k in a if a[k] != b.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        diffs = "; ".join(f"{k}: {a[k]!r} → {b.get(k)!r}" for k in changed)
        raise CheckpointError(f"--resume with a different configuration ({diffs}); resume with the original options")


class _MetricsLog:
    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, **record: Any) -> None:
        if self.enabled:
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


def train(
    config: TrainConfig,
    source: SiteSource,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    validate: Validator | None = None,
) -> TrainResult:
    """Train an embedder on the labelled wells of ``source`` and write a run directory.

    Under ``torchrun`` every process calls this; rank 0 writes the run. On any failure (Ctrl-C included)
    the last completed optimizer step is checkpointed before the error propagates, so ``resume=True``
    continues from it.

    Args:
        config: the run's configuration (saved as ``config.json``).
        source: PNGs or a pack.
        run_dir: output folder (created); must be new unless ``resume``.
        resume: continue from the latest checkpoint in ``run_dir``.
        progress: show a progress bar.
        on_step: called after every optimizer step with (step, loss).
        validate: scores the held-out experiments' embeddings (table of them and the reference wells, holdout) at
            the end of each validated epoch; handed in by the job that trains (the embedder knows no index), e.g.
            :func:`phenoprint.index.evaluate.validation_top1`. None: no validation figure.

    Raises:
        CheckpointError: ``run_dir`` already holds a run and ``resume`` is off, or the config differs on resume.
    """
    run_dir = Path(run_dir)
    ctx = init_distributed(config.device)
    try:
        return _train(config, source, run_dir, ctx, resume, progress, on_step, validate)
    finally:
        shutdown_distributed()


def _train(
    config: TrainConfig,
    source: SiteSource,
    run_dir: Path,
    ctx: DistContext,
    resume: bool,
    progress: bool,
    on_step: Callable[[int, float], None] | None,
    validate: Validator | None,
) -> TrainResult:
    run = _prepare(config, source, run_dir, ctx, resume)
    bar = tqdm(
        total=run.total_steps,
        initial=run.start.step,
        desc="training",
        unit="step",
        disable=not (progress and ctx.is_main),
    )
    pos = start_of_next_batch(run.start, run.per_epoch)
    state = LoopState(step=pos.step, saved_step=pos.step, micro=pos.batch, micro_at_step=pos.batch, epoch=pos.epoch)
    try:
        _loop(run, state, source, config, ctx, bar, progress, on_step, validate)
    except BaseException:
        if state.step > state.saved_step:
            log.warning("training stopped at step %d; checkpointing it so --resume can continue", state.step)
            _checkpoint(run, state, Position(state.step, state.epoch, state.micro_at_step), config, ctx)
        raise
    finally:
        bar.close()
    if state.step > state.saved_step:
        _checkpoint(run, state, Position(state.step, state.epoch, state.micro), config, ctx)
    return _finish(run, state, config, run_dir, ctx)


@dataclass
class TrainingRun:
    """What the training loop runs on, set up once: the wells, the loader, the model, its optimizer."""

    train_w: pd.DataFrame  # labelled training wells
    val_w: pd.DataFrame  # labelled wells of the held-out experiments
    stats: dict | None  # per-experiment channel statistics (per-experiment normalization), else None
    sampler: GroupBatchSampler
    loader: Any  # a DataLoader, or the DevicePrefetcher around it when preprocessing runs on the device
    model: TrainingModel  # the unwrapped model (what is checkpointed)
    net: nn.Module  # what the step calls: the model, DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    metrics: _MetricsLog
    total_steps: int  # optimizer steps of the whole run
    per_epoch: int  # micro-batches of an epoch that the schedule uses
    start: Position  # where the run starts (a checkpoint's position on resume)
    run_dir: Path


@dataclass
class LoopState:
    """Where the loop is: optimizer steps, micro-batches within the epoch, and what it last measured."""

    step: int  # optimizer steps done
    saved_step: int  # the step of the last checkpoint
    micro: int  # micro-batches done in the current epoch
    micro_at_step: int  # micro-batches of the current epoch at the last optimizer step
    epoch: int
    last_loss: float = float("nan")
    val_top1: float | None = None
    explained: bool = False  # the validation figure is explained the first time it is printed
    window_images: int = 0  # images since the last throughput record
    window_start: float = field(default_factory=time.perf_counter)


def _prepare(config: TrainConfig, source: SiteSource, run_dir: Path, ctx: DistContext, resume: bool) -> TrainingRun:
    """Check the run folder and the data, build the loader and the model (from a checkpoint on resume)."""
    if not resume and ((run_dir / RUN_FILE).exists() or (run_dir / "checkpoints").exists()):
        raise CheckpointError(f"{run_dir} already holds a run; pass --resume to continue it or choose a new --out")
    ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        log.warning("--resume: %s has no checkpoint yet; starting from scratch", run_dir)
    if ckpt is not None:
        _check_resumable(checkpoint_config(ckpt), config)

    check_channels(config.model, source.channel_names, f"the training data ({source!r})")
    torch.manual_seed(config.seed)
    train_w, val_w = split_wells(source.metadata, config.holdout, source)
    max_label = int(train_w.sirna_id.max())
    if max_label >= config.model.num_classes:
        raise ValueError(
            f"siRNA id {max_label} does not fit a head of {config.model.num_classes} classes; "
            f"pass --num-classes {max_label + 1} or more"
        )
    if ctx.is_main:
        for warning in data_fit_warnings(config, source, train_w, val_w):
            log.warning("%s", warning)
    stats = (
        experiment_channel_stats(source, train_w, seed=config.seed) if config.normalization == "experiment" else None
    )
    sampler, loader, per_epoch, total_steps = _loader(config, source, train_w, stats, ctx)
    model, net, optimizer, start = _model(config, ctx, ckpt, run_dir)
    metrics = _MetricsLog(run_dir / METRICS_FILE, ctx.is_main)
    metrics.write(
        event="start",
        step=start.step,
        total_steps=total_steps,
        train_wells=len(train_w),
        val_wells=len(val_w),
        world_size=ctx.world_size,
        device=str(ctx.device),
        pretrained_loaded=model.embedder.pretrained_loaded,
    )
    return TrainingRun(
        train_w, val_w, stats, sampler, loader, model, net, optimizer, metrics, total_steps, per_epoch, start, run_dir
    )


def _loader(
    config: TrainConfig, source: SiteSource, train_w: pd.DataFrame, stats: dict | None, ctx: DistContext
) -> tuple[GroupBatchSampler, Any, int, int]:
    """The training loader and its schedule: (sampler, loader, micro-batches per epoch used, total steps)."""
    device = ctx.device
    on_device = preprocess_on_device(config.preprocess_on, device)  # uint8 over the bus, float work batched there
    dataset = (RawWellDataset if on_device else WellDataset)(
        source,
        train_w,
        image_size=config.image_size,
        train=True,
        seed=config.seed,
        augment=config.augment,
        crop_scale=config.crop_scale,
        jitter=config.intensity_jitter,
        channel_stats=stats,
        cell_types=config.model.cell_types,
    )
    groups = {
        "experiment": train_w.experiment.to_numpy(),
        "plate": (train_w.experiment + "/" + train_w.plate.astype(str)).to_numpy(),
        "random": None,
    }[config.sampler]
    sampler = GroupBatchSampler(groups, len(dataset), config.batch_size, config.seed, ctx.rank, ctx.world_size)
    micro_per_epoch = sampler.batches_per_epoch
    steps_per_epoch = micro_per_epoch // config.grad_accum
    if steps_per_epoch == 0:
        raise ValueError(
            f"{micro_per_epoch} batches per epoch cannot make one optimizer step with --grad-accum {config.grad_accum}"
        )
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    loader: Any = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate_raw_train if on_device else collate_train,
        pin_memory=device.type == "cuda",
        persistent_workers=config.workers > 0,  # no worker restart at every epoch boundary
    )
    if on_device:  # the next batch's copy and augmentation run one batch ahead of the compute
        prepare = TrainPrepare(config.image_size, device.type == "cuda" and config.channels_last)
        loader = DevicePrefetcher(loader, device, prepare)
    return sampler, loader, steps_per_epoch * config.grad_accum, total_steps


def _model(
    config: TrainConfig, ctx: DistContext, ckpt: Path | None, run_dir: Path
) -> tuple[TrainingModel, nn.Module, torch.optim.Optimizer, Position]:
    """The model on its device (resumed from ``ckpt``), what the step calls, its optimizer and the start position;
    rank 0 writes the run's config."""
    device = ctx.device
    cuda = device.type == "cuda"
    model = TrainingModel(config.model).to(device)
    if cuda and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    pos = Position(0, 0, 0)
    if ckpt is not None:
        pos = load_checkpoint(ckpt, model, optimizer)
        log.info("resumed from %s (step %d, epoch %d, batch %d)", ckpt.name, pos.step, pos.epoch, pos.batch)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(config_to_json(config), run_dir / CONFIG_FILE)
    net: nn.Module = model
    if ctx.distributed:
        net = DistributedDataParallel(model, device_ids=[device] if cuda else None)
    if config.compile:
        net = torch.compile(net)  # type: ignore[assignment]
    return model, net, optimizer, pos


def _loop(
    run: TrainingRun,
    state: LoopState,
    source: SiteSource,
    config: TrainConfig,
    ctx: DistContext,
    bar: tqdm,
    progress: bool,
    on_step: Callable[[int, float], None] | None,
    validate: Validator | None,
) -> None:
    """One loader pass over every remaining epoch (the workers prefetch across epoch boundaries)."""
    run.sampler.set_epoch(state.epoch, start_batch=state.micro, through=config.epochs, per_epoch=run.per_epoch)
    run.optimizer.zero_grad(set_to_none=True)
    run.net.train()
    if state.epoch >= config.epochs or state.step >= run.total_steps:
        return
    for batch in run.loader:
        if state.step >= run.total_steps:
            break
        due, parts = micro_step(run.net, batch, config, ctx.device, state)
        if not due:
            continue
        optimizer_step(run, parts, config, state)
        bar.update(1)
        bar.set_postfix(loss=f"{state.last_loss:.3f}", epoch=state.epoch)
        if state.step % 10 == 0 or state.step == run.total_steps:
            _record_window(run, state, parts, ctx)
        if on_step is not None:
            on_step(state.step, state.last_loss)
        if state.micro == run.per_epoch:  # the epoch is complete
            end_of_epoch(run, state, source, config, ctx, bar if progress and ctx.is_main else None, validate)
        if state.step % config.checkpoint_every == 0:
            _checkpoint(run, state, Position(state.step, state.epoch, state.micro), config, ctx)


def micro_step(
    net: nn.Module, batch: dict[str, torch.Tensor], config: TrainConfig, device: torch.device, state: LoopState
) -> tuple[bool, LossParts]:
    """Forward and backward one micro-batch, its loss scaled by the accumulation; returns whether it completes an
    accumulation (an optimizer step is due) and its loss parts."""
    cuda = device.type == "cuda"
    images = batch["image"].to(device, non_blocking=True)
    if cuda and config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = batch["label"].to(device, non_blocking=True)
    cell_type = batch["cell_type"].to(device) if config.model.cell_type_context else None
    boundary = (state.micro + 1) % config.grad_accum == 0
    # between optimizer steps, DDP need not all-reduce the accumulated gradients
    skip_sync = not boundary and isinstance(net, DistributedDataParallel)
    with net.no_sync() if skip_sync else nullcontext():  # type: ignore[operator]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda and config.amp):
            parts = net(images, labels, cell_type)
        (parts.total / config.grad_accum).backward()
    state.micro += 1
    state.window_images += len(images)
    return boundary, parts


def optimizer_step(run: TrainingRun, parts: LossParts, config: TrainConfig, state: LoopState) -> None:
    """The scheduled learning rate, one optimizer step on the accumulated gradients, and the step's loss (``parts``
    of the micro-batch that completed the accumulation; a non-finite loss stops the run)."""
    for group in run.optimizer.param_groups:
        group["lr"] = config.lr * lr_factor(state.step, run.total_steps, config.warmup_steps, config.min_lr_ratio)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.micro_at_step = state.micro
    state.last_loss = float(parts.total.detach())
    if not math.isfinite(state.last_loss):
        raise FloatingPointError(f"loss became {state.last_loss} at step {state.step}; lower --lr or check the data")


def end_of_epoch(
    run: TrainingRun,
    state: LoopState,
    source: SiteSource,
    config: TrainConfig,
    ctx: DistContext,
    bar: tqdm | None,
    validate: Validator | None,
) -> None:
    """Advance to the next epoch and, when one is due, validate on the held-out experiments (``bar``: where to say
    the figure, None to say nothing)."""
    state.epoch, state.micro, state.micro_at_step = state.epoch + 1, 0, 0
    due = state.epoch % config.val_every == 0 or state.epoch == config.epochs
    if validate is None or not len(run.val_w) or not due:
        return
    state.val_top1 = _validate(run.model, source, run.train_w, run.val_w, config, ctx, run.stats, validate)
    run.metrics.write(event="validation", step=state.step, epoch=state.epoch, val_top1=state.val_top1)
    if bar is not None:
        bar.write(f"epoch {state.epoch}: validation top-1 {state.val_top1:.3f} on the held-out experiments")
        if not state.explained:
            bar.write(f"  ({VALIDATION_METHOD})")
            state.explained = True
    run.net.train()


def _record_window(run: TrainingRun, state: LoopState, parts: LossParts, ctx: DistContext) -> None:
    """A metrics record of the last steps: the losses, the learning rate, the throughput since the last one."""
    elapsed = time.perf_counter() - state.window_start
    run.metrics.write(
        event="train",
        step=state.step,
        epoch=state.epoch,
        loss=state.last_loss,
        margin_loss=float(parts.margin),
        ce_loss=None if parts.ce is None else float(parts.ce),
        lr=run.optimizer.param_groups[0]["lr"],
        images_per_s=round(state.window_images * ctx.world_size / max(elapsed, 1e-9), 2),
    )
    state.window_images, state.window_start = 0, time.perf_counter()


def _checkpoint(run: TrainingRun, state: LoopState, at: Position, config: TrainConfig, ctx: DistContext) -> None:
    """Checkpoint the model and optimizer at ``at`` (rank 0 writes) and remember it as the last saved step."""
    if ctx.is_main:
        save_checkpoint(run.run_dir, run.model, run.optimizer, at, config)
    state.saved_step = at.step


def _finite_or_none(value: float | None) -> float | None:
    """``value``, or None where it is NaN or infinite (JSON cannot hold those; the run's JSON says unknown)."""
    return None if value is None or not math.isfinite(value) else value


def _finish(run: TrainingRun, state: LoopState, config: TrainConfig, run_dir: Path, ctx: DistContext) -> TrainResult:
    """Write the run (weights, run.json, model card) on rank 0 and say where it is."""
    fp: str | None = None
    if ctx.is_main:
        info = {
            "steps": state.step,
            "epochs_completed": state.epoch,
            "final_loss": _finite_or_none(state.last_loss),  # None: no step ran (an extension with none left)
            "val_top1": _finite_or_none(state.val_top1),
            "train_experiments": sorted(run.train_w.experiment.unique()),
            "holdout": list(config.holdout),
            "num_train_wells": len(run.train_w),
            "classes_seen": int(run.train_w.sirna_id.nunique()),
            "pretrained_loaded": run.model.embedder.pretrained_loaded,
            "world_size": ctx.world_size,
            "channel_stats": None
            if run.stats is None
            else {k: [m.tolist(), s.tolist()] for k, (m, s) in run.stats.items()},
        }
        fp = write_run(run_dir, run.model.embedder, config, info)
        run.metrics.write(event="end", step=state.step, fingerprint=fp, val_top1=state.val_top1)
        write_run_report(run_dir)
        log.info("run written to %s (fingerprint %s…), described in %s", run_dir, fp[:12], MODEL_CARD)
    ctx.barrier()
    return TrainResult(run_dir, fp, state.step, state.last_loss, state.val_top1)


def _validate(
    model: TrainingModel,
    source: SiteSource,
    train_w: pd.DataFrame,
    val_w: pd.DataFrame,
    config: TrainConfig,
    ctx: DistContext,
    stats: dict | None,
    validate: Validator,
) -> float | None:
    """The held-out experiments' figure that ``validate`` gives their embeddings (rank 0 computes, the others
    wait)."""
    result: float | None = None
    if ctx.is_main:
        from phenoprint.embedder.export import wells_to_table
        from phenoprint.embedder.inference import embed_wells

        ref = _reference_wells(train_w, val_w)
        wells = pd.concat([val_w, ref], ignore_index=True)
        was_training = model.embedder.training
        emb = embed_wells(
            model.embedder,
            source,
            wells,
            config=config,
            device=ctx.device,
            batch_size=max(8, config.batch_size),
            channel_stats=stats,
            progress=False,
        )
        model.embedder.train(was_training)
        table = wells_to_table(emb.wells, emb.vectors)
        result = float(validate(table, tuple(sorted(val_w.experiment.unique()))))
    ctx.barrier()
    return result


def _reference_wells(train_w: pd.DataFrame, val_w: pd.DataFrame) -> pd.DataFrame:
    cell_types = set(val_w.cell_type)
    rng = np.random.default_rng(0)
    picked = []
    for _, sub in train_w[train_w.cell_type.isin(cell_types)].groupby("cell_type"):
        exps = sorted(sub.experiment.unique())
        chosen = [exps[i] for i in sorted(rng.permutation(len(exps))[:VAL_REFERENCE_EXPERIMENTS])]
        picked.append(sub[sub.experiment.isin(chosen)])
    return pd.concat(picked, ignore_index=True) if picked else train_w.iloc[:0]
