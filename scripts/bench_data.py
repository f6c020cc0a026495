"""Benchmark the data layer: synthetic generation speed, PNG vs pack reads, realism, and batch dominance."""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from phenoprint import __version__
from phenoprint.cli import ArgumentParser
from phenoprint.data import detect_layout, load_site, read_metadata
from phenoprint.data.pack import PackSource, pack
from phenoprint.data.source import PngSource
from phenoprint.data.synth import build_design, preset_config, render_wells, synthesize
from phenoprint.data.synth.metrics import experiment_nn_accuracy, realism_table, site_intensity_features
from phenoprint.data.synth.writer import well_records

log = logging.getLogger("bench_data")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REAL = PROJECT_ROOT.parent / "shared" / "rxrx1" / "kaggle"
KEY = ["experiment", "plate", "well", "site"]


def time_preset(preset: str, out: Path, workers: int, seed: int, batch_effects: bool = True) -> dict[str, Any]:
    """Generate a whole preset; sites/s over the wall-clock time of the call (process start-up included)."""
    config = preset_config(preset, seed=seed, batch_effects=batch_effects)
    result = synthesize(config, out, workers=workers, progress=False)
    return {
        "preset": preset,
        "batch_effects": batch_effects,
        "image_size": config.image_size,
        "experiments": int(sum(p.n_experiments for p in config.plans)),
        "wells_per_plate": 1 + config.n_positive_controls + config.group_size,
        "sites": result.n_sites,
        "workers": workers,
        "seconds": round(result.seconds, 2),
        "sites_per_s": round(result.n_sites / result.seconds, 1),
    }


def time_full_sample(out: Path, n_sites: int, seed: int) -> dict[str, Any]:
    """Render and write the first ``n_sites`` sites of the full preset (512 px) in this process (one core)."""
    config = preset_config("full", seed=seed)
    wells = well_records(build_design(config).head(max(1, n_sites // config.sites_per_well)))
    start = time.perf_counter()
    rendered, _ = render_wells(config, out, wells)
    seconds = time.perf_counter() - start
    total = len(build_design(config)) * config.sites_per_well
    return {
        "preset": "full",
        "image_size": config.image_size,
        "sites_timed": rendered,
        "workers": 1,
        "seconds": round(seconds, 2),
        "sites_per_s_per_core": round(rendered / seconds, 2),
        "full_preset_sites": total,
        "estimated_core_hours_for_full": round(total / (rendered / seconds) / 3600, 1),
    }


def _median_seconds(fn: Any, repeats: int) -> float:
    """Median wall-clock seconds of ``repeats`` calls (the machine may be shared; one call is noisy)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_reads(root: Path, pack_dir: Path, n_sites: int, workers: int, repeats: int = 3) -> dict[str, Any]:
    """Sites/s read as (6, S, S) arrays from the PNGs and from a pack of the same sites (one process)."""
    pack_result = pack(root, pack_dir, workers=workers, progress=False)
    packed = PackSource(pack_dir)
    png = PngSource(root)
    keys = list(packed.metadata[KEY].itertuples(index=False))[:n_sites]
    rows = np.arange(len(keys))
    first_png = np.stack([png.load(*k) for k in keys[:4]])
    np.testing.assert_array_equal(first_png, packed.load_rows(rows[:4]))  # same pixels from both sources

    png_s = _median_seconds(lambda: [png.load(*k) for k in keys], repeats)
    pack_s = _median_seconds(lambda: [packed.load(*k) for k in keys], repeats)
    batch_s = _median_seconds(lambda: packed.load_rows(rows), repeats)
    return {
        "root": Path(root).name,  # the folder name only: no paths of the machine in results
        "image_size": list(packed.image_size),
        "sites": len(keys),
        "repeats": repeats,
        "pack_seconds": round(pack_result.seconds, 2),
        "png_sites_per_s": round(len(keys) / png_s, 1),
        "pack_sites_per_s": round(len(keys) / pack_s, 1),
        "pack_batched_sites_per_s": round(len(keys) / batch_s, 1),
        "speedup": round(png_s / pack_s, 1),
        "speedup_batched": round(png_s / batch_s, 1),
        "note": "median of repeats; the pack was just written, so it is read from the page cache, as are the PNGs",
    }


def realism(synthetic_root: Path, real_root: Path) -> dict[str, Any]:
    """Per-channel mean/std of untreated wells per cell type: synthetic (batch effects on) against real."""
    cell_types = sorted(set(read_metadata(synthetic_root).cell_type))
    table = realism_table(synthetic_root, real_root, cell_types)
    worst = float(np.max(np.abs(np.log(table[["mean_ratio", "std_ratio"]].to_numpy()))))
    return {
        "within_2x": bool(worst <= np.log(2)),
        "worst_ratio": round(float(np.exp(worst)), 3),
        "rows": json.loads(table.round(3).to_json(orient="records")),
    }


def batch_dominance(root: Path) -> dict[str, Any]:
    """1-NN experiment accuracy from per-site per-channel mean/std, among sites of the same cell type."""
    meta = read_metadata(root)
    layout = detect_layout(root)
    features = np.stack([site_intensity_features(load_site(layout, *k)) for k in meta[KEY].itertuples(index=False)])
    result = experiment_nn_accuracy(features, meta)
    return {
        "accuracy": round(result.accuracy, 4),
        "chance": round(result.chance, 4),
        "per_cell_type": {
            k: {"accuracy": round(a, 4), "chance": round(c, 4)} for k, (a, c) in result.per_cell_type.items()
        },
        "sites": result.n_sites,
    }


def run_benchmark(
    workdir: Path, workers: int, seed: int, full_sites: int, read_sites: int, real_root: Path | None
) -> dict[str, Any]:
    """Every measurement of this benchmark; data is generated under ``workdir``."""
    results: dict[str, Any] = {
        "phenoprint_version": __version__,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "seed": seed,
    }
    log.info("generating tiny and demo (with and without batch effects) with %d workers", workers)
    results["generator"] = [
        time_preset("tiny", workdir / "tiny", workers, seed),
        time_preset("demo", workdir / "demo", workers, seed),
        time_preset("demo", workdir / "demo-oracle", workers, seed, batch_effects=False),
    ]
    log.info("timing %d sites of the full preset at 512 px", full_sites)
    results["generator"].append(time_full_sample(workdir / "full-sample", full_sites, seed))
    log.info("timing reads: PNG against pack")
    results["reads"] = {"demo": time_reads(workdir / "demo", workdir / "demo.pack", read_sites, workers)}
    if real_root is not None and (real_root / "train.csv").is_file():
        results["reads"]["real_sample"] = time_reads(real_root, workdir / "real.pack", read_sites, 1)
        log.info("realism against %s", real_root)
        results["realism_demo"] = realism(workdir / "demo", real_root)
    else:
        log.warning("no real RxRx1 sample at %s: skipping realism and real-image reads", real_root)
    log.info("batch dominance on demo")
    results["batch_dominance_demo"] = {
        "with_batch_effects": batch_dominance(workdir / "demo"),
        "without_batch_effects": batch_dominance(workdir / "demo-oracle"),
    }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results.json"), help="JSON file for the results")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="folder to generate data in (must be empty); default: a temp dir"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for synth and pack")
    parser.add_argument("--seed", type=int, default=0, help="synth seed")
    parser.add_argument("--full-sites", type=int, default=16, help="sites of the 512-px full preset to time")
    parser.add_argument("--read-sites", type=int, default=500, help="sites read per source when timing reads")
    parser.add_argument(
        "--real-root", type=Path, default=DEFAULT_REAL, help="Kaggle-layout real RxRx1 sample for realism and reads"
    )
    args = parser.parse_args(argv)
    if args.workdir is not None and args.workdir.is_dir() and any(args.workdir.iterdir()):
        parser.error(f"--workdir {args.workdir} is not empty; generation would resume instead of being timed")
    if args.workers < 1 or args.full_sites < 1 or args.read_sites < 1:
        parser.error("--workers, --full-sites and --read-sites must be >= 1")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.out.with_suffix(".log"), mode="w")],
    )
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        workdir = args.workdir or Path(tmp)
        results = run_benchmark(workdir, args.workers, args.seed, args.full_sites, args.read_sites, args.real_root)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
