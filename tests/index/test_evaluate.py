"""Leave-experiment-out evaluation on synthetic tables and on a foreign profile table."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from phenoprint.data.table import EmbeddingTable, read_embeddings
from phenoprint.errors import EmbeddingTableError, UnknownExperimentError
from phenoprint.index.choose import CONTROL_CANDIDATES
from phenoprint.index.config import IndexConfig
from phenoprint.index.evaluate import EvalConfig, evaluate
from tests.index.conftest import PROFILE_LABELS


@pytest.fixture(scope="module")
def tvn_report(small_table: EmbeddingTable):
    return evaluate(small_table, EvalConfig(assign=True))


def test_leave_experiment_out_covers_every_experiment(small_table: EmbeddingTable, tvn_report) -> None:
    r = tvn_report
    assert set(r.per_experiment) == set(small_table.experiments)
    assert set(r.per_cell_type) == {"HUVEC", "RPE"}
    assert r.n_queries == 7 * 4 * 6  # every treatment well of every experiment
    assert r.skipped == {}
    for key in ("knn_top1", "knn_top5", "knn_assigned_top1", "knn_unknown", "centroid_top1", "reachable"):
        assert 0.0 <= r.overall[key] <= 1.0
    assert r.overall["reachable"] == 1.0
    assert r.overall["centroid_top5"] >= r.overall["centroid_top1"]
    assert r.overall["centroid_assigned_top1"] >= r.overall["centroid_top1"]
    assert r.replicate_map["after"] > r.replicate_map["before"]
    assert r.silhouette["after"] < r.silhouette["before"]
    text = json.dumps(r.to_json(), allow_nan=False)
    assert '"per_query"' not in text
    assert len(r.per_query) == r.n_queries
    table = r.format_table()
    assert "top1+assign" in table
    assert "HUVEC centroid" in table


def test_centering_beats_none_on_batch_effects(small_table: EmbeddingTable, tvn_report) -> None:
    none = evaluate(
        small_table,
        EvalConfig(index=IndexConfig(center="none", mode="centroid"), replicate_map=False, silhouette=False),
    )
    assert tvn_report.overall["centroid_top1"] > none.overall["centroid_top1"] + 0.2
    assert none.replicate_map == {}
    assert none.silhouette == {}


def test_holdout_subset_and_modes(small_table: EmbeddingTable) -> None:
    r = evaluate(small_table, EvalConfig(holdout=("RPE-02",), modes=("centroid",), k=3))
    assert list(r.per_experiment) == ["RPE-02"]
    # the default centering is auto: its choice's answers are the auto_* columns beside the modes asked for
    assert set(r.overall) == {f"{m}_{c}" for m in ("centroid", "auto") for c in ("top1", "top3", "unknown")} | {
        "reachable"
    }
    assert r.choices["RPE-02"]["center"] in {c for c, _ in CONTROL_CANDIDATES}
    with pytest.raises(UnknownExperimentError, match="'RPE-09'"):
        evaluate(small_table, EvalConfig(holdout=("RPE-09",)))


def test_a_foreign_profile_table_needs_reference_all(profiles_path: Path) -> None:
    table = read_embeddings(profiles_path)
    with pytest.raises(EmbeddingTableError, match="use --center-on all"):
        evaluate(table, EvalConfig())
    config = EvalConfig(index=IndexConfig(reference="all", center="center_scale"), assign=True)
    r = evaluate(table, config)
    assert set(r.per_experiment) == {"batch0", "batch1", "batch2"}
    assert r.per_cell_type.keys() == {"unknown"}
    assert r.overall["centroid_top1"] > 0.8  # chance is 1/8
    assert r.per_query["sirna_id"].isin(PROFILE_LABELS).all()


def test_experiments_without_a_reference_are_skipped(small_table: EmbeddingTable) -> None:
    only_one = small_table.subset(
        small_table.experiment_mask("HUVEC-01")
        | small_table.experiment_mask("RPE-01")
        | small_table.experiment_mask("RPE-02")
    )
    r = evaluate(only_one, EvalConfig(replicate_map=False))
    assert "HUVEC-01" in r.skipped
    assert "no labelled wells of other experiments" in r.skipped["HUVEC-01"]
    assert set(r.per_experiment) == {"RPE-01", "RPE-02"}
    with pytest.raises(EmbeddingTableError, match="no held-out experiment could be evaluated"):
        evaluate(only_one, EvalConfig(holdout=("HUVEC-01",)))


def test_evaluate_is_quiet_and_fast_on_a_small_table(
    small_table: EmbeddingTable, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        r = evaluate(small_table, EvalConfig(assign=True))
    assert [rec for rec in caplog.records if rec.name.startswith("phenoprint.data")] == []
    assert r.seconds < 10


def test_no_labels_to_query_is_refused(small_table: EmbeddingTable) -> None:
    controls = small_table.subset(small_table.control_mask())
    with pytest.raises(EmbeddingTableError, match="no labelled treatment wells"):
        evaluate(controls, EvalConfig())


def test_eval_config_validates() -> None:
    with pytest.raises(ValueError, match="modes must be a non-empty subset of knn, centroid"):
        EvalConfig(modes=("vote",))
    with pytest.raises(ValueError, match="k must be >= 1"):
        EvalConfig(k=0)
    with pytest.raises(ValueError, match="holdout must name at least one"):
        EvalConfig(holdout=())
    assert EvalConfig(holdout=("A",)).to_json()["holdout"] == ["A"]


def _one_layout_table(
    labelled_b: bool, batches: tuple[str, ...] = ("A", "B"), fingerprint: str | None = None
) -> EmbeddingTable:
    """2 batches x 2 plates of one layout: label i in well A0i on every plate; batch B's treatments labelled or not.
    With a fingerprint it stands for a model's embeddings (``auto`` ranks candidates), else for profiles."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 8)) * 3
    rows, x = [], []
    for b, exp in enumerate(batches):
        offset = rng.normal(size=8) * 5
        for plate in (1, 2):
            for i in range(5):
                control = i == 0
                label = i if (control or exp == "A" or labelled_b) else None
                well_type = "negative_control" if control else "treatment"
                rows.append((exp, plate, f"A{i + 1:02d}", label, well_type))
                x.append(centres[i] + offset + rng.normal(size=8) * 0.1 + b)
    meta = pd.DataFrame(
        rows,
        columns=["Metadata_experiment", "Metadata_plate", "Metadata_well", "Metadata_sirna_id", "Metadata_well_type"],
    )
    meta["Metadata_sirna_id"] = meta["Metadata_sirna_id"].astype("Int64")
    return EmbeddingTable(meta, np.asarray(x, dtype=np.float32), tuple(f"f{j}" for j in range(8)), fingerprint)


def test_leave_one_plate_out_puts_the_batch_other_plates_in_the_reference() -> None:
    table = _one_layout_table(labelled_b=False)
    base = {
        "holdout": ("A",),
        "replicate_map": False,
        "silhouette": False,
        "index": IndexConfig(center="center", mode="centroid"),
    }
    by_batch = evaluate(table, EvalConfig(**base))
    by_plate = evaluate(table, EvalConfig(group_by="plate", **base))
    assert by_batch.n_queries == by_plate.n_queries == 8
    assert by_batch.overall["reachable"] == 0.0  # batch B's treatments carry no labels
    assert by_plate.overall["reachable"] == 1.0  # A's other plate does
    assert by_plate.overall["knn_top1"] == by_plate.overall["centroid_top1"] == 1.0
    assert sorted(set(by_plate.per_query["plate"])) == [1, 2]


def test_exclude_same_well_hides_the_same_position_on_other_plates() -> None:
    table = _one_layout_table(labelled_b=True)
    base = {
        "replicate_map": False,
        "silhouette": False,
        "index": IndexConfig(center="center", mode="centroid", n_neighbors=1),
    }
    plain = evaluate(table, EvalConfig(**base))
    hidden = evaluate(table, EvalConfig(exclude_same_well=True, **base))
    assert plain.overall["knn_top1"] == plain.overall["centroid_top1"] == 1.0
    # every label sits at one position: with that position hidden, no replicate is left to find
    assert hidden.overall["knn_top1"] == hidden.overall["centroid_top1"] == 0.0
    with pytest.raises(ValueError, match="group_by must be one of experiment, plate"):
        EvalConfig(group_by="well")


def test_auto_on_one_control_class_ranks_with_the_same_wells_hidden_when_asked() -> None:
    table = _one_layout_table(labelled_b=True, batches=("A", "B", "C"), fingerprint="synthetic")
    base = {"holdout": ("A",), "replicate_map": False, "silhouette": False}
    ic = IndexConfig(center="auto", mode="auto")
    seen = evaluate(table, EvalConfig(index=ic, **base)).choices["A"]
    hidden = evaluate(table, EvalConfig(index=ic, exclude_same_well=True, **base)).choices["A"]
    assert "training experiments" in seen["reason"]
    assert max(r["training_top1"] for r in seen["table"]) == 1.0
    assert max(r["training_top1"] for r in hidden["table"]) == 0.0  # each label has one position: nothing left


def test_auto_falls_back_when_no_training_batch_shares_a_label_with_another() -> None:
    from phenoprint.index.choose import choose_config

    table = _one_layout_table(labelled_b=True, batches=("A", "B", "C"), fingerprint="synthetic")
    meta = table.meta.copy()
    treated = meta["Metadata_well_type"].eq("treatment")
    meta.loc[treated & meta["Metadata_experiment"].eq("C"), "Metadata_sirna_id"] += 100  # C's treatments: others'
    disjoint = EmbeddingTable(meta, table.features, table.feature_names, table.fingerprint)
    config, sel = choose_config(disjoint, "A", IndexConfig(center="auto", mode="auto"))
    assert (config.center, config.per_plate, config.mode) == ("center", False, "centroid")
    assert "training experiments" not in sel.reason


def _unlabelled_controls(table: EmbeddingTable, experiment: str, shuffle: bool) -> EmbeddingTable:
    """The experiment's controls without labels (so they are neither index entries nor mAP candidates), and with
    ``shuffle`` each feature's values sorted among them: per feature, their median, MAD and spread stay."""
    import numpy as np

    meta = table.meta.copy()
    rows = np.flatnonzero(table.experiment_mask(experiment) & table.control_mask())
    meta.loc[rows, "Metadata_sirna_id"] = None
    x = table.features.copy()
    if shuffle:
        x[rows] = np.sort(x[rows], axis=0)
    return EmbeddingTable(meta, x, table.feature_names, table.fingerprint, dict(table.info))


@pytest.mark.parametrize("method", ["zca", "tvn_pooled"])
def test_a_held_out_experiment_is_whitened_without_its_own_controls(small_table: EmbeddingTable, method: str) -> None:
    """With ``--pool training`` its controls give only its per-batch step (unchanged by sorting each feature among
    them); the pooled whitening comes from the other experiments, so its answers and its replicate mAP do not move."""
    index = IndexConfig(center=method, mode="centroid", pool="training")
    config = EvalConfig(index=index, holdout=("HUVEC-01",), silhouette=False)
    plain = evaluate(_unlabelled_controls(small_table, "HUVEC-01", shuffle=False), config)
    moved = evaluate(_unlabelled_controls(small_table, "HUVEC-01", shuffle=True), config)
    assert plain.n_queries == moved.n_queries > 0
    assert moved.replicate_map == plain.replicate_map
    import pandas as pd

    pd.testing.assert_frame_equal(moved.per_query, plain.per_query)


def test_only_pooled_centerings_are_fitted_once_per_held_out_experiment(
    small_table: EmbeddingTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phenoprint.index import table_centering

    calls: list[tuple[str, tuple[str, ...]]] = []
    real = table_centering.fit_table_centering

    def counting(table: EmbeddingTable, method: str, *args: object, **kwargs: object) -> dict:
        calls.append((method, tuple(kwargs.get("pool_without", ()))))  # type: ignore[arg-type]
        return real(table, method, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(table_centering, "fit_table_centering", counting)  # what every configured fit calls
    holdout = ("HUVEC-01", "HUVEC-02")
    evaluate(small_table, EvalConfig(index=IndexConfig(center="center_scale", mode="centroid"), holdout=holdout))
    assert calls == [("center_scale", ())]  # one shared fit: evaluate is no slower for it
    calls.clear()
    zca = IndexConfig(center="zca", mode="centroid", pool="training")
    evaluate(small_table, EvalConfig(index=zca, holdout=holdout, silhouette=False))
    assert calls == [("zca", ("HUVEC-01",)), ("zca", ("HUVEC-02",))]
    calls.clear()
    evaluate(small_table, EvalConfig(index=replace(zca, pool="all"), holdout=holdout, silhouette=False))
    assert calls == [("zca", ())]  # the default pools every batch: one fit serves them all
