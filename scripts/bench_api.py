#!/usr/bin/env python
"""Benchmark the HTTP service: /classify latency and throughput against a real uvicorn, next to the same work done
in-process, and the server's memory over 2,000 requests.

Builds its own model and index unless given ones: the ``tiny`` synthetic preset (images rendered at
``--image-size``), a small resnet10t trained on its training experiments, and one held-out experiment onboarded from
its controls the way ``scripts/build_index.py`` does. The queries are that experiment's wells, posted as their
release-named PNGs (12 per well). In the same run it measures:

* in-process: decode the same PNG bytes, embed (one ``embed_batch`` call), centre and classify, one well at a time;
* ``POST /classify`` over HTTP on 127.0.0.1 at concurrency 1 and 8 (p50, p99, requests/s);
* the server process's RSS after a warm-up and after 2,000 more requests.

Goals (issue 6): overhead at concurrency 1 (HTTP p50 / in-process p50) <= 1.2; p99 at concurrency 8 <= 3x p50 at
concurrency 1; RSS within 10%. Writes one JSON file and a log next to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from phenoprint.cli import ArgumentParser

log = logging.getLogger("bench_api")

Query = list[tuple[str, bytes]]  # one well: (file name, PNG bytes) per channel and site


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_api.json"), help="JSON result file")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of the training run")
    p.add_argument("--work", type=Path, default=None, help="folder for the data, run and index (default: a temp dir)")
    p.add_argument("--image-size", type=int, default=256, help="side of the synthetic channel PNGs, in pixels")
    p.add_argument("--model-size", type=int, default=128, help="input side of the model (images are resized to it)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs of the benchmark's own model")
    p.add_argument("--model", type=Path, default=None, help="serve this finished run instead (needs --indexes, --data)")
    p.add_argument("--indexes", type=Path, default=None, help="index folder that goes with --model")
    p.add_argument("--data", type=Path, default=None, help="data root whose PNGs are the queries (with --model)")
    p.add_argument("--experiment", default=None, help="experiment whose wells are posted (default: the held-out one)")
    p.add_argument("--wells", type=int, default=32, help="distinct wells cycled through as queries")
    p.add_argument("--latency-requests", type=int, default=200, help="timed requests per concurrency level")
    p.add_argument("--rss-requests", type=int, default=2000, help="requests between the two RSS readings")
    p.add_argument("--warmup", type=int, default=30, help="requests before any timing or RSS reading")
    p.add_argument("--rounds", type=int, default=4, help="alternations of the concurrency-1 and concurrency-8 runs")
    p.add_argument(
        "--torch-threads", type=int, default=None, help="CPU threads of both the server and the in-process baseline"
    )
    return p.parse_args(argv)


# -- fixture ----------------------------------------------------------------------------------------------------------


def build_fixture(
    work: Path, *, seed: int, image_size: int, model_size: int, epochs: int
) -> tuple[Path, Path, Path, str]:
    """Synthesize the tiny preset, train on its training experiments, onboard one held-out experiment.

    Returns:
        The run directory, the index folder, the data root and the held-out experiment.
    """
    from phenoprint.data.source import PngSource
    from phenoprint.data.synth import preset_config, synthesize
    from phenoprint.embedder.config import ModelConfig, TrainConfig
    from phenoprint.embedder.export import export_embeddings, select_wells
    from phenoprint.embedder.inference import load_model
    from phenoprint.embedder.train import train
    from phenoprint.index.config import IndexConfig
    from phenoprint.onboard import onboard_experiment

    data = work / "data"
    synthesize(preset_config("tiny", seed=seed, image_size=image_size), data, workers=1, progress=False)
    source = PngSource(data)
    meta = source.metadata
    held_out = sorted(meta.loc[meta.dataset == "test", "experiment"].unique())
    target = held_out[0]
    train_exps = tuple(sorted(set(meta.experiment) - set(held_out)))
    run = work / "run"
    if not (run / "run.json").is_file():
        config = TrainConfig(
            model=ModelConfig(backbone="resnet10t", embedding_dim=128, num_classes=int(meta.sirna_id.max()) + 1),
            image_size=model_size,
            epochs=epochs,
            batch_size=16,
            workers=0,
            device="cpu",
            holdout=tuple(held_out),
            checkpoint_every=10_000,
            seed=seed,
        )
        train(config, source, run, progress=False)
    model = load_model(run, "cpu")
    reference = work / "reference.parquet"
    export_embeddings(model, source, reference, wells=select_wells(meta, train_exps), progress=False)
    onboard_experiment(
        model,
        source,
        target,
        reference,
        work / "indexes" / target,
        IndexConfig(center="tvn", mode="centroid"),
        progress=False,
    )
    return run, work / "indexes", data, target


def load_queries(data: Path, experiment: str, n_wells: int) -> list[Query]:
    """The PNG bytes of ``n_wells`` wells of an experiment, named as in the release (``B02_s1_w1.png``)."""
    from phenoprint.data.layout import CHANNELS, detect_layout, read_metadata
    from phenoprint.embedder.data import well_table

    layout = detect_layout(data)
    wells = well_table(read_metadata(data))
    wells = wells[wells.experiment == experiment].head(n_wells)
    queries = []
    for w in wells.itertuples():
        files = []
        for site in w.sites:
            for ch in CHANNELS:
                path = layout.site_path(experiment, w.plate, w.well, site, ch)
                files.append((path.name, path.read_bytes()))
        queries.append(files)
    if not queries:
        raise SystemExit(f"no wells of {experiment} in {data}")
    return queries


# -- measurements -----------------------------------------------------------------------------------------------------


def summarize(seconds: list[float], wall: float | None = None) -> dict[str, Any]:
    ms = np.asarray(seconds) * 1000
    out = {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }
    if wall is not None:
        out["requests_per_s"] = round(len(ms) / wall, 2)
    return out


def in_process_classifier(run: Path, index_dir: Path) -> Callable[[Query], None]:
    """Decode + embed + centre + classify of one query in this process: what the service does, minus HTTP."""
    from phenoprint.api.settings import Settings
    from phenoprint.api.uploads import UploadedFile, read_well
    from phenoprint.embedder.inference import WellImages, load_model
    from phenoprint.embedder.record import EmbedderRecord
    from phenoprint.index.classify import classify
    from phenoprint.index.experiment import ExperimentIndex

    model = load_model(run, "cpu")
    index = ExperimentIndex.load(index_dir, model.fingerprint, model.embedding_dim)
    record = EmbedderRecord.read(index.manifest.get("producer"), index.producer_arrays)
    stats = record.channel_stats if model.config.normalization == "experiment" else None
    cell_type = index.cell_type if model.config.model.cell_type_context else None
    bn_state = None if record.bn_state is None else dict(record.bn_state)
    tta = int((index.manifest.get("producer") or {}).get("tta", 1))
    mode = Settings().classify_mode or "centroid"  # the service's default: each index's own mode

    def once(query: Query) -> None:
        well = read_well([UploadedFile(name, data) for name, data in query])
        vectors = model.embed_batch([WellImages(well.sites, cell_type, stats, bn_state, tta)])[0]
        classify(index.center(vectors.well[None, :]), index, k=5, mode=mode)

    return once


def paired_concurrency_1(
    in_process: Callable[[Query], None], base: str, queries: list[Query], experiment: str, n: int, offset: int
) -> tuple[list[float], list[float], float]:
    """``n`` queries each classified in-process and over HTTP, alternating which goes first, so that both meet the
    same background load; returns (in-process latencies, HTTP latencies, seconds spent in HTTP requests), the last
    giving the request rate of one client sending back to back."""
    local, remote, wall = [], [], 0.0
    with httpx.Client(base_url=base, timeout=120) as client:
        for i in range(offset, offset + n):
            query = queries[i % len(queries)]
            for first in (True, False) if i % 2 else (False, True):
                if first:
                    started = time.perf_counter()
                    in_process(query)
                    local.append(time.perf_counter() - started)
                else:
                    remote.append(post_classify(client, query, experiment))
                    wall += remote[-1]
    return local, remote, wall


def post_classify(client: httpx.Client, query: Query, experiment: str) -> float:
    files = [("files", (name, data, "image/png")) for name, data in query]
    started = time.perf_counter()
    r = client.post("/classify", files=files, data={"experiment": experiment})
    elapsed = time.perf_counter() - started
    if r.status_code != 200:
        raise RuntimeError(f"/classify answered {r.status_code}: {r.text[:300]}")
    return elapsed


def http_latencies(
    base: str, queries: list[Query], experiment: str, n: int, concurrency: int
) -> tuple[list[float], float]:
    """``n`` POST /classify requests from ``concurrency`` clients (one connection each); (latencies, wall seconds)."""
    per_worker = [list(range(w, n, concurrency)) for w in range(concurrency)]

    def worker(indices: list[int]) -> list[float]:
        with httpx.Client(base_url=base, timeout=120) as client:
            return [post_classify(client, queries[i % len(queries)], experiment) for i in indices]

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(worker, per_worker))
    wall = time.perf_counter() - started
    return [t for r in results for t in r], wall


def rss_mb(pid: int) -> float:
    """Resident set size of a process (Linux /proc)."""
    text = Path(f"/proc/{pid}/status").read_text()
    kb = int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return round(kb / 1024, 1)


def batch_counts(base: str) -> tuple[float, float]:
    """The server's (wells embedded, forward passes) so far, from /metrics."""
    text = httpx.get(f"{base}/metrics").text
    values = []
    for name in ("phenoprint_batch_wells_sum", "phenoprint_batch_wells_count"):
        m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        values.append(float(m.group(1)) if m else 0.0)
    return values[0], values[1]


def start_server(run: Path, indexes: Path, log_path: Path, torch_threads: int | None) -> tuple[subprocess.Popen, str]:
    """``phenoprint serve`` on a free localhost port, on the CPU; returns the process and its base URL."""
    from phenoprint.launch import free_port
    from phenoprint.launch import start_server as serve

    port = free_port()
    extra = ("--device", "cpu", "--log-level", "warning")
    if torch_threads is not None:
        extra += ("--torch-threads", str(torch_threads))
    try:
        proc = serve(run, indexes, port, log_path, extra, timeout_s=300)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from exc
    return proc, f"http://127.0.0.1:{port}"


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.model is not None:
        if args.indexes is None or args.data is None or args.experiment is None:
            raise SystemExit("--model needs --indexes, --data and --experiment")
        run, indexes, data, experiment = args.model, args.indexes, args.data, args.experiment
    else:
        log.info(
            "building the tiny preset at %d px, a %d px model and its index in %s",
            args.image_size,
            args.model_size,
            work,
        )
        started = time.perf_counter()
        run, indexes, data, experiment = build_fixture(
            work, seed=args.seed, image_size=args.image_size, model_size=args.model_size, epochs=args.epochs
        )
        log.info("fixture ready in %.0f s", time.perf_counter() - started)
        experiment = args.experiment or experiment
    queries = load_queries(data, experiment, args.wells)
    result: dict[str, Any] = {
        "benchmark": "bench_api",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "setup": {
            "experiment": experiment,
            "distinct_wells": len(queries),
            "files_per_request": len(queries[0]),
            "request_png_bytes": int(np.mean([sum(len(d) for _, d in q) for q in queries])),
            "image_size": args.image_size if args.model is None else None,
            "model_input_size": args.model_size if args.model is None else None,
            "device": "cpu",
            "torch_threads": args.torch_threads,
        },
    }
    in_process = in_process_classifier(run, indexes / experiment)
    for i in range(args.warmup):
        in_process(queries[i % len(queries)])
    proc, base = start_server(run, indexes, work / "serve.log", args.torch_threads)
    try:
        # warm up at both concurrency levels, so the allocator holds its pools for large batches before the reading
        http_latencies(base, queries, experiment, args.warmup, 1)
        http_latencies(base, queries, experiment, args.warmup, 8)
        rss_before = rss_mb(proc.pid)
        local: list[float] = []
        c1_times: list[float] = []
        c8_times: list[float] = []
        c1_wall = c8_wall = c8_wells = c8_batches = 0.0
        per_round = max(1, args.latency_requests // args.rounds)
        for r in range(args.rounds):  # alternate the levels, so a change in background load hits both
            log.info("round %d/%d: %d wells in-process and at concurrency 1, %d at concurrency 8", r + 1,
                     args.rounds, per_round, 2 * per_round)  # fmt: skip
            a, b, wall = paired_concurrency_1(in_process, base, queries, experiment, per_round, r * per_round)
            local += a
            c1_times += b
            c1_wall += wall
            wells_before, batches_before = batch_counts(base)
            times, wall = http_latencies(base, queries, experiment, 2 * per_round, 8)
            wells_after, batches_after = batch_counts(base)
            c8_times += times
            c8_wall += wall
            c8_wells += wells_after - wells_before
            c8_batches += batches_after - batches_before
        served = len(c1_times) + len(c8_times)
        inproc, c1, c8 = summarize(local), summarize(c1_times, c1_wall), summarize(c8_times, c8_wall)
        c8["forward_passes"] = int(c8_batches)
        c8["mean_wells_per_forward_pass"] = round(c8_wells / max(c8_batches, 1), 2)
        rest = max(0, args.rss_requests - served)
        log.info("%d more requests at concurrency 8 before the second RSS reading", rest)
        http_latencies(base, queries, experiment, rest, 8)
        served += rest
        rss_after = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    result["in_process"] = inproc
    overhead = c1["p50_ms"] / inproc["p50_ms"]
    tail = c8["p99_ms"] / c1["p50_ms"]
    growth = rss_after / rss_before - 1
    result.update(
        {
            "http_concurrency_1": c1,
            "http_concurrency_8": c8,
            "overhead_c1_p50": round(overhead, 3),
            "p99_c8_over_p50_c1": round(tail, 3),
            "throughput_gain_c8_over_c1": round(c8["requests_per_s"] / c1["requests_per_s"], 3),
            "rss": {
                "before_mb": rss_before,
                "after_mb": rss_after,
                "requests_between": served,
                "change": round(growth, 4),
            },
            "goals": {
                "overhead_c1_at_most_1.2x": overhead <= 1.2,
                "p99_c8_at_most_3x_p50_c1": tail <= 3,
                "rss_within_10_percent": abs(growth) <= 0.10,
            },
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log_file = args.out.with_suffix(".log")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(log_file, mode="w")],
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        result = run_benchmark(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_api-") as tmp:
            result = run_benchmark(args, Path(tmp))
    from phenoprint.atomic import write_json_atomic

    write_json_atomic(result, args.out)
    log.info("wrote %s:\n%s", args.out, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
