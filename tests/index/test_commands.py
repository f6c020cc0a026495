"""The index verbs through ``phenoprint.cli.main``: index build, index info, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from phenoprint.cli import main
from phenoprint.data.table import EmbeddingTable, write_embeddings
from phenoprint.index.experiment import ExperimentIndex


@pytest.fixture(scope="module")
def embeddings(small_table: EmbeddingTable, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_embeddings(small_table, tmp_path_factory.mktemp("emb") / "e.parquet")


def test_index_build_then_info(embeddings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "HUVEC-02"
    argv = ["-q", "index", "build", "--embeddings", str(embeddings), "--experiment", "HUVEC-02", "--out", str(out)]
    assert main([*argv, "--center", "center_scale", "--kind", "hnsw"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: 136 entries (16 own controls, 120 from 3 other experiments), 28 siRNAs, dim 16" in printed
    index = ExperimentIndex.load(out, expected_fingerprint="synthetic", expected_dim=16)
    assert index.config.center == "center_scale"
    assert index.config.kind == "hnsw"
    assert main(["-q", "index", "info", str(out)]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["experiment"] == "HUVEC-02"
    assert manifest["counts"]["entries"] == 136


def test_index_errors_are_one_line(embeddings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["index", "build", "--embeddings", str(embeddings), "--experiment", "U2OS-01", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "phenoprint index: error: unknown experiment 'U2OS-01'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["index", "info", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["index"])  # a sub-verb is required


def test_evaluate_prints_writes_json_and_plots(
    embeddings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, figs = tmp_path / "report.json", tmp_path / "figs"
    argv = ["-q", "evaluate", "--embeddings", str(embeddings), "--holdout", "HUVEC-01,RPE-03", "--assign"]
    assert main([*argv, "--k", "3", "--out", str(report), "--plots", str(figs)]) == 0
    printed = capsys.readouterr().out
    assert "2 held-out experiment(s), 48 query wells; centering auto on controls" in printed
    assert "auto for HUVEC-01:" in printed  # what auto chose for each held-out batch, and why
    assert "top1+assign" in printed
    assert "replicate mAP: before" in printed
    data = json.loads(report.read_text())
    assert set(data["per_experiment"]) == {"HUVEC-01", "RPE-03"}
    assert "centroid_top3" in data["overall"]
    assert data["config"]["index"]["center"] == "auto"
    assert set(data["choices"]) == {"HUVEC-01", "RPE-03"}
    assert sorted(p.name for p in figs.iterdir()) == ["projection_by_experiment.png", "projection_by_sirna.png"]


def test_evaluate_on_a_foreign_profile_table(profiles_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profiles = profiles_path
    assert main(["-q", "evaluate", "--embeddings", str(profiles)]) == 2
    err = capsys.readouterr().err
    assert "phenoprint evaluate: error:" in err
    assert "--center-on all" in err
    argv = [
        "-q",
        "evaluate",
        "--embeddings",
        str(profiles),
        "--center-on",
        "all",
        "--center",
        "center",
        "--mode",
        "knn",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 held-out experiment(s), 48 query wells; centering center on all" in printed
    assert "all knn" in printed
    assert "centroid" not in printed


def test_the_old_spelling_of_center_on_still_works_with_a_warning(profiles_path: Path, capsys) -> None:
    """`evaluate --reference` was the wells the centering is fitted on, `build-index --reference` the reference
    embeddings: one concept per name now (`--center-on`), the old spelling a deprecated alias."""
    argv = ["-q", "evaluate", "--embeddings", str(profiles_path), "--center", "center", "--mode", "knn", "--no-map"]
    assert main([*argv, "--reference", "all"]) == 0
    captured = capsys.readouterr()
    assert "warning: --reference is deprecated here; use --center-on" in captured.err
    assert "centering center on all" in captured.out
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    help_text = capsys.readouterr().out
    assert "--center-on {controls,all}" in help_text
    assert "--reference" not in help_text


def test_index_info_on_a_folder_of_indexes_lists_them(profiles_path: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "indexes"
    for experiment in ("batch0", "batch1"):
        argv = ["-q", "index", "build", "--embeddings", str(profiles_path), "--experiment", experiment]
        argv += ["--center-on", "all", "--center", "center", "--out", str(root / experiment)]
        assert main(argv) == 0
    capsys.readouterr()
    assert main(["index", "info", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"{root}: 2 indexes" in out
    assert "batch0" in out
    assert "batch1" in out
    assert "entries" in out
    assert main(["index", "info", str(root / "batch0")]) == 0
    assert json.loads(capsys.readouterr().out)["experiment"] == "batch0"
    (tmp_path / "empty").mkdir()
    assert main(["index", "info", str(tmp_path / "empty")]) == 2
    assert "holds no index directory" in capsys.readouterr().err


def test_cli_choices_and_defaults_match_the_library() -> None:
    """What the parsers offer and default to is what the library has: the choices of every index option, and the
    IndexConfig a command line without options builds (index build, build-index, evaluate)."""
    import argparse

    from phenoprint.cli import build_parser
    from phenoprint.index.centering import REFERENCES
    from phenoprint.index.commands import index_config_from_args
    from phenoprint.index.config import (
        CALIBRATION_SOURCES,
        CENTER_CHOICES,
        INDEX_KINDS,
        MODE_CHOICES,
        POOLS,
        SCOPES,
        IndexConfig,
    )

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    index_sub = next(a for a in sub.choices["index"]._actions if isinstance(a, argparse._SubParsersAction))
    verbs = {"index build": index_sub.choices["build"], "build-index": sub.choices["build-index"]}
    verbs["evaluate"] = sub.choices["evaluate"]
    wanted = {
        "center": CENTER_CHOICES,
        "reference": REFERENCES,
        "scope": SCOPES,
        "kind": INDEX_KINDS,
        "open_set_calibration": CALIBRATION_SOURCES,
        "pool": POOLS,
    }
    for name, verb in verbs.items():
        choices = {a.dest: tuple(a.choices) for a in verb._actions if a.choices and a.option_strings}
        for dest, allowed in wanted.items():
            if dest in choices:
                assert set(choices[dest]) == set(allowed), (name, dest)
        if "mode" in choices or "modes" in choices:
            offered = set(choices.get("mode", choices.get("modes", ())))
            # evaluate compares fixed modes ("both"); the builds also offer auto (chosen on the controls)
            assert offered - {"both"} == set(MODE_CHOICES) - ({"auto"} if "both" in offered else set()), name
    argv = {
        "index build": ["index", "build", "--embeddings", "e.parquet", "--experiment", "E", "--out", "o"],
        "build-index": [
            *("build-index", "--model", "m", "--data", "d", "--experiment", "E", "--out", "o"),
            *("--reference", "r.parquet"),
        ],
    }
    for name, args in argv.items():
        parsed = parser.parse_args(args)
        # the verbs that build an index choose centering and mode on the batch's controls by default (issue 14)
        assert index_config_from_args(parsed, build=True) == IndexConfig(center="auto", mode="auto"), name
    parsed = parser.parse_args(["evaluate", "--embeddings", "e.parquet"])
    assert index_config_from_args(parsed) == IndexConfig(), "evaluate"
    assert IndexConfig().center == IndexConfig().mode == "auto"  # the default of build-index and evaluate alike


def test_evaluate_options_of_the_knn_vote_grouping_and_same_well(
    profiles_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    argv = ["-q", "evaluate", "--embeddings", str(profiles_path), "--center-on", "all", "--center", "mad_robustize"]
    more = ["--group-by", "plate", "--exclude-same-well", "--n-neighbors", "1", "--vote", "majority", "--no-map"]
    assert main([*argv, *more, "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["config"]["group_by"] == "plate"
    assert data["config"]["exclude_same_well"] is True
    assert (data["config"]["index"]["n_neighbors"], data["config"]["index"]["vote"]) == (1, "majority")
    assert "centering mad_robustize on all" in capsys.readouterr().out


def test_epsilon_option_reaches_the_index_and_bad_values_are_refused(
    embeddings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from phenoprint.cli import build_parser
    from phenoprint.index.commands import index_config_from_args

    parser = build_parser()
    parsed = parser.parse_args(["evaluate", "--embeddings", "e.parquet", "--center", "zca", "--epsilon", "0.01"])
    assert index_config_from_args(parsed).epsilon == 0.01
    onboard = ["build-index", "--model", "m", "--data", "d", "--experiment", "E", "--out", "o", "--reference", "r"]
    assert index_config_from_args(parser.parse_args([*onboard, "--epsilon", "0.2"]), build=True).epsilon == 0.2
    out = tmp_path / "HUVEC-02"
    argv = ["-q", "index", "build", "--embeddings", str(embeddings), "--experiment", "HUVEC-02", "--out", str(out)]
    assert main([*argv, "--center", "zca", "--mode", "knn", "--epsilon", "0.5", "--pool", "training"]) == 0
    built = ExperimentIndex.load(out)
    assert (built.config.epsilon, built.config.pool) == (0.5, "training")
    assert built.manifest["centering"]["pool"] == "training"
    assert index_config_from_args(parser.parse_args([*onboard]), build=True).pool == "all"  # the default
    for bad in ("-1", "nan", "small"):
        with pytest.raises(SystemExit) as exc:
            main([*argv[1:], "--out", str(tmp_path / "bad"), "--center", "zca", "--epsilon", bad])
        assert exc.value.code == 2
        assert "argument --epsilon: expected a" in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()
    help_text = next(a.help for a in _evaluate_parser(parser)._actions if "--epsilon" in a.option_strings)
    assert "added to each eigenvalue" in str(help_text)
    assert "pycytominer" in str(help_text)


def _evaluate_parser(parser: object) -> Any:
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # type: ignore[attr-defined]
    return sub.choices["evaluate"]
