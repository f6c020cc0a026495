"""``GET /experiments`` and ``GET /experiments/{experiment}``: the indexes being served and their manifests."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter

from phenoprint.api.deps import ServiceDep
from phenoprint.api.errors import NOT_READY, UNKNOWN_EXPERIMENT
from phenoprint.api.registry import LoadedIndex
from phenoprint.api.schemas import ExperimentDetail, ExperimentList, ExperimentSummary
from phenoprint.api.state import Service

router = APIRouter(prefix="/experiments", tags=["experiments"])


def _summary(loaded: LoadedIndex, service: Service) -> dict:
    index = loaded.index
    manifest = index.manifest
    preds = service.predictions.get(loaded.experiment)
    counts = manifest.get("counts", {})
    return {
        "experiment": loaded.experiment,
        "cell_type": index.cell_type,
        "entries": len(index),
        "sirnas": len(index.sirna_ids),
        "controls": int(counts.get("controls", 0)),
        "source_experiments": list(manifest.get("source_experiments", [])),
        "centering": index.config.center,
        "per_plate": index.config.per_plate,
        "index_kind": index.config.kind,
        "mode": index.config.mode,
        "selected": (manifest.get("selection") or {}).get("reason"),
        "fingerprint": index.fingerprint,
        "created": manifest.get("created"),
        "loaded_at": datetime.fromtimestamp(loaded.loaded_at, timezone.utc).isoformat(timespec="seconds"),
        "predicted_wells": None if preds is None else len(preds.wells),
    }


@router.get("", summary="List the loaded experiment indexes", response_model=ExperimentList, responses=NOT_READY)
async def list_experiments(service: ServiceDep) -> ExperimentList:
    indexes = service.registry.snapshot()
    return ExperimentList(
        experiments=[ExperimentSummary(**_summary(loaded, service)) for loaded in indexes.values()],
        refused=service.registry.refused,
        refused_predictions=service.predictions.refused,
    )


@router.get(
    "/{experiment}",
    summary="One experiment's index and its manifest",
    response_model=ExperimentDetail,
    responses={**UNKNOWN_EXPERIMENT, **NOT_READY},
)
async def get_experiment(experiment: str, service: ServiceDep) -> ExperimentDetail:
    loaded = service.registry.get(experiment)
    return ExperimentDetail(**_summary(loaded, service), manifest=loaded.index.manifest)
