#!/usr/bin/env python
"""GPU training and embedding throughput at the release's 512 px, from PNGs and from a pack (JSON output).

Renders a synthetic RxRx1 root at ``--image-size`` (v1.0 layout, PNGs), packs it, then trains the embedder
(``--backbone``, bf16 autocast, channels_last) for ``--steps`` optimizer steps reading PNGs and again reading the
pack, timing every step, sampling GPU utilization, and recording peak GPU memory. In the same run it measures
the limit: the same model's training step on a batch already on the GPU (no data loading at all), and the
same for inference (embedding export from the pack vs the forward pass alone).

Without a CUDA device it exits 0 and keeps the results of an earlier GPU run in ``--out`` (else writes
``{"skipped": reason}``), so ``make bench`` runs anywhere; ``--device cpu`` with a small backbone and image size
runs the whole script on a CPU as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phenoprint.atomic import write_json_atomic
from phenoprint.cli import ArgumentParser

log = logging.getLogger("bench_gpu")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_gpu.json"), help="JSON result file")
    p.add_argument("--work", type=Path, default=None, help="folder for the data and runs (default: a temp dir)")
    p.add_argument("--backbone", default="densenet121", help="timm backbone")
    p.add_argument("--image-size", type=int, default=512, help="side of the rendered PNGs and of the network input")
    p.add_argument("--batch-size", type=int, default=32, help="wells (one site each) per training step")
    p.add_argument("--steps", type=int, default=120, help="timed optimizer steps per source")
    p.add_argument("--warmup", type=int, default=10, help="first steps left out of the rates (cuDNN autotuning)")
    p.add_argument("--experiments", type=int, default=4, help="synthetic experiments rendered (HUVEC and RPE)")
    p.add_argument("--group-size", type=int, default=24, help="treatment siRNAs per plate of the synthetic design")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2), help="data-loading processes")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="cpu: a smoke run")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of training")
    return p.parse_args(argv)


class UtilizationSampler:
    """GPU utilization (%) sampled every ``interval_s`` through NVML while a block runs (empty without NVML)."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml: Any = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        except Exception as exc:  # no NVML (CPU run, or the library is absent): utilization is not reported
            log.info("GPU utilization not sampled: %s", exc)

    def __enter__(self) -> UtilizationSampler:
        if self._handle is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(int(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, float] | None:
        if not self.samples:
            return None
        a = np.asarray(self.samples)
        return {"mean_pct": round(float(a.mean()), 1), "median_pct": float(np.median(a)), "samples": len(a)}


def make_data(work: Path, args: argparse.Namespace) -> tuple[Path, Path, dict[str, float]]:
    """Render the synthetic root at the benchmark's size and pack it; returns (root, pack, seconds)."""
    from phenoprint.data.pack import pack
    from phenoprint.data.synth import synthesize
    from phenoprint.data.synth.design import CellTypePlan, SynthConfig

    half = max(1, args.experiments // 2)
    config = SynthConfig(
        preset="custom",
        plans=(CellTypePlan("HUVEC", half, half), CellTypePlan("RPE", half, half)),
        group_size=args.group_size,
        n_positive_controls=6,
        image_size=args.image_size,
        seed=args.seed,
    )
    root, packed = work / "data", work / "data.pack"
    started = time.perf_counter()
    synthesize(config, root, workers=os.cpu_count(), progress=False)
    synth_s = time.perf_counter() - started
    started = time.perf_counter()
    pack(root, packed, workers=os.cpu_count(), progress=False)
    return root, packed, {"synth": round(synth_s, 1), "pack": round(time.perf_counter() - started, 1)}


def train_config(args: argparse.Namespace, num_classes: int, data: Path, pack: Path | None):
    from phenoprint.embedder.config import ModelConfig, TrainConfig

    return TrainConfig(
        model=ModelConfig(backbone=args.backbone, embedding_dim=512, num_classes=num_classes),
        image_size=args.image_size,
        epochs=10_000,
        batch_size=args.batch_size,
        lr=1e-3,
        warmup_steps=args.warmup,
        max_steps=args.warmup + args.steps,
        workers=args.workers,
        device=args.device,
        checkpoint_every=10**9,
        val_every=10_000,
        seed=args.seed,
        data_root=str(data),
        pack=None if pack is None else str(pack),
    )


def timed_training(config, source, run_dir: Path, warmup: int, cuda: bool) -> dict[str, Any]:
    """Train, timing each optimizer step; rates exclude the first ``warmup`` steps."""
    from phenoprint.embedder.train import train

    stamps: list[float] = []

    def on_step(step: int, loss: float) -> None:
        stamps.append(time.perf_counter())

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with UtilizationSampler() as util:
        result = train(config, source, run_dir, progress=False, on_step=on_step)
    total = time.perf_counter() - started
    timed = np.diff(np.asarray(stamps[warmup - 1 :]))
    images = len(timed) * config.batch_size
    out = {
        "steps": len(stamps),
        "timed_steps": len(timed),
        "images_per_s": round(images / float(timed.sum()), 1),
        "step_ms_p50": round(float(np.median(timed)) * 1000, 2),
        "step_ms_p90": round(float(np.quantile(timed, 0.9)) * 1000, 2),
        "images_per_s_at_median_step": round(config.batch_size / float(np.median(timed)), 1),
        "wall_s_incl_startup": round(total, 1),
        "final_loss": round(result.final_loss, 4),
        "gpu_utilization": util.summary(),
    }
    if cuda:
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def model_only_training(args: argparse.Namespace, num_classes: int, device: torch.device) -> dict[str, Any]:
    """The limit: the same training step on one batch already on the device (no loading, no augmentation)."""
    from phenoprint.embedder.config import ModelConfig
    from phenoprint.embedder.model import TrainingModel

    cuda = device.type == "cuda"
    model = TrainingModel(ModelConfig(backbone=args.backbone, embedding_dim=512, num_classes=num_classes)).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch_size, 6, args.image_size, args.image_size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (args.batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(x, y).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(args.warmup):
        step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - started
    return {"images_per_s": round(args.steps * args.batch_size / seconds, 1)}


def inference(run: Path, root: Path, pack: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Embedding export from the pack (both sites, bf16) vs the forward pass alone on the same batch shape."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.data import well_table
    from phenoprint.embedder.inference import load_model
    from phenoprint.embedder.throughput import embedding_throughput

    source = open_source(root, pack)
    wells = well_table(source.metadata)
    return embedding_throughput(load_model(run, args.device), source, wells, batch_size=64, workers=args.workers)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1)})
    return info


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from phenoprint.data.source import open_source

    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    root, packed, seconds = make_data(work, args)
    png_source = open_source(root)
    num_classes = int(png_source.metadata.sirna_id.max()) + 1
    results: dict[str, Any] = {
        "benchmark": "bench_gpu",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(device),
        "setup": {
            "backbone": args.backbone,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "workers": args.workers,
            "sites": len(png_source.metadata),
            "bf16": cuda,
            "channels_last": cuda,
            "data_seconds": seconds,
        },
    }
    log.info("training from PNGs")
    results["train_from_png"] = timed_training(
        train_config(args, num_classes, root, None), png_source, work / "run-png", args.warmup, cuda
    )
    log.info("training from the pack")
    results["train_from_pack"] = timed_training(
        train_config(args, num_classes, root, packed), open_source(root, packed), work / "run-pack", args.warmup, cuda
    )
    log.info("model-only training step")
    results["train_model_only"] = model_only_training(args, num_classes, device)
    limit = results["train_model_only"]["images_per_s"]
    for key in ("train_from_png", "train_from_pack"):
        results[key]["ratio_to_model_only"] = round(results[key]["images_per_s"] / limit, 3)
    log.info("embedding export")
    results["embed_from_pack"] = inference(work / "run-pack", root, packed, args)
    results["headline"] = {
        "train_images_per_s_png": results["train_from_png"]["images_per_s"],
        "train_images_per_s_pack": results["train_from_pack"]["images_per_s"],
        "train_images_per_s_model_only": limit,
        "pack_over_png": round(
            results["train_from_pack"]["images_per_s"] / results["train_from_png"]["images_per_s"], 2
        ),
        "embed_pipeline_over_model_only": results["embed_from_pack"]["ratio_pipeline_to_model"],
    }
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.device != "cpu" and not torch.cuda.is_available():
        reason = "no CUDA device on this machine (pass --device cpu for a CPU smoke run)"
        if args.out.is_file() and "skipped" not in json.loads(args.out.read_text()):
            log.warning("skipped: %s; keeping the GPU results already in %s", reason, args.out)
            return 0
        log.warning("skipped: %s", reason)
        write_json_atomic({"benchmark": "bench_gpu", "skipped": reason, "date": time.strftime("%Y-%m-%d")}, args.out)
        return 0
    torch.manual_seed(args.seed)
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        results = run(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_gpu.") as tmp:
            results = run(args, Path(tmp))
    write_json_atomic(results, args.out)
    print(json.dumps(results["headline"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
