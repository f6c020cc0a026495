"""The main job end to end on synthetic RxRx1: generate, train, export, onboard held-out batches, evaluate, serve.

Each step writes its outputs atomically and is skipped when they are already complete, so a rerun (or a
run after an interruption) continues where the last one stopped.

Kept as one module although long: its functions are the steps of one chain that share ``DemoConfig`` and the
reuse checks, and tests, scripts and the README import them from here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from phenoprint.atomic import atomic_path, write_json_atomic
from phenoprint.index.centering import CenterMethod
from phenoprint.index.config import CenterChoice

if TYPE_CHECKING:
    from phenoprint.data.table import EmbeddingTable
    from phenoprint.index.plots import Panel
from phenoprint.launch import (
    classify_over_http,
    free_port,
    port_is_free,
    serve_command,
    start_server,
    stop_server,
    wait_for_interrupt,
)

#: Where the demo's narration goes: a function of one line (``print`` for the demo script; the log by default).
Say = Callable[[str], None]

log = logging.getLogger(__name__)

CENTERINGS: tuple[CenterChoice, ...] = ("none", "center", "tvn", "auto")  # auto: chosen per held-out experiment
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
    onboard_center: CenterChoice = "auto"  # centering of the service's indexes (auto: chosen on the batch's controls)
    projection_center: CenterMethod = "tvn"  # centering shown in the projections (one choice for every experiment)
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


def _step(result: DemoResult, name: str, fn: Callable[[], Any], say: Say) -> Any:
    started = time.perf_counter()
    say(f"\n== {name}")
    out = fn()
    result.seconds[name] = round(time.perf_counter() - started, 1)
    return out


def generate(config: DemoConfig, oracle: bool, say: Say = log.info) -> Path:
    """The synthetic data root (or its no-batch-effects twin); reused when complete."""
    from phenoprint.data.synth import SYNTH_RECORD, preset_config, synthesize

    root = config.workdir / ("data-oracle" if oracle else "data")
    if (root / SYNTH_RECORD).is_file():
        say(f"reusing {root}")
        return root
    synth = preset_config(config.preset, seed=config.seed, batch_effects=not oracle)
    synthesize(synth, root, workers=config.workers, progress=config.progress)
    return root


def preview_panels(metadata: pd.DataFrame) -> list[Any]:
    """One site per cell type, its untreated well and, beside it, a treated well of the same plate (captioned)."""
    from phenoprint.data.layout import CELL_TYPES
    from phenoprint.data.rgb import PreviewPanel

    panels = []
    present = [c for c in CELL_TYPES if c in set(metadata.cell_type)]
    for cell_type in present:
        sub = metadata[(metadata.cell_type == cell_type) & (metadata.site == metadata.site.min())]
        experiment = sorted(sub.experiment.unique())[0]
        plate_rows = sub[(sub.experiment == experiment) & (sub.plate == sub[sub.experiment == experiment].plate.min())]
        untreated = plate_rows[plate_rows.well_type == "negative_control"].sort_values("well")
        treated = plate_rows[(plate_rows.well_type == "treatment") & plate_rows.sirna_id.notna()].sort_values("well")
        if untreated.empty or treated.empty:
            continue
        for row, what in ((untreated.iloc[0], "untreated"), (treated.iloc[0], None)):
            name = row.get("sirna") if "sirna" in row.index and pd.notna(row.get("sirna")) else None
            label = what or f"siRNA {name or int(row.sirna_id)}" + (f" (id {int(row.sirna_id)})" if name else "")
            caption = f"{experiment} plate {int(row.plate)} {row.well}: {label}"
            panels.append(PreviewPanel(caption, experiment, int(row.plate), str(row.well), int(row.site)))
    return panels


def previews(config: DemoConfig, root: Path, oracle_root: Path, say: Say = log.info) -> Path:
    """A labelled sheet per data root (each cell type's untreated well beside a treated one, with and without batch
    effects) and the sites as single PNGs; reused when present."""
    from phenoprint.data.layout import read_metadata
    from phenoprint.data.rgb import to_rgb, write_png_atomic, write_preview_sheet
    from phenoprint.data.source import PngSource

    out = config.workdir / "previews"
    sheet, oracle_sheet = out / "overview.png", out / "overview_oracle.png"
    if not (out / COMPLETE).is_file():
        panels = preview_panels(read_metadata(root))
        write_preview_sheet(root, panels, sheet, title="with batch effects: untreated well | treated well")
        write_preview_sheet(oracle_root, panels, oracle_sheet, title="the same sites without batch effects")
        for folder, data in ((out, root), (out / "oracle", oracle_root)):
            source = PngSource(data)
            for p in panels:
                site = source.load(p.experiment, p.plate, p.well, p.site)
                write_png_atomic(to_rgb(site), folder / f"{p.experiment}_Plate{p.plate}_{p.well}_s{p.site}.png")
        write_json_atomic({"sites": len(panels)}, out / COMPLETE)
    explain(
        sheet,
        "one site per cell type in the RxRx1 colours (blue nuclei, green ER, red actin, cyan nucleoli, magenta "
        "mitochondria, yellow Golgi), each image stretched by its own intensities; left the untreated well, right "
        f"a treated well of the same plate. {oracle_sheet.name} shows the same sites rendered without batch "
        "effects, so the difference between the two sheets is what a batch does to the pixels",
        say,
    )
    return out


def explain(path: Path, what: str, say: Say = log.info) -> None:
    """Say once, in plain words, what a file the demo wrote shows."""
    say(f"wrote {path}: {what}")


def pack_root(config: DemoConfig, root: Path, say: Say = log.info) -> Path:
    """A pack of a data root (reused when complete)."""
    from phenoprint.data.pack import MANIFEST, pack

    out = root.with_name(root.name + ".pack")
    if (out / MANIFEST).is_file():
        say(f"reusing {out}")
        return out
    pack(root, out, workers=config.workers, progress=config.progress)
    return out


def holdout_experiments(root: Path) -> tuple[str, ...]:
    """The experiments the synthetic release marks as test: held out of training, onboarded as new batches."""
    from phenoprint.data.layout import read_metadata

    meta = read_metadata(root)
    return tuple(sorted(meta.loc[meta.dataset == "test", "experiment"].unique()))


def train_model(config: DemoConfig, root: Path, pack: Path, holdout: tuple[str, ...], say: Say = log.info) -> Path:
    """Train the embedder on the non-held-out experiments (reused when the run is finished)."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.checkpoint import RUN_FILE
    from phenoprint.embedder.config import train_config
    from phenoprint.embedder.report import CURVE_FILE, MODEL_CARD
    from phenoprint.embedder.train import train
    from phenoprint.index.evaluate import validation_top1

    run = config.workdir / "run"
    if (run / RUN_FILE).is_file():
        say(f"reusing {run}")
        if not (run / MODEL_CARD).is_file():  # a run from before runs described themselves
            from phenoprint.embedder.report import write_run_report

            write_run_report(run)
        _explain_run(run, CURVE_FILE, MODEL_CARD, say)
        return run
    source = open_source(root, pack)
    n_classes = int(source.metadata.sirna_id.max()) + 1
    options = train_config(
        backbone=config.backbone,
        embedding_dim=config.embedding_dim,
        num_classes=n_classes,
        head=config.head,
        margin=config.margin,
        scale=config.scale,
        image_size=config.image_size,
        normalization=config.normalization,
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
    train(options, source, run, resume=has_checkpoint, progress=config.progress, validate=validation_top1)
    _explain_run(run, CURVE_FILE, MODEL_CARD, say)
    return run


def _explain_run(run: Path, curve: str, card: str, say: Say) -> None:
    if (run / curve).is_file():
        explain(
            run / curve,
            "the training loss falling over the optimizer steps (left; the orange point is the validation on the "
            "held-out experiments) and the learning-rate schedule (right)",
            say,
        )
    explain(
        run / card, "what the model was trained on, how, what it scored on held-out experiments, and its limits", say
    )


def export_reference(
    config: DemoConfig, run: Path, root: Path, pack: Path, holdout: tuple[str, ...], say: Say = log.info
) -> Path:
    """Embeddings of the training experiments: the reference every new batch is indexed against."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.export import export_embeddings, select_wells
    from phenoprint.embedder.inference import load_model

    out = config.workdir / "embeddings" / "reference.parquet"
    model = load_model(run)
    if _table_of(out, model.fingerprint, config.tta, config.bn_adapt):
        say(f"reusing {out}")
        return out
    source = open_source(root, pack)
    trained = sorted(set(source.metadata.experiment) - set(holdout))
    wells = select_wells(source.metadata, tuple(trained))
    export_embeddings(
        model, source, out, wells=wells, tta=config.tta, bn_adapt=config.bn_adapt, progress=config.progress
    )
    return out


def _index_of(path: Path, fingerprint: str, center: str | None = None) -> bool:
    """Whether ``path`` holds a complete, intact index of this model's embeddings in this phenoprint's format (and,
    when ``center`` is given, built with that centering, ``auto`` meaning one chosen on the controls)."""
    from phenoprint.errors import IndexFormatError
    from phenoprint.index.experiment import ExperimentIndex

    if not (path / "manifest.json").is_file():
        return False
    try:
        index = ExperimentIndex.load(path, expected_fingerprint=fingerprint)
    except IndexFormatError as exc:
        log.info("rebuilding %s: %s", path, exc)
        return False
    if center is not None and (("selection" in index.manifest) != (center == "auto")):
        return False
    return center is None or center == "auto" or index.config.center == center


def export_plain(config: DemoConfig, run: Path, root: Path, pack: Path, say: Say = log.info) -> Path:
    """Every well embedded without batch-norm adaptation and without TTA: what adaptation is compared against."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.export import export_embeddings
    from phenoprint.embedder.inference import load_model

    out = config.workdir / "embeddings" / "plain.parquet"
    model = load_model(run)
    if _table_of(out, model.fingerprint, 1, False):
        say(f"reusing {out}")
        return out
    export_embeddings(model, open_source(root, pack), out, tta=1, bn_adapt=False, progress=config.progress)
    return out


def _table_of(path: Path, fingerprint: str, tta: int | None = None, bn_adapt: bool | None = None) -> bool:
    """Whether ``path`` is an embedding table of this model, embedded this way (so a rerun can reuse it)."""
    if not path.is_file():
        return False
    import pyarrow.parquet as pq

    from phenoprint.data.table import PARQUET_META_KEY

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


def onboard(
    config: DemoConfig, run: Path, root: Path, reference: Path, holdout: tuple[str, ...], say: Say = log.info
) -> dict[str, Path]:
    """Run scripts/build_index.py's job for each held-out experiment from its controls only."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.inference import load_model
    from phenoprint.index.config import IndexConfig
    from phenoprint.onboard import onboard_experiment, onboard_summary

    model = load_model(run)
    fingerprint = model.fingerprint
    queries = {}
    for exp in holdout:
        index_dir = config.workdir / "indexes" / exp
        query_path = config.workdir / "embeddings" / f"{exp}.parquet"
        queries[exp] = query_path
        if _index_of(index_dir, fingerprint, config.onboard_center) and _table_of(
            query_path, fingerprint, config.tta, config.bn_adapt
        ):
            say(f"reusing {index_dir}")
            continue
        batch = new_batch_root(config, root, exp)
        index_config = IndexConfig(center=config.onboard_center, mode="centroid")
        say(
            f"python scripts/build_index.py --model {run} --data {batch} --experiment {exp} --out {index_dir} "
            f"--reference {reference} --center {index_config.center} --queries-out {query_path} --workers 0"
        )
        # TTA and BN adaptation come from the reference table: as it was embedded
        result = onboard_experiment(
            model,
            open_source(batch),
            exp,
            reference,
            index_dir,
            index_config,
            queries_out=query_path,
            workers=0,
            progress=config.progress,
        )
        say(onboard_summary(result))
    return queries


def labelled_table(root: Path, tables: list[Path]) -> EmbeddingTable:
    """Concatenate embedding tables and restore every well's true label from the full metadata (for scoring)."""
    from phenoprint.data.layout import read_metadata, wells_of
    from phenoprint.data.table import EmbeddingTable, concat_tables, read_embeddings

    table = concat_tables([read_embeddings(p) for p in tables], names=[str(p) for p in tables])
    truth = wells_of(read_metadata(root)).set_index(["experiment", "plate", "well"])["sirna_id"]
    meta = table.meta.copy()
    keys = pd.MultiIndex.from_frame(meta[["Metadata_experiment", "Metadata_plate", "Metadata_well"]])
    meta["Metadata_sirna_id"] = truth.reindex(keys).to_numpy()
    return EmbeddingTable(meta, table.features, table.feature_names, table.fingerprint)


#: What the rows of the demo's table embed: ``adapted`` as onboarding does (per-experiment batch-norm statistics and
#: TTA), ``plain`` without either (the same model's raw vectors).
EMBEDDINGS = ("adapted", "plain")


@dataclass(frozen=True)
class Evaluation:
    """The demo's table and the per-experiment figure the service's configuration reaches."""

    table: pd.DataFrame  # one row per (data, embeddings, centering)
    service_top1: dict[
        str, tuple[int, int]
    ]  # experiment → (right, wells): centroid top-1, adapted, onboarding's centering


def evaluate_all(
    config: DemoConfig,
    table: EmbeddingTable,
    oracle_table: EmbeddingTable,
    holdout: tuple[str, ...],
    plain_table: EmbeddingTable | None = None,
) -> Evaluation:
    """Top-1 / top-5 of the held-out treatment wells for each centering, with and without plate assignment, for the
    adapted embeddings of both data roots and (when given) the plain embeddings of the batch-effects root."""
    from phenoprint.index.config import IndexConfig
    from phenoprint.index.evaluate import EvalConfig, evaluate

    runs: list[tuple[str, str, Any, tuple[CenterChoice, ...]]] = [("batch effects", "adapted", table, CENTERINGS)]
    if plain_table is not None:
        runs.append(("batch effects", "plain", plain_table, ("none", "tvn")))
    runs.append(("oracle twin", "adapted", oracle_table, CENTERINGS))
    rows, service = [], {}
    for name, embeddings, tab, centerings in runs:
        for center in centerings:
            cfg = EvalConfig(
                index=IndexConfig(center=center, mode="auto" if center == "auto" else "centroid"),
                holdout=holdout,
                modes=("knn", "centroid"),
                assign=True,
                replicate_map=False,
                silhouette=False,
            )
            report = evaluate(tab, cfg)
            o = report.overall
            candidates = _candidates(tab, holdout)
            rows.append(
                {
                    "data": name,
                    "embeddings": embeddings,
                    "centering": center,
                    "wells": report.n_queries,
                    "chance": 1.0 / candidates if candidates else float("nan"),
                    "knn top-1": o["knn_top1"],
                    "knn top-5": o["knn_top5"],
                    "knn top-1 + plate assignment": o["knn_assigned_top1"],
                    "centroid top-1": o["centroid_top1"],
                    "centroid top-1 + plate assignment": o["centroid_assigned_top1"],
                    "auto mode + plate assignment": o.get("auto_assigned_top1", float("nan")),
                }
            )
            if (name, embeddings, center) == ("batch effects", "adapted", config.onboard_center):
                per = report.per_query
                column = "auto_top1" if "auto_top1" in per.columns else "centroid_top1"  # the index's own mode
                for exp, sub in per.groupby("experiment"):
                    service[str(exp)] = (int(sub[column].sum()), len(sub))
    return Evaluation(pd.DataFrame(rows), service)


def _candidates(table: EmbeddingTable, holdout: tuple[str, ...]) -> int:
    """siRNAs a held-out well can be named as: the labelled siRNAs of the other experiments (chance = 1 / this)."""
    meta = table.meta
    known = meta[~meta["Metadata_experiment"].isin(holdout) & meta["Metadata_sirna_id"].notna()]
    return int(known["Metadata_sirna_id"].nunique())


def embed_oracle(config: DemoConfig, run: Path, root: Path, pack: Path, say: Say = log.info) -> Path:
    """The no-batch-effects twin embedded by the same model (same wells and biology, no batch effects)."""
    from phenoprint.data.source import open_source
    from phenoprint.embedder.export import export_embeddings
    from phenoprint.embedder.inference import load_model

    out = config.workdir / "embeddings" / "oracle.parquet"
    model = load_model(run)
    if _table_of(out, model.fingerprint, config.tta, config.bn_adapt):
        say(f"reusing {out}")
        return out
    export_embeddings(
        model, open_source(root, pack), out, tta=config.tta, bn_adapt=config.bn_adapt, progress=config.progress
    )
    return out


def pixel_profiles(pack: Path, meta: pd.DataFrame) -> np.ndarray:
    """Each well's per-channel intensity mean and standard deviation (its sites averaged), z-scored over the wells:
    what the pixels say before any model, where batch effects are plain to see."""
    from phenoprint.data.pack import PackSource
    from phenoprint.data.synth.metrics import site_intensity_features

    source = PackSource(pack)
    sites = source.metadata.groupby(["experiment", "plate", "well"])["site"].agg(list)
    rows = []
    for exp, plate, well in meta[["Metadata_experiment", "Metadata_plate", "Metadata_well"]].itertuples(index=False):
        feats = [site_intensity_features(source.load(exp, int(plate), well, s)) for s in sites[(exp, int(plate), well)]]
        rows.append(np.mean(feats, axis=0))
    x = np.asarray(rows)
    return (x - x.mean(axis=0)) / x.std(axis=0).clip(min=1e-12)


def projection_panels(
    config: DemoConfig, root: Path, pack: Path, adapted_tables: list[Path], plain: Path
) -> tuple[list[Panel], EmbeddingTable]:
    """The demo's stages of the same wells, for the projection figures: the pixels' intensity profiles, the plain
    embeddings (no adaptation), the adapted embeddings (per-experiment batch-norm statistics, TTA) before centering,
    and after the centering the indexes use. Returns the panels and the wells' table (true labels restored)."""
    from phenoprint.data.table import WELL_KEY
    from phenoprint.index.config import IndexConfig
    from phenoprint.index.plots import Panel
    from phenoprint.index.table_centering import center_table, fit_configured

    adapted = labelled_table(root, adapted_tables)
    raw = labelled_table(root, [plain])
    keys = pd.MultiIndex.from_frame(raw.meta[list(WELL_KEY)])
    order = keys.get_indexer(pd.MultiIndex.from_frame(adapted.meta[list(WELL_KEY)]))
    if (order < 0).any():
        raise ValueError(f"{plain} lacks {int((order < 0).sum())} of the wells of the adapted tables")
    ic = IndexConfig(center=config.projection_center, mode="centroid")
    stats = fit_configured(adapted, ic, per_plate=False)
    panels = [
        Panel("pixel profiles, no model\n(per-channel intensity mean and s.d.)", pixel_profiles(pack, adapted.meta)),
        Panel("plain embeddings\n(no batch-norm adaptation, no TTA)", raw.features[order]),
        Panel(f"adapted embeddings\n(batch-norm statistics per experiment, TTA {config.tta})", adapted.features),
        Panel(
            f"adapted, then {ic.center.upper()} centering\non each experiment's controls",
            center_table(adapted, stats, False),
        ),
    ]
    return panels, adapted


FIGURE_NOTES = {
    "projection_by_experiment.png": "every well as a dot, coloured by its experiment (batch), at four stages: the "
    "pixels' intensity profiles, where wells cluster by batch; the model's plain vectors (trained on per-experiment "
    "standardized images, so most of the batch is gone already); the vectors with batch-norm statistics "
    "re-estimated per experiment; and after centering on each experiment's controls, as the indexes do. The "
    "silhouette in each title measures the batch clusters (1: apart, 0: mixed)",
    "projection_by_sirna.png": "the same four stages with the ten most replicated siRNAs in colour: replicates of "
    "one siRNA (one well per experiment) should gather once the batches are mixed",
}


def run_demo(config: DemoConfig, say: Say = log.info) -> DemoResult:
    """Generate → train → export → onboard each held-out experiment → evaluate → serve and query (see module doc)."""
    result = DemoResult()
    started = time.time()
    config.workdir.mkdir(parents=True, exist_ok=True)
    root = _step(
        result, f"1/7 generate the synthetic '{config.preset}' preset", lambda: generate(config, False, say), say
    )
    oracle_root = _step(
        result, "2/7 generate its no-batch-effects twin (the oracle)", lambda: generate(config, True, say), say
    )
    previews(config, root, oracle_root, say)
    pack = pack_root(config, root, say)
    oracle_pack = pack_root(config, oracle_root, say)
    holdout = holdout_experiments(root)
    say(f"held out (onboarded later as new batches): {', '.join(holdout)}")
    run = _step(result, "3/7 train the embedder", lambda: train_model(config, root, pack, holdout, say), say)
    reference = _step(
        result,
        "4/7 export embeddings of the training experiments",
        lambda: export_reference(config, run, root, pack, holdout, say),
        say,
    )
    queries = _step(
        result,
        "5/7 onboard each held-out experiment from its controls (scripts/build_index.py)",
        lambda: onboard(config, run, root, reference, holdout, say),
        say,
    )
    evaluation = _step(
        result,
        "6/7 evaluate the held-out experiments (leave-experiment-out)",
        lambda: _evaluate_demo(config, run, (root, pack), (oracle_root, oracle_pack), reference, queries, holdout, say),
        say,
    )
    result.table = evaluation.table
    servers: list[subprocess.Popen] = []
    try:
        result.answer = _step(
            result,
            "7/7 serve the API and classify one held-out well over HTTP",
            lambda: _query_demo(config, run, root, holdout, evaluation, servers, say),
            say,
        )
        result.paths = {
            "data": root,
            "oracle": oracle_root,
            "run": run,
            "reference": reference,
            "indexes": config.workdir / "indexes",
        }
        record = _demo_record(config, result, started)
        write_json_atomic(record, config.workdir / "demo.json")
        say(f"\nstep times (s): {json.dumps(result.seconds)}; {record['wall_seconds']:.0f} s in all")
        if config.serve and servers:
            url = result.answer["url"]
            say(f"\nserving on {url}: the plate viewer at {url}/ui/ (OpenAPI docs at {url}/docs); Ctrl-C to stop")
            if wait_for_interrupt(servers[0]):
                say("\nstopping the server")
    finally:
        for server in servers:
            stop_server(server)
    return result


def batch_answer(
    config: DemoConfig,
    table: EmbeddingTable,
    oracle_table: pd.DataFrame,
    queries: dict[str, Path],
    holdout: tuple[str, ...],
    say: Say = log.info,
) -> None:
    """`phenoprint predict` on each held-out batch (its treatment labels withheld), scored against the truth, beside
    the evaluation's best fixed centering and the oracle twin; writes predictions and a Kaggle-style submission."""
    from phenoprint.data.table import concat_tables, read_embeddings
    from phenoprint.prediction.demo import predict_heldout

    indexes = {e: config.workdir / "indexes" / e for e in holdout}
    argv = ["--index", str(config.workdir / "indexes"), "--experiment", ",".join(holdout), "--embeddings"]
    argv += [str(q) for q in queries.values()] + ["--out", str(config.workdir / "predictions.parquet")]
    say(f"\nphenoprint predict {' '.join(argv)}")
    truth = table.meta.set_index(["Metadata_experiment", "Metadata_plate", "Metadata_well"])["Metadata_sirna_id"]
    answer = predict_heldout(
        indexes, concat_tables([read_embeddings(q) for q in queries.values()]), truth, config.workdir
    )
    frame = oracle_table
    fixed = frame[
        (frame["data"] == "batch effects") & (frame["embeddings"] == "adapted") & (frame["centering"] != "auto")
    ]
    assign_cols = ["knn top-1 + plate assignment", "centroid top-1 + plate assignment"]
    best_fixed = float(fixed[assign_cols].max().max())
    oracle = frame[frame["data"] == "oracle twin"]
    oracle_best = float(oracle[[*assign_cols]].max().max())
    auto = frame[(frame["data"] == "batch effects") & (frame["centering"] == "auto")]["auto mode + plate assignment"]
    auto_value = float(auto.iloc[0]) if len(auto) else float("nan")
    say(
        f"the batch answer of `predict` on the {answer.wells} held-out treatment wells (indexes with --center auto: "
        + ", ".join(f"{e} {c}" for e, c in answer.choices.items())
        + f"): top-1 per well {answer.per_well_top1:.3f}, jointly assigned {answer.assigned_top1:.3f} (every well of "
        f"the batch, controls included), Kaggle-style (treatments only) {answer.submission_top1:.3f}"
    )
    say(
        f"evaluation with auto: {auto_value:.3f} with plate assignment; best fixed centering {best_fixed:.3f} "
        f"(auto - best = {auto_value - best_fixed:+.3f}); oracle twin's best {oracle_best:.3f} "
        f"(auto / oracle = {auto_value / oracle_best:.3f})"
    )
    for path in answer.paths:
        say(f"wrote {path}")
    write_json_atomic(
        {
            "per_well_top1": answer.per_well_top1,
            "assigned_top1": answer.assigned_top1,
            "submission_top1": answer.submission_top1,
            "wells": answer.wells,
            "choices": answer.choices,
            "evaluation_auto_assigned_top1": auto_value,
            "best_fixed_assigned_top1": best_fixed,
            "oracle_best_assigned_top1": oracle_best,
        },
        config.workdir / "predict.json",
    )


def _evaluate_demo(
    config: DemoConfig,
    run: Path,
    data: tuple[Path, Path],
    oracle_data: tuple[Path, Path],
    reference: Path,
    queries: dict[str, Path],
    holdout: tuple[str, ...],
    say: Say,
) -> Evaluation:
    """Step 6: the evaluation table (written and explained) and the projection figures."""
    from phenoprint.index.plots import projection_plots

    root, pack = data
    oracle_root, oracle_pack = oracle_data
    plain = export_plain(config, run, root, pack, say)
    table = labelled_table(root, [reference, *queries.values()])
    oracle = labelled_table(oracle_root, [embed_oracle(config, run, oracle_root, oracle_pack, say)])
    evaluation = evaluate_all(config, table, oracle, holdout, plain_table=labelled_table(root, [plain]))
    frame = evaluation.table
    with atomic_path(config.workdir / "evaluation.csv") as tmp:
        frame.to_csv(tmp, index=False)
    say(format_table(frame, len(holdout)))
    say(explain_table(frame, config))
    batch_answer(config, table, oracle_table=frame, queries=queries, holdout=holdout, say=say)
    panels, wells = projection_panels(config, root, pack, [reference, *queries.values()], plain)
    for path in projection_plots(panels, wells, config.workdir / "plots"):
        explain(path, FIGURE_NOTES[path.name], say)
    return evaluation


def _query_demo(
    config: DemoConfig,
    run: Path,
    root: Path,
    holdout: tuple[str, ...],
    evaluation: Evaluation,
    servers: list[subprocess.Popen],
    say: Say,
) -> dict[str, Any]:
    """Step 7: serve the indexes (the server joins ``servers``, for the caller to stop) and classify one well."""
    wanted = config.port
    port = wanted if wanted and port_is_free(wanted) else free_port()
    # the plate viewer shows step 6's predictions of the held-out batches and the wells' images
    extra: tuple[str, ...] = ("--data", str(root))
    if (config.workdir / "predictions.parquet").is_file():
        extra = ("--predictions", str(config.workdir / "predictions.parquet"), *extra)
    say(" ".join(["phenoprint", *serve_command(run, config.workdir / "indexes", port, extra)[3:]]))
    servers.append(start_server(run, config.workdir / "indexes", port, config.workdir / "serve.log", extra))
    moved = f" (port {wanted} was taken)" if wanted and port != wanted else ""
    say(f"the API is up at http://127.0.0.1:{port}{moved}; its log: {config.workdir / 'serve.log'}")
    answer = classify_over_http(port, root, holdout[0], seed=config.seed)
    for line in answer_lines(answer, evaluation.service_top1.get(holdout[0])):
        say(line)
    answer["url"] = f"http://127.0.0.1:{port}"
    return answer


def _demo_record(config: DemoConfig, result: DemoResult, started: float) -> dict[str, Any]:
    """What demo.json holds: the demo's own time (generation to answer, not the serving after) and its settings."""
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        "cpu_count": os.cpu_count(),
        "seconds": result.seconds,
        "answer": result.answer,
        "config": {
            "preset": config.preset,
            "backbone": config.backbone,
            "image_size": config.image_size,
            "epochs": config.epochs,
            "tta": config.tta,
            "bn_adapt": config.bn_adapt,
        },
    }


def format_table(frame: pd.DataFrame, n_holdout: int) -> str:
    """The evaluation as a fixed-width text table."""
    head = (
        f"held-out treatment wells of {n_holdout} experiments, onboarded from their controls only; "
        "index = own controls + training experiments of the same cell type"
    )
    return head + "\n" + frame.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def explain_table(frame: pd.DataFrame, config: DemoConfig) -> str:
    """How to read the demo's table, once, in plain words (figures taken from the table itself)."""
    wells = int(frame["wells"].iloc[0])
    chance = float(frame["chance"].iloc[0])
    lines = [
        f"How to read it: each row names the siRNA of the same {wells} held-out treatment wells; a random guess is "
        f"right {chance:.3f} of the time (1 in {round(1 / chance)}). 'knn' votes among the nearest indexed wells, "
        "'centroid' picks the nearest siRNA mean (what the service answers); 'top-5' counts the truth anywhere in "
        "the first five; '+ plate assignment' uses that each plate holds each of its siRNAs once. 'adapted' "
        f"embeddings are made as onboarding makes them (batch-norm statistics per experiment, TTA {config.tta}); "
        "'plain' ones without either. 'oracle twin' is the same model on the same wells rendered without batch "
        "effects: the gap to it is what batch effects still cost.",
        "The validation top-1 printed while training is lower than this table: it is a progress monitor (no TTA, "
        "no batch-norm adaptation, mean-centering, at most 3 reference experiments per cell type).",
    ]
    return "\n".join(lines)


def answer_lines(answer: dict[str, Any], service_top1: tuple[int, int] | None = None) -> list[str]:
    """The /classify answer next to the truth, and whether it is right (the lines the demo says)."""
    lines = []
    truth = answer["truth"]
    preds = answer["predictions"]
    where = f"{truth['experiment']} plate {truth['plate']} {truth['well']}"
    true_name = f" ({truth['sirna']})" if truth.get("sirna") else ""
    lines.append(f"queried {where} over HTTP; true siRNA {truth['sirna_id']}{true_name}")
    for p in preds:
        mark = "  <- truth" if p["sirna_id"] == truth["sirna_id"] else ""
        name = f" {p['sirna']:<8}" if p.get("sirna") else ""
        lines.append(f"  rank {p['rank']}: siRNA {p['sirna_id']:>5}{name}  score {p['score']:.3f}{mark}")
    ranks = [p["rank"] for p in preds if p["sirna_id"] == truth["sirna_id"]]
    if ranks and ranks[0] == 1:
        verdict = "right: the top answer is the true siRNA"
    elif ranks:
        verdict = f"wrong: the top answer is another siRNA; the true one is ranked {ranks[0]}"
    else:
        verdict = f"wrong: the true siRNA is not among the {len(preds)} answers"
    if service_top1 is not None:
        right, n = service_top1
        verdict += (
            f" (in the table above, centroid top-1 on {truth['experiment']}'s treatment wells is {right}/{n}, so a "
            "single query is a sample, not a verdict on the model)"
        )
    lines.append(f"  {verdict}")
    lines.append(f"  unknown: {answer['unknown']}   timings (ms): {answer.get('timings')}")
    return lines


def env_flag(name: str, default: bool) -> bool:
    """A boolean from the environment (``0``/``false``/``no`` are false)."""
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() not in ("0", "false", "no", "")


def clean(workdir: Path) -> None:
    """Remove everything a demo wrote."""
    shutil.rmtree(workdir, ignore_errors=True)
