#!/usr/bin/env python
"""Write BENCHMARKS.md from the JSON files of ``benchmarks/results/`` (``make bench`` runs it last).

Each benchmark's headline figures are set beside the baseline and the limit that the same run measured,
with the ratio and the goal of the issue that asked for it. Nothing is typed in by hand: a figure missing
from a result file is shown as "—".
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from phenoprint.atomic import atomic_path
from phenoprint.cli import ArgumentParser


@dataclass(frozen=True)
class Row:
    """One figure of a benchmark, next to what it is compared with in the same run."""

    figure: str
    value: Any
    compared_with: str = ""
    other: Any = None
    ratio: Any = None
    goal: str = ""


def get(data: dict, dotted: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``; None when a key is missing."""
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def ratio(a: Any, b: Any) -> float | None:
    return None if a is None or not b else round(float(a) / float(b), 2)


def data_rows(d: dict) -> list[Row]:
    gens = {(g.get("preset"), g.get("batch_effects", True)): g for g in d.get("generator", [])}
    demo, full = gens.get(("demo", True), {}), gens.get(("full", True), {})
    rows = [
        Row("synth demo preset, sites/s", demo.get("sites_per_s"), "workers", demo.get("workers")),
        Row("synth full preset (512 px), sites/s per core", full.get("sites_per_s_per_core")),
    ]
    for name in ("demo", "real_sample"):
        r = get(d, f"reads.{name}") or {}
        rows.append(
            Row(
                f"read {name} sites from the pack, sites/s",
                r.get("pack_sites_per_s"),
                "PNG decoding (PIL)",
                r.get("png_sites_per_s"),
                r.get("speedup"),
            )
        )
    dom = get(d, "batch_dominance_demo") or {}
    rows.append(
        Row(
            "1-NN names the experiment of a site (batch dominance)",
            get(dom, "with_batch_effects.accuracy"),
            "same sites without batch effects",
            get(dom, "without_batch_effects.accuracy"),
            ratio(get(dom, "with_batch_effects.accuracy"), get(dom, "without_batch_effects.accuracy")),
            f"clusters by experiment (chance {get(dom, 'with_batch_effects.chance')})",
        )
    )
    rows.append(
        Row(
            "worst per-channel mean/std ratio, synthetic vs real sample",
            get(d, "realism_demo.worst_ratio"),
            goal="within 2x",
        )
    )
    return rows


def index_rows(d: dict) -> list[Row]:
    acc = d.get("accuracy") or {}
    rows = []
    for method in ("center", "center_scale", "tvn"):
        for mode in ("knn_top1", "centroid_top1", "centroid_assigned_top1"):
            rows.append(
                Row(
                    f"held-out top-1, {method}, {mode.replace('_top1', '').replace('_', ' + ')}",
                    get(acc, f"{method}.overall.{mode}"),
                    "no centering",
                    get(acc, f"none.overall.{mode}"),
                    ratio(get(acc, f"{method}.overall.{mode}"), get(acc, f"none.overall.{mode}")),
                )
            )
    lat = d.get("latency") or {}
    rows += [
        Row(
            "exact kNN (faiss flat), one query, p50 ms",
            get(lat, "faiss_flat.single.p50_ms"),
            "numpy brute force",
            get(lat, "numpy_bruteforce.single.p50_ms"),
            ratio(get(lat, "numpy_bruteforce.single.p50_ms"), get(lat, "faiss_flat.single.p50_ms")),
            f"≤ {lat.get('goal_single_query_ms')} ms",
        ),
        Row(
            "exact kNN, a plate's queries batched, ms per query",
            get(lat, "faiss_flat.batch_plate_ms_per_query"),
            "numpy brute force",
            get(lat, "numpy_bruteforce.batch_plate_ms_per_query"),
            ratio(
                get(lat, "numpy_bruteforce.batch_plate_ms_per_query"), get(lat, "faiss_flat.batch_plate_ms_per_query")
            ),
        ),
        Row(
            "centroid classify, one query, p50 ms",
            get(lat, "classify_centroid_k5.single.p50_ms"),
            "speed-up vs numpy",
            None,
            get(lat, "classify_centroid_k5.speedup_vs_numpy.single_p50"),
        ),
        Row(
            "index build, worst median s per experiment",
            get(d, "build.worst_median_seconds"),
            goal=f"≤ {get(d, 'build.goal_seconds')} s",
        ),
    ]
    return rows


def embedder_rows(d: dict) -> list[Row]:
    h = d.get("headline") or {}
    goals = h.get("goals") or {}
    c = h.get("centroid") or {}
    return [
        Row(
            "held-out kNN top-1 (demo recipe, centred)",
            h.get("centred"),
            "uncentred",
            h.get("uncentred"),
            h.get("ratio_centred_to_uncentred"),
            f"≥ {goals.get('centred/uncentred')}x",
        ),
        Row(
            "",
            h.get("centred"),
            "hand-crafted profile, same index",
            h.get("handcrafted_same_index"),
            h.get("ratio_centred_to_handcrafted"),
            f"≥ {goals.get('centred/handcrafted')}x",
        ),
        Row(
            "",
            h.get("centred"),
            "oracle (same recipe, no batch effects)",
            h.get("oracle_same_recipe"),
            h.get("ratio_centred_to_oracle"),
            f"≥ {goals.get('centred/oracle')}x",
        ),
        Row(
            "held-out centroid top-1 (centred)",
            c.get("centred"),
            "uncentred",
            c.get("uncentred"),
            ratio(c.get("centred"), c.get("uncentred")),
        ),
        Row(
            "",
            c.get("centred"),
            "hand-crafted profile, same index",
            c.get("handcrafted_same_index"),
            ratio(c.get("centred"), c.get("handcrafted_same_index")),
        ),
        Row(
            "",
            c.get("centred"),
            "oracle",
            c.get("oracle_same_recipe"),
            ratio(c.get("centred"), c.get("oracle_same_recipe")),
        ),
        Row(
            "CPU embedding, wells/s (pack → network)",
            get(d, "throughput.pipeline_wells_per_s"),
            "network alone",
            get(d, "throughput.model_only_wells_per_s"),
            h.get("ratio_pipeline_to_model_only"),
            f"≥ {goals.get('pipeline/model')}x",
        ),
        Row("chance top-1", d.get("chance_top1")),
    ]


def api_rows(d: dict) -> list[Row]:
    return [
        Row(
            "POST /classify p50 ms, concurrency 1",
            get(d, "http_concurrency_1.p50_ms"),
            "in-process embed + search",
            get(d, "in_process.p50_ms"),
            d.get("overhead_c1_p50"),
            "≤ 1.2x",
        ),
        Row(
            "POST /classify p99 ms, concurrency 8",
            get(d, "http_concurrency_8.p99_ms"),
            "p50 at concurrency 1",
            get(d, "http_concurrency_1.p50_ms"),
            d.get("p99_c8_over_p50_c1"),
            "≤ 3x",
        ),
        Row(
            "requests/s, concurrency 8",
            get(d, "http_concurrency_8.requests_per_s"),
            "concurrency 1",
            get(d, "http_concurrency_1.requests_per_s"),
            d.get("throughput_gain_c8_over_c1"),
        ),
        Row(
            "server RSS MB after 2,000 more requests",
            get(d, "rss.after_mb"),
            "before",
            get(d, "rss.before_mb"),
            ratio(get(d, "rss.after_mb"), get(d, "rss.before_mb")),
            "within 10%",
        ),
    ]


def gpu_rows(d: dict) -> list[Row]:
    if "skipped" in d:
        return [Row("skipped", d["skipped"])]
    if "configs" not in d:
        return gpu_rows_before_issue_18(d)
    goal = "≥ 0.9x"
    rows = []
    for key, r in d["configs"].items():
        h = r.get("headline") or {}
        limit = h.get("limit_train_images_per_s")
        mode = "compiled" if h.get("limit_compiled") else "eager"
        for figure, value, by, goal_of in (
            ("training images/s from the pack", h.get("train_pack_images_per_s"), h.get("train_pack_over_limit"), goal),
            ("training images/s from PNGs", get(r, "train_from_png.images_per_s"), h.get("train_png_over_limit"), ""),
            (
                "training images/s from the pack, loader-side preprocessing (before)",
                get(r, "train_from_pack_loader_path.images_per_s"),
                h.get("train_pack_loader_path_over_limit"),
                "",
            ),
        ):
            rows.append(Row(f"{key}: {figure}", value, f"model-only step ({mode})", limit, by, goal_of))
        rows.append(
            Row(
                f"{key}: GPU utilization training from the pack, mean %",
                h.get("gpu_utilization_training_pack_mean_pct"),
                goal="≥ 85%",
            )
        )
        rows.append(Row(f"{key}: peak GPU memory GiB, training", h.get("peak_gpu_memory_gib_training")))
        forward = "forward pass alone" + (" (compiled)" if h.get("embed_compiled") else "")
        for tta in (1, 8):
            rows.append(
                Row(
                    f"{key}: embedding sites/s from the pack, TTA {tta}",
                    h.get(f"embed_tta{tta}_sites_per_s"),
                    forward,
                    h.get(f"forward_tta{tta}_sites_per_s"),
                    h.get(f"embed_tta{tta}_over_forward"),
                    goal,
                )
            )
        for path, label in (("device_path", "uint8 to the device"), ("loader_path", "loader-side float work")):
            rows.append(
                Row(
                    f"{key}: loader CPU ms per training sample (pack), {label}",
                    get(r, f"loader_cpu.pack.{path}.train_ms_per_sample"),
                )
            )
    return rows


def gpu_rows_before_issue_18(d: dict) -> list[Row]:
    """The first bench_gpu format (one backbone, loader-side preprocessing)."""
    return [
        Row(
            "training images/s from PNGs (mean over timed steps)",
            get(d, "train_from_png.images_per_s"),
            "model-only step (batch on the GPU)",
            get(d, "train_model_only.images_per_s"),
            get(d, "train_from_png.ratio_to_model_only"),
        ),
        Row(
            "training images/s from the pack",
            get(d, "train_from_pack.images_per_s"),
            "model-only step",
            get(d, "train_model_only.images_per_s"),
            get(d, "train_from_pack.ratio_to_model_only"),
        ),
        Row(
            "training images/s at the median step, pack",
            get(d, "train_from_pack.images_per_s_at_median_step"),
            "model-only step",
            get(d, "train_model_only.images_per_s"),
            ratio(get(d, "train_from_pack.images_per_s_at_median_step"), get(d, "train_model_only.images_per_s")),
        ),
        Row("peak GPU memory GiB", get(d, "train_from_pack.peak_gpu_memory_gib")),
        Row("GPU utilization while training from the pack, mean %", get(d, "train_from_pack.gpu_utilization.mean_pct")),
        Row(
            "embedding sites/s from the pack",
            get(d, "embed_from_pack.pipeline_sites_per_s"),
            "forward pass alone",
            get(d, "embed_from_pack.model_only_sites_per_s"),
            get(d, "embed_from_pack.ratio_pipeline_to_model"),
        ),
    ]


#: The command that measures the GPU table (issue 18), quoted where a result file predates it.
GPU_COMMAND = "python scripts/bench_gpu.py --device cuda --out benchmarks/results/bench_gpu.json"


def gpu_note(d: dict) -> str | None:
    """What a reader must know before reading the GPU table: a result of the code before issue 18 is not the
    table of today's code, which stays pending until a GPU run of ``GPU_COMMAND``."""
    if "configs" in d and d.get("complete"):
        return None
    if "configs" in d:
        return f"This run stopped before its last section; rerun `{GPU_COMMAND}` for the whole table."
    return (
        "**The GPU table of the current code is pending a GPU measurement.** The figures below were measured on "
        f"{str(d.get('date', ''))[:10]} "
        "with the code before issue 18 (loader workers standardized, cropped and jittered float32 "
        "sites and shipped them over the bus). Since then CUDA training and embedding move uint8 sites and "
        "preprocess them on the GPU; the new table (densenet121 at 512 px and resnet50 at 256 px: training from the "
        "pack and from PNGs against the model-only step, eager and torch.compile'd; embedding with TTA 1 and 8 "
        "against the forward pass alone; GPU utilization; peak memory; loader CPU time per sample) comes from one "
        f"run of `{GPU_COMMAND}` on a CUDA machine, which this project's development machines do not have."
    )


NOTES: dict[str, Callable[[dict], str | None]] = {"bench_gpu": gpu_note}  # bench_profiles' is added below


def predict_rows(d: dict) -> list[Row]:
    t = d.get("timing") or {}
    rows = [
        Row(
            f"predict one full-size experiment ({t.get('wells')} wells, {t.get('classes')} classes), s",
            t.get("predict_seconds"),
            "per-well top-k alone, s",
            t.get("per_well_seconds"),
            ratio(t.get("predict_seconds"), t.get("per_well_seconds")),
            "≤ 2 s",
        )
    ]
    for name in ("accuracy", "oracle"):
        a = d.get(name) or {}
        if not a:
            continue
        what = "demo" if name == "accuracy" else "oracle twin"
        auto = get(a, "auto.auto_assigned_top1")
        for center in ("none", "center", "center_scale", "tvn"):
            best = max(
                (v for v in (get(a, f"{center}.knn_assigned_top1"), get(a, f"{center}.centroid_assigned_top1")) if v),
                default=None,
            )
            rows.append(Row(f"{what}: {center}, top-1 with plate assignment (best mode)", best))
        rows.append(
            Row(
                f"{what}: auto, top-1 with plate assignment",
                auto,
                "best fixed centering",
                a.get("best_fixed_assigned_top1"),
                ratio(auto, a.get("best_fixed_assigned_top1")),
                "≥ best fixed − 0.01",
            )
        )
    auto, oracle = get(d, "accuracy.auto.auto_assigned_top1"), get(d, "oracle.best_fixed_assigned_top1")
    if auto is not None and oracle is not None:
        rows.append(
            Row("demo auto vs the oracle twin's best", auto, "oracle best", oracle, ratio(auto, oracle), "≥ 0.97×")
        )
    return rows


def profiles_rows(d: dict) -> list[Row]:
    rows = []
    for task, r in (d.get("tasks") or {}).items():
        rows.append(
            Row(
                f"{task}: auto top-1",
                r.get("auto"),
                f"best pycytominer ({r.get('best_pycytominer')})",
                r.get("best_pycytominer_top1"),
                ratio(r.get("auto"), r.get("best_pycytominer_top1")),
                "≥ best pycytominer",
            )
        )
    return rows


PROFILES_COMMAND = "python scripts/bench_profiles.py --out benchmarks/results/bench_profiles.json"


def profiles_note(d: dict) -> str | None:
    """The side-by-side table of every task (real CellProfiler profiles, not synthetic data)."""
    tasks = d.get("tasks") or {}
    if not tasks:
        return None
    base_names = list(next(iter(tasks.values())).get("baselines", {}))
    head = ["task", "queries", *base_names, "best phenoprint fixed", "auto", "auto − best pycytominer (paired SE)"]
    lines = [
        f"Real CellProfiler well profiles of `../shared/profiles` (pycytominer {d.get('pycytominer')}), top-1 of the "
        f"held-out group's labelled treatment wells, from one run of `{PROFILES_COMMAND}`:",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for what, why in (d.get("reruns") or {}).items():
        lines.insert(1, f"(The {what}: {why}.)")
    for task, r in tasks.items():
        bases = [
            _fmt(r["baselines"].get(n)) if not isinstance(r["baselines"].get(n), str) else "refused" for n in base_names
        ]
        fixed = f"{_fmt(r.get('best_phenoprint_fixed_top1'))} ({r.get('best_phenoprint_fixed')})"
        lead, se = r.get("auto_minus_best_pycytominer"), r.get("auto_minus_best_pycytominer_se")
        diff = "-" if lead is None else f"{lead:+.3f}" + ("" if se is None else f" ({se:.3f})")
        lines.append("| " + " | ".join([task, str(r.get("queries")), *bases, fixed, _fmt(r.get("auto")), diff]) + " |")
    return "\n".join(lines)


EXTRACTORS: dict[str, Callable[[dict], list[Row]]] = {
    "bench_profiles": profiles_rows,
    "bench_data": data_rows,
    "bench_index": index_rows,
    "bench_embedder": embedder_rows,
    "bench_api": api_rows,
    "bench_gpu": gpu_rows,
    "bench_predict": predict_rows,
}


NOTES["bench_profiles"] = profiles_note


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _when_where(d: dict) -> str:
    date = d.get("date") or get(d, "environment.date") or ""
    m = d.get("machine") or d.get("environment") or {}
    parts = [str(date)]
    for key in ("gpu", "device", "cpus", "cpu_count", "platform", "torch", "python"):
        if key in m:
            parts.append(f"{key} {m[key]}")
    return ", ".join(p for p in parts if p)


def render(results: dict[str, dict]) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `scripts/write_benchmarks.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from "
        "`benchmarks/results/*.json` (`make bench`). Each figure sits beside the baseline or limit measured in "
        "the same run; the goal column is the issue's. All accuracy figures are on phenoprint's synthetic RxRx1, "
        "except bench_profiles' (real CellProfiler profiles).",
        "",
    ]
    for name, data in results.items():
        lines += [f"## {name}", "", f"Run: {_when_where(data)}.", ""]
        note = NOTES[name](data) if name in NOTES else None
        if note:
            lines += [note, ""]
        extractor = EXTRACTORS.get(name)
        if extractor is None:
            lines += ["(no summary for this benchmark; see its JSON)", ""]
            continue
        lines += ["| figure | measured | compared with | that | ratio | goal |", "|---|---|---|---|---|---|"]
        for r in extractor(data):
            lines.append(
                f"| {r.figure} | {_fmt(r.value)} | {r.compared_with} | {_fmt(r.other)} | {_fmt(r.ratio)} | {r.goal} |"
            )
        lines += ["", f"Full results: `benchmarks/results/{name}.json`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"), help="folder of bench_*.json files")
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="the Markdown file to write")
    args = p.parse_args(argv)
    files = sorted(args.results.glob("bench_*.json"))
    if not files:
        print(f"no bench_*.json in {args.results}: run `make bench` first", file=sys.stderr)
        return 2
    results = {f.stem: json.loads(f.read_text()) for f in files}
    with atomic_path(args.out) as tmp:
        tmp.write_text(render(results))
    print(f"wrote {args.out} from {len(files)} result files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
