#!/usr/bin/env python
"""Rewrite the README's demo figures from a finished demo run (`make readme` after `make demo`).

Every generated block of README.md sits between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers and is
replaced from the demo's own outputs, never typed by hand: ``demo-run`` (when, where, how long), ``demo-table``
(``evaluation.csv``), ``demo-answer`` (the HTTP query of ``demo.json``), ``centering-caption`` (the silhouettes of
``docs/centering.png``, which is redrawn from the run's embeddings). Rerun it after every demo whose figures change.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from phenoprint.atomic import atomic_path
from phenoprint.cli import ArgumentParser

BLOCKS = ("demo-run", "demo-table", "demo-answer", "centering-caption")


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between ``<!-- name:begin -->`` and ``<!-- name:end -->`` replaced by ``body``.

    Raises:
        ValueError: the markers are missing, repeated or out of order.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"expected one {begin} … {end} pair in the README")
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    return pattern.sub(lambda _: f"{begin}\n{body.strip()}\n{end}", text)


def run_block(record: dict[str, Any], machine: str | None) -> str:
    """When and where the demo ran, and how long it took (from ``demo.json``)."""
    minutes = record["wall_seconds"] / 60
    where = machine or f"{record.get('cpu_count')} CPU cores"
    return (
        f"Figures below come from the run of {record['started'][:10]} on {where}: `scripts/demo.py` took "
        f"{minutes:.0f} min ({record['wall_seconds']:.0f} s) from generation to the HTTP query, after the install "
        "(which depends on the network: PyTorch alone is about 1 GB to download)."
    )


def table_block(frame: pd.DataFrame) -> str:
    """The demo's table as printed, and the few figures the README's text quotes, all from ``evaluation.csv``."""
    text = frame.to_string(index=False, float_format=lambda v: f"{v:.3f}")
    first = frame.iloc[0]
    lines = ["```", text, "```", ""]
    lines.append(
        f"Each row names the siRNA of the same {int(first['wells'])} held-out treatment wells; chance is "
        f"{first['chance']:.3f} (1 in {round(1 / first['chance'])})."
    )
    plain = frame[(frame["data"] == "batch effects") & (frame["embeddings"] == "plain")].set_index("centering")
    if len(plain) >= 2:
        none, centred = plain.iloc[0], plain.iloc[-1]
        lines.append(
            f"On the plain embeddings (no batch-norm adaptation, no TTA), {plain.index[-1].upper()} centering takes "
            f"kNN top-1 from {none['knn top-1']:.3f} to {centred['knn top-1']:.3f} and centroid top-1 from "
            f"{none['centroid top-1']:.3f} to {centred['centroid top-1']:.3f}."
        )
    return "\n".join(lines)


def answer_block(answer: dict[str, Any]) -> str:
    """The demo's HTTP query (its curl command) and the answer it got, next to the truth."""
    shown = {
        k: answer.get(k)
        for k in ("experiment", "predictions", "unknown", "best_similarity", "mode", "plate", "well", "sites")
    }
    shown["predictions"] = [
        {
            "sirna_id": p.get("sirna_id"),
            "sirna": p.get("sirna"),
            "score": round(p.get("score", 0.0), 3),
            "rank": p.get("rank"),
        }
        for p in answer.get("predictions", [])[:3]
    ]
    shown["best_similarity"] = round(float(answer.get("best_similarity", 0.0)), 3)
    fingerprint = str(answer.get("model_fingerprint", ""))
    shown["model_fingerprint"] = fingerprint[:16] + "…" if fingerprint else None
    shown["timings"] = answer.get("timings")
    truth = answer["truth"]
    ranks = [p["rank"] for p in answer.get("predictions", []) if p["sirna_id"] == truth["sirna_id"]]
    verdict = (
        "right (the truth ranks first)" if ranks and ranks[0] == 1
        else f"wrong (the truth ranks {ranks[0]})" if ranks
        else f"wrong (the truth is not in the top {len(answer.get('predictions', []))})"
    )  # fmt: skip
    body = compact_json(shown)
    folder = answer.get("image_folder", f"demo/data/images/{truth['experiment']}/Plate{truth['plate']}")
    well = truth["well"]
    fields = f"-F experiment={truth['experiment']} -F plate={truth['plate']} -F well={well} -F top_k=5"
    return "\n".join(
        [
            "```bash",
            f"W={folder}",
            f"curl -s http://127.0.0.1:8000/classify {fields} \\",
            f'    $(for f in $W/{well}_s[12]_w[1-6].png; do echo "-F files=@$f"; done)',
            "```",
            "",
            "```json",
            body,
            "```",
            "",
            f"The demo's query was a treatment well of {truth['experiment']} (plate {truth['plate']}, "
            f"{truth['well']}) whose true siRNA is {truth['sirna_id']}: {verdict}.",
        ]
    )


def compact_json(data: dict[str, Any]) -> str:
    """JSON as an answer is read: one key per line, a list of objects one object per line, short values inline."""
    lines = ["{"]
    items = list(data.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            inner = ",\n".join(f"    {json.dumps(v, ensure_ascii=False)}" for v in value)
            lines.append(f"  {json.dumps(key)}: [\n{inner}\n  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    return "\n".join([*lines, "}"])


def centering_caption(silhouettes: list[tuple[str, float]], n_wells: int) -> str:
    stages = "; ".join(f"{title} {value:.2f}" for title, value in silhouettes)
    return (
        f"*The {n_wells:,} wells of the demo, coloured by experiment, at each stage of the chain (each panel its own "
        f"PCA). Silhouette by experiment within cell type (1: batches apart, 0: mixed): {stages}.*"
    )


def draw_centering(workdir: Path, out: Path) -> tuple[list[tuple[str, float]], int]:
    """Redraw ``docs/centering.png`` from the demo's embeddings (small: 72 dpi, 256 colours); returns each panel's
    silhouette."""
    from phenoprint.index.plots import batch_silhouette, projection_figures
    from phenoprint.pipeline import DemoConfig, holdout_experiments, projection_panels

    config = DemoConfig(workdir=workdir)
    embeddings = workdir / "embeddings"
    held_out = holdout_experiments(workdir / "data")
    adapted = [embeddings / "reference.parquet", *(embeddings / f"{e}.parquet" for e in held_out)]
    data, pack, plain = workdir / "data", workdir / "data.pack", embeddings / "plain.parquet"
    panels, wells = projection_panels(config, data, pack, adapted, plain)
    import io

    from PIL import Image

    fig = projection_figures(panels, wells)["projection_by_experiment"]
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    buffer.seek(0)
    with Image.open(buffer) as image, atomic_path(out) as tmp:  # a 256-colour palette keeps the committed file small
        image.convert("RGB").quantize(colors=256).save(tmp, format="PNG", optimize=True)
    exps = wells.meta["Metadata_experiment"].to_numpy(dtype=str)
    cells = wells.meta["Metadata_cell_type"].to_numpy(dtype=str)
    values = [(p.title.split("\n")[0], batch_silhouette(p.vectors, exps, cells)) for p in panels]
    return values, len(wells)


def main(argv: list[str] | None = None) -> int:
    """Rewrite the README's generated blocks (and docs/centering.png) from a demo folder; returns the exit status."""
    p = ArgumentParser(prog="update_readme.py", description=__doc__)
    p.add_argument("--demo", type=Path, default=Path("demo"), help="a finished `scripts/demo.py --workdir` folder")
    p.add_argument("--readme", type=Path, default=Path("README.md"), help="the README to rewrite")
    p.add_argument("--docs", type=Path, default=Path("docs"), help="folder of the README's figures")
    p.add_argument("--machine", default=None, help='how to name the machine the demo ran on (default: "<N> CPU cores")')
    p.add_argument("--no-figure", action="store_true", help="leave docs/centering.png and its caption as they are")
    args = p.parse_args(argv)
    record_path, csv = args.demo / "demo.json", args.demo / "evaluation.csv"
    for needed in (record_path, csv):
        if not needed.is_file():
            print(f"update_readme.py: error: {needed} is missing: run the demo first (make demo)", file=sys.stderr)
            return 2
    record = json.loads(record_path.read_text())
    if "wall_seconds" not in record or not record.get("answer"):
        print(f"update_readme.py: error: {record_path} is from an older or unfinished demo; rerun it", file=sys.stderr)
        return 2
    text = args.readme.read_text()
    try:
        text = replace_block(text, "demo-run", run_block(record, args.machine))
        text = replace_block(text, "demo-table", table_block(pd.read_csv(csv)))
        text = replace_block(text, "demo-answer", answer_block(record["answer"]))
        if not args.no_figure:
            values, n = draw_centering(args.demo, args.docs / "centering.png")
            text = replace_block(text, "centering-caption", centering_caption(values, n))
    except ValueError as exc:
        print(f"update_readme.py: error: {args.readme}: {exc}", file=sys.stderr)
        return 2
    with atomic_path(args.readme) as tmp:
        tmp.write_text(text)
    print(f"rewrote {', '.join(BLOCKS if not args.no_figure else BLOCKS[:3])} in {args.readme} from {args.demo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
