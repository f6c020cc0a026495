"""scripts/write_benchmarks.py: the bench_predict table states what its JSON measured, beside its comparison."""

from __future__ import annotations

import importlib.util
import sys

from tests.conftest import PROJECT_ROOT


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_the_predict_table_sets_auto_beside_the_best_fixed_centering_and_the_oracle() -> None:
    wb = _script("write_benchmarks")
    scores = {
        "none": {"knn_assigned_top1": 0.90, "centroid_assigned_top1": 0.80},
        "center": {"knn_assigned_top1": 0.70, "centroid_assigned_top1": 0.95},
        "auto": {"auto_assigned_top1": 0.85},
        "best_fixed_assigned_top1": 0.95,
    }
    data = {
        "timing": {"wells": 1232, "classes": 1139, "predict_seconds": 0.5, "per_well_seconds": 0.1},
        "accuracy": scores,
        "oracle": {**scores, "best_fixed_assigned_top1": 1.0},
    }
    rows = {r.figure: r for r in wb.predict_rows(data)}
    timed = rows["predict one full-size experiment (1232 wells, 1139 classes), s"]
    assert (timed.value, timed.other, timed.ratio) == (0.5, 0.1, 5.0)
    assert rows["demo: none, top-1 with plate assignment (best mode)"].value == 0.90  # the better of the two modes
    assert rows["demo: center, top-1 with plate assignment (best mode)"].value == 0.95
    auto = rows["demo: auto, top-1 with plate assignment"]
    assert (auto.value, auto.other) == (0.85, 0.95)
    vs_oracle = rows["demo auto vs the oracle twin's best"]
    assert (vs_oracle.value, vs_oracle.other, vs_oracle.ratio) == (0.85, 1.0, 0.85)
    assert "demo: tvn, top-1 with plate assignment (best mode)" in rows  # a centering the run lacks shows as missing
    assert rows["demo: tvn, top-1 with plate assignment (best mode)"].value is None


def test_the_profiles_table_sets_auto_beside_the_best_pycytominer_baseline() -> None:
    wb = _script("write_benchmarks")
    task = {
        "queries": 10,
        "baselines": {"(a) raw": 0.2, "(b) standardize": 0.5, "(c) spherize": "pycytominer refused: rank"},
        "auto": 0.6,
        "best_pycytominer": "(b) standardize",
        "best_pycytominer_top1": 0.5,
        "best_phenoprint_fixed": "center_scale + knn",
        "best_phenoprint_fixed_top1": 0.65,
    }
    data = {"pycytominer": "1.7", "tasks": {"cdot: compound": task}}
    (row,) = wb.profiles_rows(data)
    assert (row.value, row.other, row.ratio) == (0.6, 0.5, 1.2)
    note = wb.profiles_note(data)
    assert "| cdot: compound | 10 | 0.2 | 0.5 | refused | 0.65 (center_scale + knn) | 0.6 |" in note
