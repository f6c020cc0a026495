"""End-to-end smoke of `make demo` on the tiny preset: generate → train → export → onboard → evaluate → serve; the
demo's words about what it printed; the README regenerated from its outputs."""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import pandas as pd
import pytest

from phenoprint.pipeline import DemoConfig, answer_lines, preview_panels, run_demo
from tests.conftest import PROJECT_ROOT


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_demo_chain_runs_end_to_end_and_reuses_finished_steps(tmp_path: Path, capsys) -> None:
    with socket.socket() as taken:  # the demo's port is busy: it serves on a free one and says where
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        config = DemoConfig(
            workdir=tmp_path / "demo",
            preset="tiny",
            image_size=32,
            epochs=2,
            workers=1,
            serve=False,
            progress=False,
            embedding_dim=16,
            port=busy,
        )
        result = run_demo(config, say=print)
    table = result.table
    assert table is not None
    assert list(table.columns[:5]) == ["data", "embeddings", "centering", "wells", "chance"]
    assert set(zip(table.data, table.embeddings, strict=True)) == {
        ("batch effects", "adapted"),
        ("batch effects", "plain"),
        ("oracle twin", "adapted"),
    }
    assert set(table.centering) == {"none", "center", "tvn", "auto"}
    # each figure against what the synthetic metadata says, not only its range
    from phenoprint.data.layout import read_metadata, wells_of

    wells = wells_of(read_metadata(result.paths["data"]))
    held = wells.experiment.isin(set(wells.loc[wells.dataset == "test", "experiment"]))
    queries = held & (wells.well_type == "treatment") & wells.sirna_id.notna()
    assert (table["wells"] == int(queries.sum())).all()
    candidates = wells.loc[~held & wells.sirna_id.notna(), "sirna_id"].nunique()
    assert table["chance"].to_numpy() == pytest.approx(1.0 / candidates)
    assert (table["knn top-5"] >= table["knn top-1"]).all()  # the top-1 answer is one of the top 5
    assert (table[["knn top-1", "centroid top-1"]] > table["chance"].to_numpy()[:, None]).to_numpy().any()
    predicted = pd.read_parquet(config.workdir / "predictions.parquet")  # `predict` on the held-out batches
    assert set(predicted.Metadata_experiment) == {"HUVEC-02", "RPE-02"}
    assert {"assigned_sirna_id", "plate_group", "confidence", "unknown", "true_sirna_id"} <= set(predicted.columns)
    submission = pd.read_csv(config.workdir / "submission.csv")
    assert (
        not submission.groupby(submission.id_code.str.split("_").str[0])
        .sirna.apply(lambda s: s.duplicated().any())
        .any()
    )
    answer = result.answer
    assert answer is not None
    assert answer["experiment"] == answer["truth"]["experiment"]
    assert len(answer["predictions"]) == 5
    names = {p["sirna"] for p in answer["predictions"]}  # names from the metadata (the untreated well's is EMPTY)
    assert all(n == "EMPTY" or n.startswith("s") for n in names)
    indexes = sorted(p.name for p in (config.workdir / "indexes").iterdir())
    assert indexes == ["HUVEC-02", "RPE-02"]  # the tiny preset's test experiments, onboarded from their controls
    manifest = json.loads((config.workdir / "indexes" / "HUVEC-02" / "manifest.json").read_text())
    assert (manifest["producer"]["tta"], manifest["producer"]["bn_adapt"]) == (config.tta, config.bn_adapt)
    assert (config.workdir / "evaluation.csv").is_file()
    assert sorted(p.name for p in (config.workdir / "plots").glob("*.png")) == [
        "projection_by_experiment.png",
        "projection_by_sirna.png",
    ]
    assert (config.workdir / "previews" / "overview.png").is_file()
    assert (config.workdir / "previews" / "overview_oracle.png").is_file()
    assert (config.workdir / "run" / "MODEL_CARD.md").is_file()
    assert (config.workdir / "run" / "training_curve.png").is_file()
    out = capsys.readouterr().out
    assert "true siRNA" in out
    assert (
        f"the API is up at http://127.0.0.1:{answer['curl'].split(':')[2].split('/')[0]} (port {busy} was taken)" in out
    )
    assert "  right: " in out or "  wrong: " in out
    assert "How to read it:" in out
    assert out.count("wrote ") >= 5  # previews, model card, curve and the two projections, each explained
    assert "--tta" not in out.split("== 5/7")[1].split("== 6/7")[0]  # onboarding takes TTA from the reference
    # a rerun reuses every finished step
    again = run_demo(config, say=print)
    assert again.table is not None
    assert "reusing" in capsys.readouterr().out
    record = json.loads((config.workdir / "demo.json").read_text())
    assert record["answer"]["truth"] == answer["truth"]
    assert record["wall_seconds"] > 0

    # the README's generated blocks and docs/centering.png, from this run
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n"
        + "".join(f"<!-- {b}:begin -->\nold\n<!-- {b}:end -->\n" for b in ("demo-run", "demo-table", "demo-answer"))
        + "<!-- centering-caption:begin -->\nold\n<!-- centering-caption:end -->\nend\n"
    )
    docs = tmp_path / "docs"
    argv = ["--demo", str(config.workdir), "--readme", str(readme), "--docs", str(docs), "--machine", "a test box"]
    assert _script("update_readme").main(argv) == 0
    text = readme.read_text()
    assert "old" not in text
    assert text.startswith("intro\n")
    assert text.endswith("end\n")
    assert "on a test box:" in text
    csv = pd.read_csv(config.workdir / "evaluation.csv")
    assert f"{csv['knn top-1'].iloc[0]:.3f}" in text
    assert f"true siRNA is {answer['truth']['sirna_id']}" in text
    assert "Silhouette by experiment within cell type" in text
    assert (docs / "centering.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_answer_is_called_right_or_wrong(capsys) -> None:
    truth = {"experiment": "HUVEC-04", "plate": 1, "well": "C05", "sirna_id": 7, "sirna": "s7"}

    def answer(ids: list[int]) -> dict:
        preds = [{"sirna_id": s, "sirna": f"s{s}", "score": 0.5, "rank": r} for r, s in enumerate(ids, 1)]
        return {"truth": truth, "predictions": preds, "unknown": False, "timings": {}}

    print("\n".join(answer_lines(answer([7, 3, 4]), (26, 44))))
    out = capsys.readouterr().out
    assert "  right: the top answer is the true siRNA" in out
    assert "centroid top-1 on HUVEC-04's treatment wells is 26/44" in out
    assert "siRNA     7 s7" in out
    print("\n".join(answer_lines(answer([3, 4, 7]))))
    assert "  wrong: the top answer is another siRNA; the true one is ranked 3" in capsys.readouterr().out
    print("\n".join(answer_lines(answer([3, 4, 5]))))
    assert "  wrong: the true siRNA is not among the 3 answers" in capsys.readouterr().out


def test_the_preview_sheet_shows_an_untreated_and_a_treated_well_per_cell_type() -> None:
    rows = []
    for exp in ("HUVEC-01", "HUVEC-02", "RPE-01"):
        for well, kind, sirna in (("B02", "negative_control", 52), ("C03", "treatment", 4), ("B03", "treatment", 9)):
            for site in (1, 2):
                rows.append((exp, exp.split("-")[0], 1, well, site, kind, sirna, "train", f"s{sirna:05d}"))
    columns = ["experiment", "cell_type", "plate", "well", "site", "well_type", "sirna_id", "dataset", "sirna"]
    panels = preview_panels(pd.DataFrame(rows, columns=columns))
    assert [p.caption for p in panels] == [
        "HUVEC-01 plate 1 B02: untreated",
        "HUVEC-01 plate 1 B03: siRNA s00009 (id 9)",
        "RPE-01 plate 1 B02: untreated",
        "RPE-01 plate 1 B03: siRNA s00009 (id 9)",
    ]
    assert {p.site for p in panels} == {1}
