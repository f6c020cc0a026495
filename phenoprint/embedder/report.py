"""What a finished run says about itself: its training curve (from ``metrics.jsonl``) and ``MODEL_CARD.md``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phenoprint.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

MODEL_CARD = "MODEL_CARD.md"
CURVE_FILE = "training_curve.png"
#: How ``phenoprint train`` validates during training, in words (the demo and the card quote it).
VALIDATION_METHOD = (
    "kNN top-1 of the held-out experiments' labelled wells against the wells of at most 3 training experiments "
    "per cell type, each experiment centred on its own controls (mean), one view per site (no TTA), the model's "
    "own batch-norm statistics: a progress monitor, not the figure of an onboarded index (which adds TTA, "
    "BN adaptation, TVN and every training experiment of the cell type)"
)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (a line that does not parse, e.g. cut by a crash, is skipped)."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def plot_training_curve(metrics: str | Path, out: str | Path) -> Path:
    """Write :func:`training_curve_figure` as a PNG (atomically).

    Raises:
        ValueError: the metrics hold no training step.
    """
    fig = training_curve_figure(metrics)
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return out


def training_curve_figure(metrics: str | Path) -> Figure:
    """Loss and learning rate against the optimizer step, with the held-out validations marked.

    Raises:
        ValueError: the metrics hold no training step.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_metrics(metrics)
    train = [r for r in records if r.get("event") == "train" and r.get("loss") is not None]
    val = [r for r in records if r.get("event") == "validation" and r.get("val_top1") is not None]
    if not train:
        raise ValueError(f"{metrics}: no training step recorded; nothing to plot")
    steps = [r["step"] for r in train]
    fig = Figure(figsize=(9, 4.2))
    FigureCanvasAgg(fig)
    ax_loss, ax_lr = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    ax_loss.plot(steps, [r["loss"] for r in train], color="tab:blue", label="training loss (margin head)")
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss and held-out validation")
    handles, labels = ax_loss.get_legend_handles_labels()
    if val:
        ax_val = ax_loss.twinx()
        ax_val.plot(
            [r["step"] for r in val],
            [r["val_top1"] for r in val],
            "o--",
            color="tab:orange",
            label="validation top-1 (held-out experiments)",
        )
        ax_val.set_ylabel("validation top-1")
        ax_val.set_ylim(0, 1)
        h, lab = ax_val.get_legend_handles_labels()
        handles, labels = handles + h, labels + lab
    ax_loss.legend(handles, labels, loc="upper right", fontsize=8)
    ax_lr.plot(steps, [r.get("lr") for r in train], color="tab:green", label="learning rate")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("schedule: linear warmup, cosine decay")
    ax_lr.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def model_card(config: dict[str, Any], run: dict[str, Any], synthetic: bool = False) -> str:
    """The text of ``MODEL_CARD.md`` from a run's ``config.json`` and ``run.json`` (as dicts).

    Args:
        synthetic: the training data was a ``phenoprint synth`` root (its figures say nothing about real images).
    """
    model = config.get("model", {})
    train_exps = run.get("train_experiments") or []
    holdout = run.get("holdout") or []
    val = run.get("val_top1")
    held_out = (
        f"- validation top-1 on {', '.join(holdout)}: **{val:.3f}** ({VALIDATION_METHOD}).\n"
        if val is not None
        else "- none: no experiment was held out (`--holdout`), so nothing measured this model on unseen batches.\n"
    )
    data_note = (
        "synthetic RxRx1 (`phenoprint synth`): every figure below describes invented biology"
        if synthetic
        else "as named below"
    )
    lines = [
        f"# Model card: {Path(str(run.get('run_dir', 'run'))).name}",
        "",
        f"- fingerprint: `{run.get('fingerprint')}` (indexes and embedding tables record it; the service refuses "
        "others)",
        f"- created {run.get('created')} by phenoprint {run.get('phenoprint_version')}",
        "",
        "## Data",
        "",
        f"- data root: `{config.get('data_root')}` ({data_note})"
        + (f", read from the pack `{config.get('pack')}`" if config.get("pack") else ""),
        f"- trained on {len(train_exps)} experiments ({', '.join(train_exps)}): {run.get('num_train_wells')} "
        f"labelled wells, {run.get('classes_seen')} siRNA classes seen of the head's {model.get('num_classes')}",
        f"- held out: {', '.join(holdout) if holdout else 'nothing'}",
        "",
        "## Recipe",
        "",
        f"- backbone `{model.get('backbone')}` (timm, 6-channel input; "
        f"{'ImageNet weights' if run.get('pretrained_loaded') else 'random initialization'}), BN-Linear-BN neck "
        f"to {model.get('embedding_dim')} dimensions, {model.get('head')} head (margin {model.get('margin')}, "
        f"scale {model.get('scale')})" + (", cell-type context" if model.get("cell_type_context") else ""),
        f"- input: {config.get('image_size')} px crops, standardized per {config.get('normalization')}",
        f"- {config.get('epochs')} epochs, {run.get('steps')} optimizer steps of {config.get('batch_size')} wells "
        f"(x{config.get('grad_accum')} accumulation, {run.get('world_size')} process(es)), AdamW lr "
        f"{config.get('lr')}, weight decay {config.get('weight_decay')}, batches drawn per {config.get('sampler')}"
        + (", augmented (dihedral, crop, intensity)" if config.get("augment") else ""),
        f"- final training loss {run.get('final_loss'):.4f}"
        if isinstance(run.get("final_loss"), (int, float))
        else "- final training loss: n/a",
        f"- the curve: `{CURVE_FILE}` (from `metrics.jsonl`)",
        "",
        "## Held-out figures",
        "",
        held_out.rstrip("\n"),
        "- for the figures of onboarded batches, build their indexes (`phenoprint build-index`) and run "
        "`phenoprint evaluate` on the embeddings.",
        "",
        "## Intended use",
        "",
        "Embedding 6-channel RxRx1-style Cell Painting wells of the cell types it was trained on, to name their "
        "siRNA by nearest neighbour in per-experiment indexes centred on each batch's control wells "
        "(`phenoprint build-index`, `phenoprint serve`), and to export profiles for downstream analysis. A research "
        "tool: not validated for any decision about a sample.",
        "",
        "## Limits",
        "",
        "- It knows only the siRNAs and cell types of its training data; a well of anything else is forced onto the "
        "nearest known siRNA unless the open-set threshold flags it.",
        "- A new batch needs labelled control wells (or `--center-on all`), and must be embedded as its reference "
        "was (the same TTA and BN adaptation; `build-index` takes them from the reference table).",
        "- Trained on "
        + (
            "synthetic images: nothing here was measured on the real release."
            if synthetic
            else "the data above only; figures on other data must be measured there."
        ),
    ]
    return "\n".join(lines) + "\n"


def write_run_report(run_dir: str | Path) -> tuple[Path, Path | None]:
    """Write ``MODEL_CARD.md`` and ``training_curve.png`` into a finished run (the curve only when steps were
    logged); returns their paths."""
    from phenoprint.data.synth import SYNTH_RECORD
    from phenoprint.embedder.checkpoint import CONFIG_FILE, RUN_FILE
    from phenoprint.embedder.train import METRICS_FILE

    run_dir = Path(run_dir)
    config = json.loads((run_dir / CONFIG_FILE).read_text())
    run = {"run_dir": str(run_dir), **json.loads((run_dir / RUN_FILE).read_text())}
    root = config.get("data_root")
    synthetic = bool(root) and (Path(root) / SYNTH_RECORD).is_file()
    curve: Path | None = None
    try:
        curve = plot_training_curve(run_dir / METRICS_FILE, run_dir / CURVE_FILE)
    except (OSError, ValueError) as exc:
        log.warning("no training curve for %s: %s", run_dir, exc)
    card = run_dir / MODEL_CARD
    with atomic_path(card) as tmp:
        tmp.write_text(model_card(config, run, synthetic), encoding="utf-8")
    return card, curve
