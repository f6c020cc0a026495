"""``POST /experiments/{experiment}/plates/{plate}/classify``: a plate's well embeddings → its joint answer."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import numpy as np
import pandas as pd
from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from phenoprint.api.deps import ServiceDep
from phenoprint.api.errors import NOT_READY, UNKNOWN_EXPERIMENT, invalid_field
from phenoprint.api.routers.wells import centering_name
from phenoprint.api.schemas import ErrorMessage
from phenoprint.data.plate import USED_WELLS
from phenoprint.data.table import EmbeddingTable, feature_names
from phenoprint.errors import EmbeddingTableError
from phenoprint.index.decode import BatchPrediction, predict_experiment
from phenoprint.index.experiment import ExperimentIndex
from phenoprint.prediction.batch import table_from_parquet_bytes

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


#: The Parquet form of the request body (the JSON form is :class:`PlateRequest`).
PARQUET_FORM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "table": {
            "type": "string",
            "format": "binary",
            "description": "an embedding table as `phenoprint embed` or `build-index --queries-out` writes it (sites "
            "are averaged to wells); its rows of this experiment and plate are decoded, the others ignored",
        },
        "top_k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
    },
    "required": ["table"],
}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PlateRequest.model_json_schema()},
            "multipart/form-data": {"schema": PARQUET_FORM},
        },
    }
}


@router.post(
    "/{experiment}/plates/{plate}/classify",
    summary="Name every well of one plate jointly",
    response_model=PlateResponse,
    responses={
        **UNKNOWN_EXPERIMENT,
        **NOT_READY,
        400: {"model": ErrorMessage, "description": "the body is not valid multipart/form-data"},
        415: {"model": ErrorMessage, "description": "the body is neither JSON nor multipart/form-data"},
    },
    openapi_extra=_BODY,
)
async def classify_plate(experiment: str, plate: int, request: Request, service: ServiceDep) -> PlateResponse:
    """Centre the plate's embeddings with the experiment's statistics, choose the plate's treatment group and assign
    each well a distinct siRNA of that group or a control (the plate design), in the index's mode.

    The wells come as JSON (well → embedding, as ``POST /embed`` returns them) or as a Parquet embedding table
    uploaded in the multipart field ``table``."""
    loaded = service.registry.get(experiment)
    index = loaded.index
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        wells, x, top_k = await _parquet_wells(request, experiment, plate, index)
    elif kind in ("application/json", ""):
        body = _json_body(await request.body())
        wells, top_k = [w.strip().upper() for w in body.wells], body.top_k
        bad = [w for w, v in zip(wells, body.wells.values(), strict=True) if len(v) != index.dim]
        if bad:
            raise invalid_field("wells", f"well {bad[0]}: expected an embedding of dimension {index.dim}")
        x = np.asarray(list(body.wells.values()), dtype=np.float32).reshape(len(wells), index.dim)
    else:
        raise HTTPException(415, f"content type {kind!r}: send application/json or multipart/form-data with a table")
    unknown = sorted(set(wells) - set(USED_WELLS))
    if unknown:
        raise invalid_field("wells", f"unknown well(s) {', '.join(unknown[:5])}: an RxRx1 plate uses B02 … O23")
    if len(set(wells)) != len(wells):
        dup = sorted(w for w in set(wells) if wells.count(w) > 1)
        raise invalid_field("wells", f"well(s) {', '.join(dup[:5])} sent more than once")
    if len(wells) > len(USED_WELLS):
        raise invalid_field("wells", f"{len(wells)} wells sent; a plate holds {len(USED_WELLS)}")
    if not np.isfinite(x).all():
        raise invalid_field("wells", "embeddings must be finite numbers")
    if index.config.per_plate and plate not in index.plates:
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
        return predict_experiment(index, table, k=top_k)

    result = await anyio.to_thread.run_sync(decode)
    names = loaded.sirna_names
    out = result.wells
    top_cols = [f"top{i + 1}_sirna_id" for i in range(top_k)]
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


def _json_body(raw: bytes) -> PlateRequest:
    """The JSON form, validated as FastAPI would (a 422 in its shape, located in the body)."""
    try:
        return PlateRequest.model_validate_json(raw or b"null")
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
        raise RequestValidationError(errors) from None


async def _parquet_wells(
    request: Request, experiment: str, plate: int, index: ExperimentIndex
) -> tuple[list[str], np.ndarray, int]:
    """The plate's wells of an uploaded embedding table: their names, vectors and the requested top-k."""
    async with request.form(max_files=1, max_fields=4) as form:  # closes the spooled upload
        upload = form.get("table")
        if not isinstance(upload, UploadFile):
            raise invalid_field(
                "table", "expected the embedding table as a Parquet file in the multipart field `table`"
            )
        name = upload.filename or "the upload"
        raw_k = form.get("top_k", "5")
        try:
            top_k = int(raw_k) if isinstance(raw_k, str) else -1
        except ValueError:
            top_k = -1
        if not 1 <= top_k <= 50:
            raise invalid_field("top_k", f"expected an integer from 1 to 50; got {raw_k!r}")
        data = await upload.read()
    try:
        table = await anyio.to_thread.run_sync(table_from_parquet_bytes, data)
    except EmbeddingTableError as exc:
        raise invalid_field("table", f"{name}: {exc}") from None
    if table.fingerprint and index.fingerprint and table.fingerprint != index.fingerprint:
        raise invalid_field(
            "table",
            f"the table comes from model {table.fingerprint[:16]}…, the index of {experiment} from "
            f"{index.fingerprint[:16]}…; embed the plate with the served model",
        )
    if table.dim != index.dim:
        raise invalid_field(
            "table", f"the table has dimension {table.dim}; expected embeddings of dimension {index.dim}"
        )
    meta = table.meta
    rows = ((meta.Metadata_experiment == experiment) & (meta.Metadata_plate == plate)).to_numpy()
    if not rows.any():
        held = sorted({f"{e} plate {p}" for e, p in zip(meta.Metadata_experiment, meta.Metadata_plate, strict=True)})
        raise invalid_field(
            "table", f"the table holds no wells of {experiment} plate {plate} (it holds {', '.join(held[:5])})"
        )
    part = table.subset(rows)
    twice = part.meta.duplicated(["Metadata_well", *(["Metadata_site"] if part.has_sites else [])]).to_numpy()
    if twice.any():
        dup = sorted(set(part.meta.Metadata_well[twice]))
        raise invalid_field("wells", f"well(s) {', '.join(dup[:5])} listed more than once in the table")
    part = part.aggregate_sites()
    return [w.strip().upper() for w in part.meta.Metadata_well], part.features, top_k
