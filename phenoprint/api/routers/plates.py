"""``POST /experiments/{experiment}/plates/{plate}/classify``: a plate's well embeddings → its joint answer."""

from __future__ import annotations

import anyio.to_thread
import numpy as np
import pandas as pd
from fastapi import APIRouter
from pydantic import BaseModel, Field

from phenoprint.api.deps import ServiceDep
from phenoprint.api.errors import NOT_READY, UNKNOWN_EXPERIMENT, invalid_field
from phenoprint.api.routers.wells import centering_name
from phenoprint.data.plate import USED_WELLS
from phenoprint.index.decode import BatchPrediction, predict_experiment
from phenoprint.index.table import EmbeddingTable, feature_names

router = APIRouter(prefix="/experiments", tags=["plates"])


class PlateRequest(BaseModel):
    wells: dict[str, list[float]] = Field(
        description="well → its embedding, as POST /embed returns it (`embedding`, not centred); every well of the "
        "plate that should be decoded together",
        min_length=1,
    )
    top_k: int = Field(5, ge=1, le=50, description="per-well candidates reported")


class PlateWell(BaseModel):
    well: str
    sirna_id: int = Field(description="the jointly assigned siRNA")
    sirna: str | None = Field(description="its name, where the index knows one")
    score: float = Field(description="its score in the index's mode")
    confidence: float = Field(description="its score minus the best other candidate's (negative: overruled)")
    assigned: bool = Field(description="placed by the plate assignment (false: per-well fallback)")
    unknown: bool = Field(description="open-set flag of the assigned siRNA")
    top_k: list[int] = Field(description="the well's own top-k siRNAs, best first")


class PlateResponse(BaseModel):
    experiment: str
    plate: int
    group: int | None = Field(description="the plate's chosen treatment group (null: no plate design applied)")
    group_margin: float | None = Field(description="mean per-well lead of that group over the next best")
    used_design: bool
    note: str
    mode: str
    centering: str
    wells: list[PlateWell]


@router.post(
    "/{experiment}/plates/{plate}/classify",
    summary="Name every well of one plate jointly",
    response_model=PlateResponse,
    responses={**UNKNOWN_EXPERIMENT, **NOT_READY},
)
async def classify_plate(experiment: str, plate: int, body: PlateRequest, service: ServiceDep) -> PlateResponse:
    """Centre the plate's embeddings with the experiment's statistics, choose the plate's treatment group and assign
    each well a distinct siRNA of that group or a control (the plate design), in the index's mode."""
    loaded = service.registry.get(experiment)
    index = loaded.index
    wells = [w.strip().upper() for w in body.wells]
    unknown = sorted(set(wells) - set(USED_WELLS))
    if unknown:
        raise invalid_field("wells", f"unknown well(s) {', '.join(unknown[:5])}: an RxRx1 plate uses B02 … O23")
    if len(set(wells)) != len(wells):
        dup = sorted(w for w in set(wells) if wells.count(w) > 1)
        raise invalid_field("wells", f"well(s) {', '.join(dup[:5])} sent more than once")
    if len(wells) > len(USED_WELLS):
        raise invalid_field("wells", f"{len(wells)} wells sent; a plate holds {len(USED_WELLS)}")
    bad = [w for w, v in zip(wells, body.wells.values(), strict=True) if len(v) != index.dim]
    if bad:
        raise invalid_field("wells", f"well {bad[0]}: expected an embedding of dimension {index.dim}")
    x = np.asarray(list(body.wells.values()), dtype=np.float32)
    if not np.isfinite(x).all():
        raise invalid_field("wells", "embeddings must be finite numbers")
    if index.config.per_plate and f"{index.experiment}/{plate}" not in index.centering:
        raise invalid_field("plate", f"{experiment} has no centering statistics for plate {plate}")
    meta = pd.DataFrame(
        {
            "Metadata_experiment": experiment,
            "Metadata_plate": plate,
            "Metadata_well": wells,
            "Metadata_sirna_id": pd.array([None] * len(wells), dtype="Int64"),
            "Metadata_cell_type": index.cell_type,
        }
    )
    table = EmbeddingTable(meta, x, tuple(feature_names(index.dim)), index.fingerprint)

    def decode() -> BatchPrediction:
        return predict_experiment(index, table, k=body.top_k)

    result = await anyio.to_thread.run_sync(decode)
    names = loaded.sirna_names
    out = result.wells
    top_cols = [f"top{i + 1}_sirna_id" for i in range(body.top_k)]
    call = result.plates.iloc[0]
    return PlateResponse(
        experiment=experiment,
        plate=plate,
        group=None if pd.isna(call["group"]) else int(call["group"]),
        group_margin=None if pd.isna(call["margin"]) else float(call["margin"]),
        used_design=result.used_design,
        note=result.note,
        mode=result.mode,
        centering=centering_name(index),
        wells=[
            PlateWell(
                well=str(r.Metadata_well),
                sirna_id=int(r.assigned_sirna_id),
                sirna=names.get(int(r.assigned_sirna_id)),
                score=float(r.assigned_score),
                confidence=float(r.confidence) if np.isfinite(r.confidence) else 0.0,
                assigned=bool(r.assigned),
                unknown=bool(r.unknown),
                top_k=[int(getattr(r, col)) for col in top_cols],
            )
            for r in out.itertuples()
        ],
    )
