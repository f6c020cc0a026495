"""Metrics live in a registry per app, so a process can build many apps."""

from __future__ import annotations

from phenoprint.api.app import create_app
from phenoprint.api.metrics import ServiceMetrics
from phenoprint.api.settings import Settings


def test_each_app_has_its_own_registry(settings: Settings) -> None:
    a, b = create_app(settings), create_app(settings)  # the global registry would refuse the second set of names
    assert a.state.metrics.registry is not b.state.metrics.registry


def test_the_exposition_names_every_family() -> None:
    text = ServiceMetrics().render().decode()
    for family in (
        "phenoprint_http_requests_total",
        "phenoprint_http_request_seconds",
        "phenoprint_batch_wells",
        "phenoprint_batch_seconds",
        "phenoprint_indexes_loaded",
        "phenoprint_index_reloads_total",
        "phenoprint_model_info",
    ):
        assert f"# TYPE {family.removesuffix('_total')}" in text, family
