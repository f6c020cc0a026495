"""Command-line verbs of ``phenoprint.embedder``: ``embed``, and the options of ``train`` (a verb of the jobs)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from phenoprint.cli import Command
from phenoprint.embedder.config import (
    HEAD_HELP,
    HEADS,
    DeviceName,
    ModelConfig,
    NormName,
    PreprocessName,
    SamplerName,
    TrainConfig,
    train_config,
)


def csv_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_source(p: argparse.ArgumentParser, required: bool = True) -> None:
    from phenoprint.data.layout import LAYOUTS

    p.add_argument(
        "--data",
        type=Path,
        required=required,
        help="data root: RxRx1 (v1.0 or Kaggle layout, or synthetic) or a folder with a CellProfiler LoadData CSV",
    )
    p.add_argument(
        "--pack", type=Path, default=None, help="read pixels from this `phenoprint pack` store instead of image files"
    )
    p.add_argument(
        "--layout",
        choices=("auto", *LAYOUTS),
        default="auto",
        help="how --data is laid out; auto detects it (and logs why)",
    )
    p.add_argument(
        "--channels",
        type=channel_list,
        default=None,
        help="read only these channels, by name and in this order (e.g. DNA,ER,RNA,AGP,Mito to drop brightfield); "
        "default: every channel of the data",
    )


def channel_list(text: str) -> tuple[str, ...]:
    """``--channels DNA,ER,RNA`` as a tuple of names."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected channel names separated by commas, got {text!r}")
    return names


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    m, t = ModelConfig(), TrainConfig()
    add_source(p)
    p.add_argument("--out", type=Path, required=True, help="run directory (weights, config, checkpoints, metrics)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    g = p.add_argument_group("model")
    g.add_argument("--backbone", default=m.backbone, help="timm model name (6-channel input is adapted by timm)")
    g.add_argument("--pretrained", action="store_true", help="start from timm's ImageNet weights (needs them cached)")
    g.add_argument("--embedding-dim", type=int, default=m.embedding_dim, help="width of the exported vectors")
    g.add_argument("--num-classes", type=int, default=m.num_classes, help="siRNA classes (1,139 in RxRx1)")
    g.add_argument(
        "--head",
        choices=HEADS,
        default=m.head,
        help="margin head: " + "; ".join(f"{name} ({how})" for name, how in HEAD_HELP.items()),
    )
    g.add_argument("--margin", type=float, default=m.margin, help="ArcFace angle (rad) or CosFace cosine margin")
    g.add_argument("--scale", type=float, default=m.scale, help="logit scale of the margin head")
    g.add_argument("--ce-weight", type=float, default=m.ce_weight, help="weight of a plain CE head mixed in (0-1)")
    g.add_argument("--cell-type-context", action="store_true", help="feed a cell-type one-hot to the neck")
    g.add_argument("--dropout", type=float, default=m.dropout, help="dropout before the neck's linear layer")
    g = p.add_argument_group("data and schedule")
    g.add_argument("--image-size", type=int, default=t.image_size, help="network input side in pixels")
    g.add_argument(
        "--normalization",
        choices=get_args(NormName),
        default=t.normalization,
        help="standardize channels per site, or by per-experiment statistics",
    )
    g.add_argument("--epochs", type=int, default=t.epochs, help="passes over the training wells")
    g.add_argument("--batch-size", type=int, default=t.batch_size, help="wells per micro-batch (per process)")
    g.add_argument("--grad-accum", type=int, default=t.grad_accum, help="micro-batches per optimizer step")
    g.add_argument("--lr", type=float, default=t.lr, help="peak AdamW learning rate")
    g.add_argument("--weight-decay", type=float, default=t.weight_decay, help="AdamW weight decay")
    g.add_argument("--warmup-steps", type=int, default=t.warmup_steps, help="linear warmup steps")
    g.add_argument(
        "--sampler",
        choices=get_args(SamplerName),
        default=t.sampler,
        help="fill each batch from one experiment / plate (per-batch BN statistics), or shuffle freely",
    )
    g.add_argument(
        "--holdout", type=csv_list, default=t.holdout, help="comma-separated experiments to hold out and validate on"
    )
    g.add_argument("--val-every", type=int, default=t.val_every, help="epochs between held-out validations")
    g.add_argument("--no-augment", action="store_true", help="no dihedral / crop / intensity augmentation")
    g.add_argument(
        "--max-steps", type=int, default=t.max_steps, help="stop after this many optimizer steps (smoke runs)"
    )
    g.add_argument("--seed", type=int, default=t.seed, help="seed of initialization, data order and augmentation")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", choices=get_args(DeviceName), default=t.device, help="where to train")
    g.add_argument("--workers", type=int, default=t.workers, help="data-loading processes")
    g.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument(
        "--preprocess-on",
        choices=get_args(PreprocessName),
        default=t.preprocess_on,
        help="where standardization and augmentation run: in the loader workers, or on the device on uint8 "
        "batches (auto: the device on CUDA)",
    )
    g.add_argument(
        "--checkpoint-every", type=int, default=t.checkpoint_every, help="optimizer steps between checkpoints"
    )


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The typed config a `phenoprint train` command line asks for."""
    return train_config(
        backbone=args.backbone,
        pretrained=args.pretrained,
        embedding_dim=args.embedding_dim,
        num_classes=args.num_classes,
        head=args.head,
        margin=args.margin,
        scale=args.scale,
        ce_weight=args.ce_weight,
        cell_type_context=args.cell_type_context,
        dropout=args.dropout,
        image_size=args.image_size,
        normalization=args.normalization,
        epochs=args.epochs,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        sampler=args.sampler,
        holdout=tuple(args.holdout),
        val_every=args.val_every,
        augment=not args.no_augment,
        workers=args.workers,
        device=args.device,
        amp=not args.no_amp,
        compile=args.compile,
        preprocess_on=args.preprocess_on,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        max_steps=args.max_steps,
        data_root=str(args.data),
        pack=None if args.pack is None else str(args.pack),
    )


def _add_embed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="a finished run directory (phenoprint train --out)")
    add_source(p)
    p.add_argument(
        "--out", type=Path, required=True, help="embedding table (.parquet); under torchrun a folder of part files"
    )
    p.add_argument("--experiment", type=csv_list, default=None, help="comma-separated experiments (default: all)")
    p.add_argument("--controls-only", action="store_true", help="embed only control wells")
    p.add_argument("--tta", type=int, default=1, help="dihedral transforms averaged per site (1-8)")
    p.add_argument("--per-site", action="store_true", help="one row per site (with Metadata_site) instead of per well")
    p.add_argument("--bn-adapt", action="store_true", help="re-estimate batch-norm statistics per experiment")
    p.add_argument("--batch-size", type=int, default=64, help="wells per forward pass")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--device", choices=get_args(DeviceName), default="auto", help="where to run")
    p.add_argument(
        "--preprocess-on",
        choices=("auto", "loader", "device"),
        default="auto",
        help="where standardization and resizing run: in the loader workers, or on the device on uint8 batches "
        "(auto: the device on CUDA)",
    )


def _run_embed(args: argparse.Namespace) -> int:
    from phenoprint.data.source import open_source
    from phenoprint.embedder.distributed import init_distributed, shutdown_distributed
    from phenoprint.embedder.export import export_embeddings, select_wells
    from phenoprint.embedder.inference import load_model

    ctx = init_distributed(args.device)
    try:
        source = open_source(args.data, args.pack, layout=args.layout, channels=args.channels)
        meta = source.with_images(source.metadata, "not embedded")
        wells = select_wells(meta, args.experiment, args.controls_only)
        model = load_model(args.model, "cuda" if ctx.device.type == "cuda" else "cpu")
        path = export_embeddings(
            model,
            source,
            args.out,
            wells=wells,
            tta=args.tta,
            per_site=args.per_site,
            bn_adapt=args.bn_adapt,
            batch_size=args.batch_size,
            workers=args.workers,
            preprocess_on=args.preprocess_on,
            rank=ctx.rank,
            world_size=ctx.world_size,
            progress=ctx.is_main,
        )
        print(f"wrote {path}")
    finally:
        shutdown_distributed()
    return 0


COMMANDS = [
    Command(
        "embed",
        "export well (or site) embeddings of a data root as a Parquet embedding table",
        _add_embed,
        _run_embed,
        description="Embed wells with a finished run (both sites averaged, optional dihedral TTA and per-experiment "
        "BN adaptation). Under torchrun each rank embeds a shard of the experiments and writes a part file.",
    ),
]
