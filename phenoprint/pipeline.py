"""The main job end to end on synthetic RxRx1: generate, train, export, onboard held-out batches, evaluate, serve.

Each step writes its outputs atomically and is skipped when they are already complete, so a rerun (or a
run after an interruption) continues where the last one stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenoprint.atomic import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

CENTERINGS = ("none", "center", "tvn")
COMPLETE = ".complete"  # marks a folder whose files were all written


@dataclass(frozen=True)
class DemoConfig:
    """What `make demo` runs; every output lands under ``workdir``."""

    workdir: Path = Path("demo")  # everything the demo writes
    preset: str = "demo"  # synthetic preset (tiny for the smoke test)
    seed: int = 0  # seed of the data and of training
    backbone: str = "resnet10t"  # timm backbone, small enough for a CPU
    image_size: int = 64  # network input side; the demo data is 128 px
    epochs: int = 20  # passes over the training wells
    batch_size: int = 32  # wells per batch, each batch from one experiment
    lr: float = 3e-3  # peak AdamW learning rate
    embedding_dim: int = 128  # width of the exported vectors
    head: str = "arcface"  # margin head
    margin: float = 0.2  # margin of arcface / cosface heads
    scale: float = 16.0  # logit scale (learned start value for the cosine head)
    normalization: str = "experiment"  # input standardization: per experiment (keeps intensity phenotypes)
    bn_adapt: bool = True  # per-experiment batch-norm statistics at embedding time
    tta: int = 8  # dihedral transforms averaged at embedding time (exports, onboarding, the service)
    onboard_center: str = "tvn"  # centering of the indexes the service uses
    workers: int = 2  # processes for data generation and loading
    serve: bool = True  # keep serving the API after the demo query, until Ctrl-C
    port: int = 8000  # API port; a free one when it is taken (0: always a free one)
    max_steps: int | None = None  # cap on training steps (smoke runs)
    progress: bool = True  # progress bars


@dataclass
class DemoResult:
    """What a demo run produced (paths and the printed evaluation)."""

    paths: dict[str, Path] = field(default_factory=dict)
    table: pd.DataFrame | None = None
    answer: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def _step(result: DemoResult, name: str, fn: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    print(f"\n== {name}", flush=True)
    out = fn()
    result.seconds[name] = round(time.perf_counter() - started, 1)
    return out


def generate(config: DemoConfig, oracle: bool) -> Path:
    """The synthetic data root (or its no-batch-effects twin); reused when complete."""
    from phenoprint.data.synth import SYNTH_RECORD, preset_config, synthesize

    root = config.workdir / ("data-oracle" if oracle else "data")
    if (root / SYNTH_RECORD).is_file():
        print(f"reusing {root}")
        return root
    synth = preset_config(config.preset, seed=config.seed, batch_effects=not oracle)
    synthesize(synth, root, workers=config.workers, progress=config.progress)
    return root


def previews(config: DemoConfig, root: Path, oracle_root: Path) -> Path:
    """RGB composites (the RxRx1 colour map) of a few sites, with and without batch effects; reused when present."""
    from phenoprint.data.rgb import write_previews

    out = config.workdir / "previews"
    if not (out / COMPLETE).is_file():
        for experiment in sorted(p.name for p in (root / "images").iterdir())[:4]:  # the first sites of four
            write_previews(root, out, experiments=[experiment], limit=2)
            write_previews(oracle_root, out / "oracle", experiments=[experiment], limit=2)
        write_json_atomic({"experiments": 4, "sites_each": 2}, out / COMPLETE)
    print(f"RGB previews of a few sites in {out} (and of the same sites without batch effects in {out / 'oracle'})")
    return out


def pack_root(config: DemoConfig, root: Path) -> Path:
    """A pack of a data root (reused when complete)."""
    from phenoprint.data.pack import MANIFEST, pack

    out = root.with_name(root.name + ".pack")
    if (out / MANIFEST).is_file():
        print(f"reusing {out}")
        return out
    pack(root, out, workers=config.workers, progress=config.progress)
    return out


def holdout_experiments(root: Path) -> tuple[str, ...]:
    """The experiments the synthetic release marks as test: held out of training, onboarded as new batches."""
    from phenoprint.data.layout import read_metadata

    meta = read_metadata(root)
    return tuple(sorted(meta.loc[meta.dataset == "test", "experiment"].unique()))


def train_model(config: DemoConfig, root: Path, pack: Path, holdout: tuple[str, ...]) -> Path:
    """Train the embedder on the non-held-out experiments (reused when the run is finished)."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.checkpoint import RUN_FILE
    from phenoprint.embedder.config import ModelConfig, TrainConfig
    from phenoprint.embedder.train import train

    run = config.workdir / "run"
    if (run / RUN_FILE).is_file():
        print(f"reusing {run}")
        return run
    source = open_source(root, pack)
    n_classes = int(source.metadata.sirna_id.max()) + 1
    train_config = TrainConfig(
        model=ModelConfig(
            backbone=config.backbone,
            embedding_dim=config.embedding_dim,
            num_classes=n_classes,
            head=config.head,  # type: ignore[arg-type]
            margin=config.margin,
            scale=config.scale,
        ),
        image_size=config.image_size,
        normalization=config.normalization,  # type: ignore[arg-type]
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        warmup_steps=20,
        holdout=holdout,
        val_every=config.epochs,
        workers=0,
        device="auto",
        seed=config.seed,
        max_steps=config.max_steps,
        checkpoint_every=200,
        data_root=str(root),
        pack=str(pack),
    )
    has_checkpoint = (run / "checkpoints" / "latest.json").is_file()
    train(train_config, source, run, resume=has_checkpoint, progress=config.progress)
    return run


def export_reference(config: DemoConfig, run: Path, root: Path, pack: Path, holdout: tuple[str, ...]) -> Path:
    """Embeddings of the training experiments: the reference every new batch is indexed against."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.export import export_embeddings, select_wells
    from phenoprint.embedder.inference import load_model

    out = config.workdir / "embeddings" / "reference.parquet"
    model = load_model(run)
    if _table_of(out, model.fingerprint, config.tta, config.bn_adapt):
        print(f"reusing {out}")
        return out
    source = open_source(root, pack)
    trained = sorted(set(source.metadata.experiment) - set(holdout))
    wells = select_wells(source.metadata, tuple(trained))
    export_embeddings(
        model, source, out, wells=wells, tta=config.tta, bn_adapt=config.bn_adapt, progress=config.progress
    )
    return out


def _table_of(path: Path, fingerprint: str, tta: int | None = None, bn_adapt: bool | None = None) -> bool:
    """Whether ``path`` is an embedding table of this model, embedded this way (so a rerun can reuse it)."""
    if not path.is_file():
        return False
    import pyarrow.parquet as pq

    from phenoprint.index.table import PARQUET_META_KEY

    meta = pq.read_schema(path).metadata or {}
    info = json.loads(meta.get(PARQUET_META_KEY, b"{}"))
    wanted = {"fingerprint": fingerprint, "tta": tta, "bn_adapt": bn_adapt}
    return all(info.get(k) == v for k, v in wanted.items() if v is not None)


def new_batch_root(config: DemoConfig, root: Path, experiment: str) -> Path:
    """A data root of one held-out experiment whose metadata labels only its control wells (as a new batch's)."""
    batch = config.workdir / "batches" / experiment
    if (batch / "metadata.csv").is_file():
        return batch
    batch.mkdir(parents=True, exist_ok=True)
    images = batch / "images"
    if not images.exists():
        images.symlink_to((root / "images").resolve(), target_is_directory=True)
    meta = pd.read_csv(root / "metadata.csv")
    meta = meta[meta.experiment == experiment].copy()
    meta.loc[meta.well_type == "treatment", ["sirna", "sirna_id"]] = [None, None]
    write_json_atomic({"from": str(root), "experiment": experiment}, batch / "batch.json")
    with atomic_path(batch / "metadata.csv") as tmp:  # its presence marks the batch root complete
        meta.to_csv(tmp, index=False)
    return batch


def onboard(config: DemoConfig, run: Path, root: Path, reference: Path, holdout: tuple[str, ...]) -> dict[str, Path]:
    """Run scripts/build_index.py's job for each held-out experiment from its controls only."""
    from phenoprint.embedder.commands import add_build_index_arguments, run_build_index
    from phenoprint.embedder.inference import load_model

    fingerprint = load_model(run).fingerprint
    queries = {}
    for exp in holdout:
        index_dir = config.workdir / "indexes" / exp
        query_path = config.workdir / "embeddings" / f"{exp}.parquet"
        queries[exp] = query_path
        manifest = index_dir / "manifest.json"
        built = manifest.is_file() and json.loads(manifest.read_text()).get("fingerprint") == fingerprint
        if built and _table_of(query_path, fingerprint, config.tta, config.bn_adapt):
            print(f"reusing {index_dir}")
            continue
        batch = new_batch_root(config, root, exp)
        argv = [
            "--model",
            str(run),
            "--data",
            str(batch),
            "--experiment",
            exp,
            "--out",
            str(index_dir),
            "--reference",
            str(reference),
            "--center",
            config.onboard_center,
            "--queries-out",
            str(query_path),
            "--tta",
            str(config.tta),
            "--workers",
            "0",
        ]
        if config.bn_adapt:
            argv.append("--bn-adapt")
        import argparse

        parser = argparse.ArgumentParser(allow_abbrev=False)
        add_build_index_arguments(parser)
        print(f"scripts/build_index.py {' '.join(argv)}")
        run_build_index(parser.parse_args(argv))
    return queries


def labelled_table(root: Path, tables: list[Path]):
    """Concatenate embedding tables and restore every well's true label from the full metadata (for scoring)."""
    from phenoprint.data.layout import read_metadata, wells_of
    from phenoprint.index.table import EmbeddingTable, read_embeddings

    parts = [read_embeddings(p) for p in tables]
    meta = pd.concat([p.meta for p in parts], ignore_index=True)
    truth = wells_of(read_metadata(root)).set_index(["experiment", "plate", "well"])["sirna_id"]
    keys = pd.MultiIndex.from_frame(meta[["Metadata_experiment", "Metadata_plate", "Metadata_well"]])
    meta["Metadata_sirna_id"] = truth.reindex(keys).to_numpy()
    return EmbeddingTable(
        meta, np.concatenate([p.features for p in parts]), parts[0].feature_names, parts[0].fingerprint
    )


def evaluate_all(config: DemoConfig, table, oracle_table, holdout: tuple[str, ...]) -> pd.DataFrame:
    """Top-1 / top-5 of the held-out treatment wells for each centering, with and without plate assignment."""
    from phenoprint.index.build import IndexConfig
    from phenoprint.index.evaluate import EvalConfig, evaluate

    rows = []
    for name, tab in (("batch effects", table), ("oracle twin", oracle_table)):
        for center in CENTERINGS:
            cfg = EvalConfig(
                index=IndexConfig(center=center),
                holdout=holdout,
                modes=("knn", "centroid"),
                assign=True,
                replicate_map=False,
                silhouette=center == "none",
            )
            report = evaluate(tab, cfg)
            o = report.overall
            rows.append(
                {
                    "data": name,
                    "centering": center,
                    "knn top-1": o["knn_top1"],
                    "knn top-5": o["knn_top5"],
                    "knn top-1 + plate assignment": o["knn_assigned_top1"],
                    "centroid top-1": o["centroid_top1"],
                    "centroid top-1 + plate assignment": o["centroid_assigned_top1"],
                }
            )
    return pd.DataFrame(rows)


def embed_oracle(config: DemoConfig, run: Path, root: Path, pack: Path) -> Path:
    """The no-batch-effects twin embedded by the same model (same wells and biology, no batch effects)."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.export import export_embeddings
    from phenoprint.embedder.inference import load_model

    out = config.workdir / "embeddings" / "oracle.parquet"
    model = load_model(run)
    if _table_of(out, model.fingerprint, config.tta, config.bn_adapt):
        print(f"reusing {out}")
        return out
    export_embeddings(
        model, open_source(root, pack), out, tta=config.tta, bn_adapt=config.bn_adapt, progress=config.progress
    )
    return out


def port_is_free(port: int) -> bool:
    """Whether a TCP port can be bound on localhost right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    run: Path,
    indexes: Path,
    port: int,
    log_path: Path,
    extra_args: tuple[str, ...] = (),
    timeout_s: float = 120.0,
    echo: bool = True,
) -> subprocess.Popen:
    """``phenoprint serve`` (with ``extra_args``) in a child process; returns once /readyz answers 200.

    Raises:
        RuntimeError: the server exits or is not ready within ``timeout_s`` (its log says why).
    """
    import httpx

    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "phenoprint",
        "serve",
        "--model",
        str(run),
        "--indexes",
        str(indexes),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra_args,
    ]
    if echo:
        print(" ".join(["phenoprint", *cmd[3:]]))
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API server exited with status {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"the API server was not ready within {timeout_s:.0f} s; see {log_path}")


def classify_over_http(port: int, root: Path, experiment: str, seed: int = 0) -> dict[str, Any]:
    """POST one held-out treatment well's PNGs to /classify; return the answer with the truth beside it."""
    import httpx

    from phenoprint.data.layout import detect_layout, read_metadata

    meta = read_metadata(root)
    wells = meta[(meta.experiment == experiment) & (meta.well_type == "treatment")]
    row = wells.iloc[int(np.random.default_rng(seed).integers(len(wells)))]
    layout = detect_layout(root)
    files = []
    for site in sorted(
        meta[(meta.experiment == experiment) & (meta.well == row.well) & (meta.plate == row.plate)].site
    ):
        for ch in range(1, 7):
            path = layout.site_path(experiment, row.plate, row.well, site, ch)
            files.append(("files", (path.name, path.read_bytes(), "image/png")))
    data = {"experiment": experiment, "plate": str(row.plate), "well": row.well, "top_k": "5"}
    response = httpx.post(f"http://127.0.0.1:{port}/classify", data=data, files=files, timeout=60.0)
    response.raise_for_status()
    answer = response.json()
    answer["truth"] = {
        "experiment": experiment,
        "plate": int(row.plate),
        "well": row.well,
        "sirna_id": int(row.sirna_id),
    }
    answer["curl"] = f"curl -s http://127.0.0.1:{port}/classify -F experiment={experiment} " + " ".join(
        f"-F files=@{layout.site_path(experiment, row.plate, row.well, name[1], name[2])}"
        for name in _site_channels(files)
    )
    return answer


def _site_channels(files: list[tuple[str, tuple[str, bytes, str]]]) -> list[tuple[str, int, int]]:
    from phenoprint.data.layout import parse_image_name

    return [parse_image_name(name) for _, (name, _, _) in files]


def run_demo(config: DemoConfig) -> DemoResult:
    """Generate → train → export → onboard each held-out experiment → evaluate → serve and query (see module doc)."""
    result = DemoResult()
    config.workdir.mkdir(parents=True, exist_ok=True)
    root = _step(result, f"1/7 generate the synthetic '{config.preset}' preset", lambda: generate(config, False))
    oracle_root = _step(result, "2/7 generate its no-batch-effects twin (the oracle)", lambda: generate(config, True))
    previews(config, root, oracle_root)
    pack = pack_root(config, root)
    oracle_pack = pack_root(config, oracle_root)
    holdout = holdout_experiments(root)
    print(f"held out (onboarded later as new batches): {', '.join(holdout)}")
    run = _step(result, "3/7 train the embedder", lambda: train_model(config, root, pack, holdout))
    reference = _step(
        result,
        "4/7 export embeddings of the training experiments",
        lambda: export_reference(config, run, root, pack, holdout),
    )
    queries = _step(
        result,
        "5/7 onboard each held-out experiment from its controls (scripts/build_index.py)",
        lambda: onboard(config, run, root, reference, holdout),
    )

    def _evaluate() -> pd.DataFrame:
        from phenoprint.index.plots import plots

        table = labelled_table(root, [reference, *queries.values()])
        oracle = labelled_table(oracle_root, [embed_oracle(config, run, oracle_root, oracle_pack)])
        frame = evaluate_all(config, table, oracle, holdout)
        from phenoprint.index.build import IndexConfig

        written = plots(table, IndexConfig(center=config.onboard_center), config.workdir / "plots")
        with atomic_path(config.workdir / "evaluation.csv") as tmp:
            frame.to_csv(tmp, index=False)
        print(format_table(frame, len(holdout)))
        for p in written:
            print(f"wrote {p}")
        return frame

    result.table = _step(result, "6/7 evaluate the held-out experiments (leave-experiment-out)", _evaluate)

    def _serve() -> dict[str, Any]:
        port = config.port if config.port and port_is_free(config.port) else free_port()
        proc = start_server(run, config.workdir / "indexes", port, config.workdir / "serve.log")
        try:
            answer = classify_over_http(port, root, holdout[0], seed=config.seed)
            print_answer(answer)
            if config.serve:
                print(f"\nserving on http://127.0.0.1:{port} (OpenAPI docs at /docs); Ctrl-C to stop")
                _wait_for_interrupt(proc)
        finally:
            _stop(proc)
        return answer

    result.answer = _step(result, "7/7 serve the API and classify one held-out well over HTTP", _serve)
    result.paths = {
        "data": root,
        "oracle": oracle_root,
        "run": run,
        "reference": reference,
        "indexes": config.workdir / "indexes",
    }
    write_json_atomic({"seconds": result.seconds, "answer": result.answer}, config.workdir / "demo.json")
    print(f"\nstep times (s): {json.dumps(result.seconds)}")
    return result


def format_table(frame: pd.DataFrame, n_holdout: int) -> str:
    """The evaluation as a fixed-width text table."""
    head = (
        f"held-out treatment wells of {n_holdout} experiments, onboarded from their controls only; "
        "index = own controls + training experiments of the same cell type"
    )
    return head + "\n" + frame.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def print_answer(answer: dict[str, Any]) -> None:
    """The /classify answer next to the truth."""
    truth = answer["truth"]
    preds = answer["predictions"]
    where = f"{truth['experiment']} plate {truth['plate']} {truth['well']}"
    print(f"queried {where} over HTTP; true siRNA {truth['sirna_id']}")
    for p in preds:
        mark = "  <- truth" if p["sirna_id"] == truth["sirna_id"] else ""
        print(f"  rank {p['rank']}: siRNA {p['sirna_id']:>5}  score {p['score']:.3f}{mark}")
    print(f"  unknown: {answer['unknown']}   timings (ms): {answer.get('timings')}")


def _wait_for_interrupt(proc: subprocess.Popen) -> None:
    try:
        while proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping the server")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def env_flag(name: str, default: bool) -> bool:
    """A boolean from the environment (``0``/``false``/``no`` are false)."""
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() not in ("0", "false", "no", "")


def clean(workdir: Path) -> None:
    """Remove everything a demo wrote."""
    shutil.rmtree(workdir, ignore_errors=True)
