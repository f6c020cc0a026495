"""End-to-end smoke of `make demo` on the tiny preset: generate → train → export → onboard → evaluate → serve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phenoprint.pipeline import DemoConfig, run_demo


@pytest.mark.slow
def test_the_demo_chain_runs_end_to_end_and_reuses_finished_steps(tmp_path: Path, capsys) -> None:
    config = DemoConfig(
        workdir=tmp_path / "demo",
        preset="tiny",
        image_size=32,
        epochs=2,
        workers=1,
        serve=False,
        progress=False,
        embedding_dim=16,
    )
    result = run_demo(config)
    table = result.table
    assert table is not None
    assert set(table.centering) == {"none", "center", "tvn"}
    assert set(table.data) == {"batch effects", "oracle twin"}
    assert ((table["knn top-1"] >= 0) & (table["knn top-1"] <= 1)).all()
    answer = result.answer
    assert answer is not None
    assert answer["experiment"] == answer["truth"]["experiment"]
    assert len(answer["predictions"]) == 5
    indexes = sorted(p.name for p in (config.workdir / "indexes").iterdir())
    assert indexes == ["HUVEC-02", "RPE-02"]  # the tiny preset's test experiments, onboarded from their controls
    assert (config.workdir / "evaluation.csv").is_file()
    assert list((config.workdir / "plots").glob("*.png"))
    out = capsys.readouterr().out
    assert "true siRNA" in out
    # a rerun reuses every finished step
    again = run_demo(config)
    assert again.table is not None
    assert "reusing" in capsys.readouterr().out
    assert json.loads((config.workdir / "demo.json").read_text())["answer"]["truth"] == answer["truth"]
