"""``--center auto``: the choice scored on a batch's own labelled controls, recorded, and doubted when it is a tie."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from phenoprint.cli import main
from phenoprint.data.table import EmbeddingTable, write_embeddings
from phenoprint.index.choose import CANDIDATES, CONTROL_CANDIDATES, choose_config
from phenoprint.index.config import IndexConfig
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.index.simulate import VectorDesign, simulate_table

TARGET = "HUVEC-01"


def _design(plate_offset: float, experiment_offset: float = 0.2) -> VectorDesign:
    """Four experiments of 4 plates, 10 positive controls + the untreated well on every plate, 16-d."""
    return VectorDesign(
        cell_types=(("HUVEC", 4),),
        n_treatments=40,
        n_positive_controls=10,
        dim=16,
        plate_offset=plate_offset,
        experiment_offset=experiment_offset,
        gain_sd=0.0,
        nuisance_rank=0,
        positive_control_scale=3.0,
    )


@pytest.fixture(scope="module")
def plate_effect_table() -> EmbeddingTable:
    """Plate offsets 4x the noise and the siRNA effects: only a centering fitted per plate removes them."""
    return simulate_table(_design(plate_offset=4.0), seed=0)


def test_a_centering_clearly_best_on_the_controls_is_picked(plate_effect_table: EmbeddingTable) -> None:
    config, sel = choose_config(plate_effect_table, TARGET, IndexConfig(center="auto", mode="auto"))
    assert config.per_plate
    assert sel.per_plate
    assert (config.center, config.mode) == (sel.center, sel.mode)
    assert config.center != "none"
    rows = {(r["center"], r["per_plate"], r["mode"]): r for r in sel.table}
    assert len(rows) == len(CONTROL_CANDIDATES) * 2  # every centering (per experiment and per plate) x both modes
    assert {r["wells"] for r in sel.table} == {4 * 11}  # the target's labelled controls, every plate
    chosen = rows[(sel.center, sel.per_plate, sel.mode)]
    for center in ("none", "center", "center_scale", "tvn"):  # per experiment: the plate offsets stay
        for mode in ("centroid", "knn"):
            assert rows[(center, False, mode)]["top1"] < chosen["top1"] - 0.3
    assert TARGET in sel.reason
    assert "labelled control wells" in sel.reason


def test_a_fixed_centering_leaves_only_the_mode_to_choose(plate_effect_table: EmbeddingTable) -> None:
    config, sel = choose_config(plate_effect_table, TARGET, IndexConfig(center="tvn", per_plate=True, mode="auto"))
    assert (config.center, config.per_plate) == ("tvn", True)
    assert config.mode in ("centroid", "knn")
    assert {(r["center"], r["per_plate"]) for r in sel.table} == {("tvn", True)}


def test_the_table_and_the_reason_land_in_the_manifest_and_index_info(
    plate_effect_table: EmbeddingTable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emb = write_embeddings(plate_effect_table, tmp_path / "e.parquet")
    out = tmp_path / "indexes" / TARGET
    argv = ["index", "build", "--embeddings", str(emb), "--experiment", TARGET, "--out", str(out)]
    assert main(argv) == 0  # --center auto --mode auto are the defaults of index build
    printed = capsys.readouterr().out
    index = ExperimentIndex.load(out)
    selection = index.manifest["selection"]
    assert index.config.per_plate
    assert (index.config.center, index.config.mode) == (selection["center"], selection["mode"])
    assert len(selection["table"]) == len(CONTROL_CANDIDATES) * 2
    assert selection["reason"]
    assert f"auto chose {selection['reason']}" in printed
    assert main(["index", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["selection"] == selection
    assert info["mode"] == index.config.mode
    assert main(["index", "info", str(out.parent)]) == 0
    assert f"{index.config.center} per plate + {index.config.mode} (auto)" in capsys.readouterr().out


def test_a_near_tie_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """Without batch effects every centering answers alike: the lead is within noise, and the log says so."""
    table = simulate_table(_design(plate_offset=0.0, experiment_offset=0.0), seed=1)
    with caplog.at_level(logging.WARNING, logger="phenoprint.index.choose"):
        _, sel = choose_config(table, TARGET, IndexConfig(center="auto", mode="auto"))
    assert sel.within_noise
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("within noise" in w and TARGET in w for w in warnings), warnings


def test_a_batch_without_labelled_controls_gets_the_fallback_and_the_reason(
    plate_effect_table: EmbeddingTable, caplog: pytest.LogCaptureFixture
) -> None:
    meta = plate_effect_table.meta.copy()
    meta.loc[(meta.Metadata_experiment == TARGET) & (meta.Metadata_well_type != "treatment"), "Metadata_sirna_id"] = (
        None
    )
    # a model's embeddings (profiles without a fingerprint are ranked on the training treatments instead)
    table = EmbeddingTable(
        meta, plate_effect_table.features, plate_effect_table.feature_names, plate_effect_table.fingerprint
    )
    with caplog.at_level(logging.WARNING, logger="phenoprint.index.choose"):
        config, sel = choose_config(table, TARGET, IndexConfig(center="auto", mode="auto"))
    assert (config.center, config.per_plate, config.mode) == ("center", False, "centroid")
    assert sel.table == []
    assert sel.within_noise
    assert "no labelled control wells" in sel.reason
    assert any("no labelled control wells" in r.getMessage() for r in caplog.records)


def test_a_tie_on_the_classification_scores_goes_to_the_default_whatever_the_map() -> None:
    """Controls strong enough to be named right whatever the centering (the demo's batches, CDoT's DMSO) tie many
    candidates on assignment and top-1: the pick is then the default (centre on the controls, nearest centroid), not
    the first candidate in order nor the one with the best control mAP (on the demo, HUVEC-04's controls preferred
    center_scale per plate by mAP 0.999 to 0.990, and its treatments lost 0.046 with it); a lead on assignment or
    top-1, however small, is kept."""
    from phenoprint.index.choose import _default_unless_beaten

    def row(center: str, per_plate: bool, scores: tuple[float, float, float]) -> dict:
        return dict(
            zip(("assigned_top1", "top1", "map"), scores, strict=True),
            center=center,
            per_plate=per_plate,
            mode="centroid",
        )

    auto = IndexConfig(center="auto", mode="auto")
    tied = [row("none", False, (1.0, 1.0, 1.0)), row("center", False, (1.0, 1.0, 1.0)), row("tvn", True, (0.9, 1, 1))]
    assert _default_unless_beaten(tied, [0, 1, 2], auto) == [1, 0, 2]
    better_map = [row("center_scale", True, (1.0, 1.0, 0.999)), row("center", False, (1.0, 1.0, 0.99))]
    assert _default_unless_beaten(better_map, [0, 1], auto) == [1, 0]
    led = [row("none", False, (1.0, 1.0, 1.0)), row("center", False, (1.0, 0.999, 1.0)), row("tvn", True, (0.9, 1, 1))]
    assert _default_unless_beaten(led, [0, 1, 2], auto) == [0, 1, 2]
    led = [row("none", False, (1.0, 1.0, 1.0)), row("center", False, (0.999, 1.0, 1.0))]
    assert _default_unless_beaten(led, [0, 1], auto) == [0, 1]
    fixed = IndexConfig(center="tvn", per_plate=True, mode="auto")  # the default is then the fixed centering's
    assert _default_unless_beaten(tied, [0, 1, 2], fixed) == [0, 1, 2]


def test_a_control_query_is_never_in_the_statistics_it_is_centred_with() -> None:
    """With --center-on controls a new batch's treatments are never among the wells their plate's statistics come
    from; a control query must not be either (leave-one-out), or per-plate centerings fitted on a few controls look
    better than they are. The re-centred row equals statistics fitted on the others by hand."""
    import numpy as np

    from phenoprint.index.centering import apply_centering, fit_centering
    from phenoprint.index.choose import _centre_left_out

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5))
    fit_rows = np.array([1, 1, 1, 1, 1, 0, 0, 0], dtype=bool)
    queries = np.array([1, 0, 0, 0, 0, 1, 0, 0], dtype=bool)  # row 5 is a query outside the fit: left alone
    config = IndexConfig(center="center_scale", mode="centroid")
    stats = fit_centering(x, fit_rows, "center_scale")
    centred = apply_centering(x, stats)
    before = centred.copy()
    _centre_left_out(centred, x, queries, fit_rows, "center_scale", config)
    others = fit_rows.copy()
    others[0] = False
    expected = apply_centering(x[:1], fit_centering(x, others, "center_scale"))[0]
    np.testing.assert_allclose(centred[0], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(centred[0], before[0])
    np.testing.assert_array_equal(centred[1:], before[1:])


def _rank(row: dict) -> tuple[int, bool, int]:
    """A candidate row's place in the order of simplicity: its centering in CANDIDATES (per plate first), then
    centroid, kNN, 1-NN."""
    mode = ["centroid", "knn"].index(row["mode"]) + (row["n_neighbors"] == 1)
    methods = list(dict.fromkeys(c for c, _ in CANDIDATES))
    return methods.index(row["center"]), not row["per_plate"], mode


def _one_control_class(table: EmbeddingTable, target_labels: bool = True) -> EmbeddingTable:
    """The table with every control relabelled as one class (as DMSO-only profiles); optionally the target's
    treatment labels removed."""
    meta = table.meta.copy()
    controls = table.control_mask()
    meta.loc[controls, "Metadata_sirna_id"] = int(meta.loc[controls, "Metadata_sirna_id"].min())
    if not target_labels:
        meta.loc[table.experiment_mask(TARGET) & ~controls, "Metadata_sirna_id"] = None
    return EmbeddingTable(meta, table.features, table.feature_names, table.fingerprint)


def test_controls_of_one_class_choose_by_cross_validation_on_the_training_experiments(
    small_table: EmbeddingTable,
) -> None:
    huvec = small_table.subset(small_table.meta["Metadata_cell_type"].eq("HUVEC").to_numpy())
    config, sel = choose_config(_one_control_class(huvec), TARGET, IndexConfig(center="auto", mode="auto"))
    assert "training experiments" in sel.reason
    assert "controls of a single class" in sel.reason
    best = sel.table[0]
    leader = max(r["training_top1"] for r in sel.table)
    se = (leader * (1 - leader) / best["wells"]) ** 0.5
    assert best["training_top1"] >= leader - se - 1e-9  # the simplest within one standard error of the leader
    simpler = [r for r in sel.table if _rank(r) < _rank(best)]
    assert all(r["training_top1"] < leader - se for r in simpler)
    assert (config.center, config.per_plate, config.mode) == (best["center"], best["per_plate"], best["mode"])
    assert config.n_neighbors == (best["n_neighbors"] or IndexConfig(center="tvn", mode="centroid").n_neighbors)
    assert {r["n_neighbors"] for r in sel.table} == {None, 1}  # kNN as configured and as 1-NN
    # the target's own treatment labels play no part
    blind_table = _one_control_class(huvec, target_labels=False)
    _, blind = choose_config(blind_table, TARGET, IndexConfig(center="auto", mode="auto"))
    assert blind.table == sel.table


def test_profiles_average_every_centering_and_embeddings_are_judged_on_their_controls(
    small_table: EmbeddingTable,
) -> None:
    huvec = small_table.subset(small_table.meta["Metadata_cell_type"].eq("HUVEC").to_numpy())
    profiles = EmbeddingTable(huvec.meta, huvec.features, huvec.feature_names)  # no model fingerprint
    config, sel = choose_config(profiles, TARGET, IndexConfig(center="auto", mode="auto"))
    assert "profiles no model was trained on" in sel.reason
    assert (config.center, config.mode, config.n_neighbors) == ("ensemble", "knn", 1)
    assert sel.table == []
    _, sel = choose_config(huvec, TARGET, IndexConfig(center="auto", mode="auto"))
    assert "labelled control wells" in sel.reason
    assert {(r["center"], r["per_plate"]) for r in sel.table} <= set(CONTROL_CANDIDATES)
