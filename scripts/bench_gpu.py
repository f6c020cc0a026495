#!/usr/bin/env python
"""GPU training and embedding throughput against the model's own rate, per backbone and size (JSON output).

Renders a synthetic RxRx1 root at 512 px (v1.0 layout, PNGs) and packs it at every size benchmarked. Then, for
each ``--configs`` entry (default densenet121 at 512 px and resnet50 at 256 px), in one run:

- the limit: the training step on a batch already on the GPU (bf16, channels_last);
- training from the pack and from the PNGs through ``phenoprint.embedder.train`` (uint8 batches preprocessed
  on the GPU, the default on CUDA), and from the pack with the loader-side preprocessing of before (the
  baseline), each with GPU utilization sampled through NVML (or ``nvidia-smi``) and peak GPU memory;
- embedding from the pack with TTA 1 and 8 against the forward pass alone on a batch already on the GPU;
- the loader's CPU time per sample (one worker's work: read + the preprocessing left to it), both paths.

Then, with ``--compile`` (the default), for each config: the ``torch.compile``d step and forward; where compiling
raises the model's own rate, that is the limit, and training from the pack and embedding run compiled too.
The eager sections of every config come first, so a run cut short by a time limit still holds them.

Results are written after every section, so a run stopped by a time limit keeps what it measured
(``"complete": false``). Needs no internet: no pretrained weights.

With ``--device cuda`` (the GPU run) it stops at once with exit status 2 when there is no CUDA device. With the
default ``--device auto`` (``make bench``), no CUDA device means exit 0 and the results of an earlier GPU run
kept in ``--out``. ``--device cpu`` with a tiny backbone and size runs every section on the CPU (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from phenoprint.atomic import write_json_atomic
from phenoprint.cli import ArgumentParser

log = logging.getLogger("bench_gpu")
#: The issue's goals: pipeline / limit ratios and GPU utilization while training.
GOAL_RATIO = 0.9
GOAL_UTILIZATION_PCT = 85.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_gpu.json"), help="JSON result file")
    p.add_argument("--work", type=Path, default=None, help="folder for the data and runs (default: a temp dir)")
    p.add_argument(
        "--configs",
        default="densenet121@512,resnet50@256",
        help="comma-separated BACKBONE@SIZE (timm name, network input side) to benchmark, in order",
    )
    p.add_argument("--batch-size", type=int, default=32, help="wells (one site each) per training step")
    p.add_argument("--steps", type=int, default=60, help="timed optimizer steps per training measurement")
    p.add_argument("--warmup", type=int, default=8, help="first steps left out of the rates (cuDNN autotuning)")
    p.add_argument("--embed-seconds", type=float, default=8.0, help="rough length of each embedding measurement")
    p.add_argument("--embed-batch-size", type=int, default=64, help="wells per embedding forward pass")
    p.add_argument("--experiments", type=int, default=4, help="synthetic experiments rendered (HUVEC and RPE)")
    p.add_argument("--group-size", type=int, default=24, help="treatment siRNAs per plate of the synthetic design")
    p.add_argument("--site-size", type=int, default=512, help="side of the rendered PNGs (the release's: 512)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2), help="data-loading processes")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the torch.compile'd step and forward; when faster they are the limit and are used",
    )
    p.add_argument(
        "--loader-path",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train from the pack with the loader-side preprocessing of before (the baseline)",
    )
    p.add_argument(
        "--device", choices=("auto", "cuda", "cpu"), default="auto", help="cuda: the GPU run; cpu: a smoke run"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of training")
    args = p.parse_args(argv)
    try:
        args.configs = [(b, int(s)) for b, s in (c.strip().split("@") for c in args.configs.split(",") if c.strip())]
    except ValueError:
        p.error(f"--configs takes BACKBONE@SIZE entries separated by commas, e.g. resnet50@256; got {args.configs!r}")
    return args


class UtilizationSampler:
    """GPU utilization (%) sampled every ``interval_s`` while a block runs: NVML when ``pynvml`` imports, else
    ``nvidia-smi -lms``; empty (and reported as None) with neither, e.g. on a CPU."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.samples: list[int] = []
        self.source: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._handle: Any = None
        if not torch.cuda.is_available():
            return
        index = torch.cuda.current_device()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml: Any = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.source = "nvml"
        except Exception as exc:  # no NVML binding: fall back to the driver's command-line tool
            if shutil.which("nvidia-smi"):
                self.source = "nvidia-smi"
                self._smi = [
                    "nvidia-smi",
                    f"--id={os.environ.get('CUDA_VISIBLE_DEVICES', str(index)).split(',')[0]}",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                    f"-lms={int(interval_s * 1000)}",
                ]
            else:
                log.warning("GPU utilization not sampled: no NVML (%s) and no nvidia-smi", exc)

    def __enter__(self) -> UtilizationSampler:
        if self.source == "nvml":
            self._thread = threading.Thread(target=self._run_nvml, daemon=True)
        elif self.source == "nvidia-smi":
            self._proc = subprocess.Popen(self._smi, stdout=subprocess.PIPE, text=True)
            self._thread = threading.Thread(target=self._run_smi, daemon=True)
        if self._thread is not None:
            self._thread.start()
        return self

    def _run_nvml(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(int(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))

    def _run_smi(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line.strip()))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def summary(self) -> dict[str, Any] | None:
        if not self.samples:
            return None
        a = np.asarray(self.samples)
        return {
            "mean_pct": round(float(a.mean()), 1),
            "median_pct": float(np.median(a)),
            "samples": len(a),
            "source": self.source,
        }


def make_data(work: Path, args: argparse.Namespace) -> tuple[Path, dict[int, Path], dict[str, float]]:
    """Render the synthetic root and pack it at every benchmarked size; returns (root, {size: pack}, seconds)."""
    from phenoprint.data.pack import pack
    from phenoprint.data.synth import synthesize
    from phenoprint.data.synth.design import CellTypePlan, SynthConfig

    half = max(1, args.experiments // 2)
    config = SynthConfig(
        preset="custom",
        plans=(CellTypePlan("HUVEC", half, half), CellTypePlan("RPE", half, half)),
        group_size=args.group_size,
        n_positive_controls=6,
        image_size=args.site_size,
        seed=args.seed,
    )
    root = work / "data"
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    synthesize(config, root, workers=os.cpu_count(), progress=False)
    seconds["synth"] = round(time.perf_counter() - started, 1)
    packs = {}
    for size in sorted({min(s, args.site_size) for _, s in args.configs}, reverse=True):
        started = time.perf_counter()
        packs[size] = work / f"data-{size}.pack"
        pack(root, packs[size], size=None if size == args.site_size else size, workers=os.cpu_count(), progress=False)
        seconds[f"pack_{size}"] = round(time.perf_counter() - started, 1)
    return root, packs, seconds


def train_config(args: argparse.Namespace, backbone: str, size: int, num_classes: int, **kw: Any):
    from phenoprint.embedder.config import train_config as from_options

    return from_options(
        backbone=backbone,
        embedding_dim=512,
        num_classes=num_classes,
        image_size=size,
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
        **kw,
    )


def timed_training(config, source, run_dir: Path, warmup: int, cuda: bool) -> dict[str, Any]:
    """Train, timing each optimizer step; rates exclude the first ``warmup`` steps."""
    from phenoprint.embedder.train import train

    stamps: list[float] = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with UtilizationSampler() as util:
        result = train(
            config, source, run_dir, progress=False, on_step=lambda s, loss: stamps.append(time.perf_counter())
        )
    total = time.perf_counter() - started
    timed = np.diff(np.asarray(stamps[warmup - 1 :]))
    out = {
        "preprocess_on": config.preprocess_on,
        "compiled": config.compile,
        "steps": len(stamps),
        "timed_steps": len(timed),
        "images_per_s": round(len(timed) * config.batch_size / float(timed.sum()), 1),
        "step_ms_p50": round(float(np.median(timed)) * 1000, 2),
        "step_ms_p90": round(float(np.quantile(timed, 0.9)) * 1000, 2),
        "wall_s_incl_startup": round(total, 1),
        "final_loss": round(result.final_loss, 4),
        "gpu_utilization": util.summary(),
    }
    if cuda:
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def model_only_training(
    args: argparse.Namespace, backbone: str, size: int, num_classes: int, device: torch.device, compile: bool
) -> dict[str, Any]:
    """The limit: the same training step on one batch already on the device (no loading, no augmentation)."""
    from phenoprint.embedder.config import ModelConfig
    from phenoprint.embedder.model import TrainingModel

    cuda = device.type == "cuda"
    model = TrainingModel(ModelConfig(backbone=backbone, embedding_dim=512, num_classes=num_classes)).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch_size, 6, size, size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (args.batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = net(x, y).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    started = time.perf_counter()
    for _ in range(args.warmup):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - started
    return {
        "compiled": compile,
        "images_per_s": round(args.steps * args.batch_size / seconds, 1),
        "warmup_s_incl_compile": round(warmup_s, 1),
    }


def embedding(
    run: Path, source, size: int, args: argparse.Namespace, device: torch.device, compile: bool, tta: int
) -> dict[str, Any]:
    """Embedding sites/s from the pack (read → uint8 over the bus → standardize/resize on the device → network with
    ``tta`` dihedral views) against the forward pass alone on a batch already on the device, same TTA."""
    from phenoprint.embedder.data import well_table
    from phenoprint.embedder.inference import embed_tensor, embed_wells, load_model

    model = load_model(run, str(device))
    net: Any = torch.compile(model.embedder) if compile else model.embedder
    wells = well_table(source.metadata)
    n_sites = 2 * args.embed_batch_size  # a batch of wells holds two sites each
    x = torch.randn(n_sites, 6, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    started = time.perf_counter()
    for _ in range(2):
        embed_tensor(net, x, None, device, tta=tta)
    warmup_s = time.perf_counter() - started
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < args.embed_seconds / 2 or done < 4 * n_sites:
        embed_tensor(net, x, None, device, tta=tta)  # returns on the host: synchronized
        done += n_sites
    forward_rate = done / (time.perf_counter() - started)
    sites = int(sum(len(s) for s in wells.sites))
    repeats = max(1, int(np.ceil(forward_rate * args.embed_seconds / sites)))
    many = pd.concat([wells] * repeats, ignore_index=True)

    def pipeline(some: pd.DataFrame, workers: int) -> None:
        embed_wells(
            net,
            source,
            some,
            config=model.config,
            device=device,
            batch_size=args.embed_batch_size,
            tta=tta,
            workers=workers,
            progress=False,
        )

    pipeline(wells.head(args.embed_batch_size), 0)  # warm-up of the other batch shapes
    started = time.perf_counter()
    with UtilizationSampler() as util:
        pipeline(many, args.workers)
    pipeline_s = time.perf_counter() - started
    pipeline_rate = repeats * sites / pipeline_s
    return {
        "tta": tta,
        "compiled": compile,
        "sites": repeats * sites,
        "pipeline_sites_per_s": round(pipeline_rate, 1),
        "forward_only_sites_per_s": round(forward_rate, 1),
        "ratio_pipeline_to_forward": round(pipeline_rate / forward_rate, 3),
        "forward_warmup_s_incl_compile": round(warmup_s, 1),
        "gpu_utilization": util.summary(),
    }


def loader_cpu_time(source, size: int, n: int = 32) -> dict[str, Any]:
    """CPU ms per sample of one loader worker (one thread, as DataLoader workers run): reading plus the
    preprocessing left to the loader, for training items and per site of inference items, on both paths."""
    from phenoprint.embedder.data import WellDataset, collate_sites, collate_train, well_table
    from phenoprint.embedder.device_data import RawWellDataset, collate_raw_sites, collate_raw_train

    wells = well_table(source.metadata).head(n)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    try:
        for name, cls, train_collate, sites_collate in (
            ("loader_path", WellDataset, collate_train, collate_sites),
            ("device_path", RawWellDataset, collate_raw_train, collate_raw_sites),
        ):
            train_ds = cls(source, wells, image_size=size, train=True)
            started = time.process_time()
            train_collate([train_ds[(0, i)] for i in range(len(wells))])
            train_ms = (time.process_time() - started) * 1000 / len(wells)
            infer_ds = cls(source, wells, image_size=size, train=False)
            started = time.process_time()
            batch = sites_collate([infer_ds[i] for i in range(len(wells))])
            infer_ms = (time.process_time() - started) * 1000 / len(batch["image"])
            out[name] = {"train_ms_per_sample": round(train_ms, 3), "embed_ms_per_site": round(infer_ms, 3)}
    finally:
        torch.set_num_threads(threads)
    out["samples"] = len(wells)
    return out


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


def _sources(root: Path, pack: Path):
    from phenoprint.data.source import open_source

    png, packed = open_source(root), open_source(root, pack)
    return png, packed, int(png.metadata.sirna_id.max()) + 1


def bench_eager(results: dict[str, Any], args, backbone: str, size: int, root, pack, work: Path, device, save) -> None:
    """The eager sections of one backbone and size, each saved as it completes."""
    cuda = device.type == "cuda"
    png, packed, num_classes = _sources(root, pack)
    key, tag = f"{backbone}@{size}", f"{backbone}-{size}"
    r: dict[str, Any] = results["configs"].setdefault(key, {"backbone": backbone, "image_size": size})

    log.info("%s: loader CPU time per sample", key)
    r["loader_cpu"] = {"pack": loader_cpu_time(packed, size), "png": loader_cpu_time(png, size)}
    save()
    log.info("%s: model-only training step", key)
    r["train_model_only"] = model_only_training(args, backbone, size, num_classes, device, compile=False)
    r["headline"] = headline(r)
    save()
    runs = [("train_from_pack", packed, "device", pack), ("train_from_png", png, "device", None)]
    if args.loader_path:
        runs.insert(1, ("train_from_pack_loader_path", packed, "loader", pack))
    for name, source, where, pack_path in runs:
        log.info("%s: %s (preprocessing: %s)", key, name, where)
        config = train_config(
            args,
            backbone,
            size,
            num_classes,
            preprocess_on=where,
            data_root=str(root),
            pack=None if pack_path is None else str(pack_path),
        )
        r[name] = timed_training(config, source, work / f"run-{tag}-{name}", args.warmup, cuda)
        r["headline"] = headline(r)
        save()
    for tta in (1, 8):
        log.info("%s: embedding from the pack, TTA %d", key, tta)
        r[f"embed_tta{tta}"] = embedding(work / f"run-{tag}-train_from_pack", packed, size, args, device, False, tta)
        r["headline"] = headline(r)
        save()


def bench_compiled(results: dict[str, Any], args, backbone: str, size: int, root, pack, work: Path, device, save):
    """The torch.compile sections of one backbone and size (after every eager one, so a run cut short by a time
    limit keeps the eager table of every config): the compiled step and forward, and the pipelines run compiled
    where compiling raised the model's own rate, as the limit is then the compiled one."""
    cuda = device.type == "cuda"
    _, packed, num_classes = _sources(root, pack)
    key, tag = f"{backbone}@{size}", f"{backbone}-{size}"
    r = results["configs"][key]
    log.info("%s: model-only training step, torch.compile", key)
    r["train_model_only_compiled"] = model_only_training(args, backbone, size, num_classes, device, compile=True)
    r["headline"] = headline(r)
    save()
    if r["train_model_only_compiled"]["images_per_s"] > r["train_model_only"]["images_per_s"]:
        log.info("%s: train_from_pack, torch.compile", key)
        config = train_config(
            args, backbone, size, num_classes, compile=True, preprocess_on="device", data_root=str(root), pack=str(pack)
        )
        r["train_from_pack_compiled"] = timed_training(
            config, packed, work / f"run-{tag}-train_from_pack_compiled", args.warmup, cuda
        )
        r["headline"] = headline(r)
        save()
    for tta in (1, 8):
        eager = r.get(f"embed_tta{tta}", {})
        if tta == 8 and not _compiled_forward_faster(r):
            break
        log.info("%s: embedding from the pack, TTA %d, torch.compile", key, tta)
        r[f"embed_tta{tta}_compiled"] = embedding(
            work / f"run-{tag}-train_from_pack", packed, size, args, device, True, tta
        )
        r["headline"] = headline(r)
        save()
        if eager and not _compiled_forward_faster(r):
            break


def _compiled_forward_faster(r: dict[str, Any]) -> bool:
    comp, eager = r.get("embed_tta1_compiled"), r.get("embed_tta1")
    return bool(comp and eager and comp["forward_only_sites_per_s"] > eager["forward_only_sites_per_s"])


def _rate(r: dict[str, Any], name: str) -> float | None:
    return (r.get(name) or {}).get("images_per_s")


def headline(r: dict[str, Any]) -> dict[str, Any]:
    """The Done-when figures of one config against the limit: the faster of the eager and the compiled model-only
    step (and forward); the pipeline figure is the compiled run's where the limit is compiled and it was measured
    (else the eager run's, against the compiled limit: the conservative ratio)."""
    eager_limit, compiled_limit = _rate(r, "train_model_only"), _rate(r, "train_model_only_compiled")
    compiled = compiled_limit is not None and eager_limit is not None and compiled_limit > eager_limit
    limit = compiled_limit if compiled else eager_limit
    pack_run = "train_from_pack_compiled" if compiled and "train_from_pack_compiled" in r else "train_from_pack"
    suffix = "_compiled" if _compiled_forward_faster(r) else ""
    embed = {tta: r.get(f"embed_tta{tta}{suffix}") or r.get(f"embed_tta{tta}") or {} for tta in (1, 8)}
    if suffix:  # pipeline against the faster (compiled) forward, even where only the eager pipeline was measured
        forward = {tta: (r.get(f"embed_tta{tta}_compiled") or r["embed_tta1_compiled"]) for tta in (1, 8)}
    else:
        forward = embed

    def over(value: float | None, by: float | None) -> float | None:
        return None if value is None or not by else round(value / by, 3)

    util = ((r.get(pack_run) or {}).get("gpu_utilization") or {}).get("mean_pct")
    out: dict[str, Any] = {
        "limit_train_images_per_s": limit,
        "limit_compiled": compiled,
        "train_pack_run": pack_run,
        "train_pack_images_per_s": _rate(r, pack_run),
        "train_pack_over_limit": over(_rate(r, pack_run), limit),
        "train_png_over_limit": over(_rate(r, "train_from_png"), limit),
        "train_pack_loader_path_over_limit": over(_rate(r, "train_from_pack_loader_path"), limit),
        "gpu_utilization_training_pack_mean_pct": util,
        "peak_gpu_memory_gib_training": (r.get(pack_run) or {}).get("peak_gpu_memory_gib"),
        "embed_compiled": bool(suffix),
        "goals": {"ratio": GOAL_RATIO, "gpu_utilization_pct": GOAL_UTILIZATION_PCT},
    }
    for tta in (1, 8):
        out[f"embed_tta{tta}_sites_per_s"] = embed[tta].get("pipeline_sites_per_s")
        out[f"forward_tta{tta}_sites_per_s"] = forward[tta].get("forward_only_sites_per_s")
        out[f"embed_tta{tta}_over_forward"] = over(
            out[f"embed_tta{tta}_sites_per_s"], out[f"forward_tta{tta}_sites_per_s"]
        )
    ratios = [out["train_pack_over_limit"], out["embed_tta1_over_forward"], out["embed_tta8_over_forward"]]
    met = None if None in ratios or util is None else all(v >= GOAL_RATIO for v in ratios)
    out["goals_met"] = None if met is None else met and util >= GOAL_UTILIZATION_PCT
    return out


def run(args: argparse.Namespace, work: Path, device: torch.device) -> dict[str, Any]:
    from phenoprint.data.source import open_source

    results: dict[str, Any] = {
        "benchmark": "bench_gpu",
        "format": 2,  # per-config results with device-side preprocessing (issue 18)
        "complete": False,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(device),
        "setup": {
            "configs": [f"{b}@{s}" for b, s in args.configs],
            "batch_size": args.batch_size,
            "steps": args.steps,
            "warmup": args.warmup,
            "workers": args.workers,
            "compile_measured": args.compile,
            "bf16": device.type == "cuda",
            "channels_last": device.type == "cuda",
            "site_size": args.site_size,
        },
        "configs": {},
    }

    def save() -> None:
        write_json_atomic(results, args.out)

    root, packs, seconds = make_data(work, args)
    results["setup"]["data_seconds"] = seconds
    results["setup"]["sites"] = len(open_source(root).metadata)
    save()
    for backbone, size in args.configs:
        bench_eager(results, args, backbone, size, root, packs[min(size, args.site_size)], work, device, save)
    if args.compile:
        for backbone, size in args.configs:
            bench_compiled(results, args, backbone, size, root, packs[min(size, args.site_size)], work, device, save)
    results["complete"] = True
    results["headline"] = {key: r["headline"] for key, r in results["configs"].items()}
    save()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.device != "cpu" and not torch.cuda.is_available():
        reason = "no CUDA device on this machine (torch.cuda.is_available() is False; --device cpu: a CPU smoke run)"
        if args.device == "cuda":
            print(f"bench_gpu: {reason}; nothing measured, {args.out} left as it was", file=sys.stderr)
            return 2
        if args.out.is_file() and "skipped" not in json.loads(args.out.read_text()):
            log.warning("skipped: %s; keeping the GPU results already in %s", reason, args.out)
            return 0
        log.warning("skipped: %s", reason)
        write_json_atomic({"benchmark": "bench_gpu", "skipped": reason, "date": time.strftime("%Y-%m-%d")}, args.out)
        return 0
    device = torch.device("cpu" if args.device == "cpu" else "cuda")
    torch.manual_seed(args.seed)
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        results = run(args, args.work, device)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_gpu.") as tmp:
            results = run(args, Path(tmp), device)
    print(json.dumps(results["headline"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
