"""``GET /experiments/{experiment}/predictions``: what ``phenoprint predict`` answered for a batch, per plate and well;
``GET …/plates/{plate}/wells/{well}/composite``: a served well's RGB composite from the ``--data`` root."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Annotated, Any

import anyio.to_thread
import numpy as np
import pandas as pd
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response
from PIL import Image

from phenoprint.api.deps import ServiceDep
from phenoprint.api.errors import NOT_READY, UNKNOWN_EXPERIMENT
from phenoprint.api.predictions import ExperimentPredictions
from phenoprint.api.registry import LoadedIndex
from phenoprint.api.schemas import (
    ErrorMessage,
    PlatePrediction,
    PredictedWell,
    PredictionCandidate,
    PredictionsResponse,
)
from phenoprint.data.plate import PLATE_ROWS_384, well_position
from phenoprint.data.rgb import Contrast, to_rgb
from phenoprint.errors import ImageFormatError

router = APIRouter(prefix="/experiments", tags=["experiments"])

#: Rows x columns of the plates drawn: 384-well (RxRx1), or 1536-well when a well lies beyond row P or column 24.
PLATE_SHAPES = ((16, 24), (32, 48))
WELL_PATTERN = r"^[A-Za-z]{1,2}[0-9]{1,2}$"

NO_PREDICTIONS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorMessage, "description": "no index of that experiment, no predictions of it, or no such plate"}
}


@router.get(
    "/{experiment}/predictions",
    summary="The batch answer of one experiment (phenoprint predict's output), per plate and well",
    response_model=PredictionsResponse,
    responses={**NO_PREDICTIONS, **NOT_READY},
)
async def get_predictions(
    experiment: str,
    service: ServiceDep,
    plate: Annotated[
        int | None, Query(ge=1, le=10_000, description="only this plate's wells (default: every plate)")
    ] = None,
) -> PredictionsResponse:
    """The predictions file the service found for the experiment (``serve --predictions``, or next to its index),
    with each well's kind from the index (its own control wells) and, where the file labels wells, right or wrong."""
    loaded = service.registry.get(experiment)
    preds = service.predictions.get(experiment)
    if preds is None:
        raise HTTPException(
            404,
            f"no predictions of {experiment} are served: write them with `phenoprint predict --index "
            f"INDEXES/{experiment} … --out FILE` next to the indexes, or pass serve --predictions FILE_OR_FOLDER",
        )
    return await anyio.to_thread.run_sync(_response, loaded, preds, plate)


def _response(loaded: LoadedIndex, preds: ExperimentPredictions, plate: int | None) -> PredictionsResponse:
    rows = preds.wells
    plates = sorted(int(p) for p in rows["Metadata_plate"].unique())
    if plate is not None:
        if plate not in plates:
            raise HTTPException(
                404, f"the predictions of {preds.experiment} hold no plate {plate}; they hold plates {plates}"
            )
        rows = rows[rows["Metadata_plate"] == plate]
    entries = loaded.index.entries
    own = entries[entries["experiment"] == preds.experiment]
    kinds = {(int(p), str(w)): str(t) for p, w, t in zip(own["plate"], own["well"], own["well_type"], strict=True)}
    names = loaded.sirna_names
    k = preds.k
    labelled = "true_sirna_id" in rows.columns
    wells = [_well(r, k, labelled, kinds, names) for r in rows.to_dict("records")]
    shape = PLATE_SHAPES[0]
    if any(w.row >= shape[0] or w.column >= shape[1] for w in wells):
        shape = PLATE_SHAPES[1]
    summaries = []
    for p, part in rows.groupby("Metadata_plate", sort=True):
        known = [w for w in wells if w.plate == int(p) and w.correct is not None]
        group = part["plate_group"].iloc[0]
        margin = float(part["plate_group_margin"].iloc[0])
        summaries.append(
            PlatePrediction(
                plate=int(p),
                group=None if pd.isna(group) else int(group),
                group_margin=margin if math.isfinite(margin) else None,
                wells=len(part),
                unknown=int(part["unknown"].sum()),
                labelled=len(known),
                correct=sum(bool(w.correct) for w in known),
            )
        )
    return PredictionsResponse(
        experiment=preds.experiment,
        source=preds.path.name,
        loaded_at=pd.Timestamp(preds.loaded_at, unit="s", tz="UTC").isoformat(timespec="seconds"),
        rows=shape[0],
        columns=shape[1],
        row_names=list(_row_names(shape[0])),
        k=k,
        labelled=preds.labelled,
        open_set_threshold=float(loaded.index.open_set.threshold),
        plates=summaries,
        wells=wells,
    )


def _row_names(n: int) -> list[str]:
    return [PLATE_ROWS_384[i] if i < 26 else "A" + PLATE_ROWS_384[i - 26] for i in range(n)]


def _position(well: str) -> tuple[int, int]:
    """Zero-based (row, column) of a well name on a 384- or 1536-well grid (``AF48`` → (31, 47))."""
    if len(well) > 1 and well[1].isalpha():
        return 26 + "ABCDEF".index(well[1]), int(well[2:]) - 1
    return well_position(well)


def _number(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _well(
    r: dict[str, Any], k: int, labelled: bool, kinds: dict[tuple[int, str], str], sirna_names: Mapping[int, str]
) -> PredictedWell:
    row, column = _position(str(r["Metadata_well"]))
    sirna_id = int(r["assigned_sirna_id"])
    truth = r.get("true_sirna_id") if labelled else None
    true_id = None if truth is None or pd.isna(truth) else int(truth)
    top = [
        PredictionCandidate(
            sirna_id=int(r[f"top{i}_sirna_id"]),
            sirna=sirna_names.get(int(r[f"top{i}_sirna_id"])),
            score=float(r[f"top{i}_score"]),
        )
        for i in range(1, k + 1)
    ]
    return PredictedWell(
        plate=int(r["Metadata_plate"]),
        well=str(r["Metadata_well"]),
        row=row,
        column=column,
        well_type=kinds.get((int(r["Metadata_plate"]), str(r["Metadata_well"]))),
        sirna_id=sirna_id,
        sirna=sirna_names.get(sirna_id),
        score=float(r["assigned_score"]),
        confidence=_number(r["confidence"]),
        assigned=bool(r["assigned"]),
        unknown=bool(r["unknown"]),
        similarity=_number(r.get("similarity")),
        top_k=top,
        true_sirna_id=true_id,
        correct=None if true_id is None else true_id == sirna_id,
    )


@router.get(
    "/{experiment}/plates/{plate}/wells/{well}/composite",
    summary="RGB composite of one served well's site, from the service's own data root",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "an RGB PNG of the site"},
        **UNKNOWN_EXPERIMENT,
        **NOT_READY,
        404: {"model": ErrorMessage, "description": "no data root is served, or it holds no such site"},
    },
)
async def get_composite(
    experiment: str,
    plate: Annotated[int, Path(ge=1, le=10_000)],
    well: Annotated[str, Path(pattern=WELL_PATTERN, description="a well name such as B02")],
    service: ServiceDep,
    site: Annotated[int, Query(ge=1, le=99, description="the site (field of view)")] = 1,
    contrast: Annotated[Contrast, Query(description="percentile or rxrx1 display ranges (as POST /preview)")] = (
        "percentile"
    ),
) -> Response:
    """The site is looked up in the data root's metadata by experiment, plate, well and site: nothing the client
    sends is ever used as a path."""
    service.registry.get(experiment)  # 404 for an experiment that is not served
    source = service.images
    if source is None:
        raise HTTPException(404, "the service was started without --data ROOT, so it shows no images of its wells")
    well = well.upper()

    def render() -> bytes:
        meta = source.metadata
        hit = meta[
            (meta["experiment"] == experiment)
            & (meta["plate"] == plate)
            & (meta["well"] == well)
            & (meta["site"] == site)
        ]
        if hit.empty:
            raise HTTPException(404, f"the data root holds no site {site} of {experiment} plate {plate} well {well}")
        try:
            array = source.load(experiment, plate, well, site)
        except ImageFormatError as exc:
            raise HTTPException(404, f"site {site} of {experiment} plate {plate} well {well}: {exc}") from None
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(to_rgb(array, contrast=contrast))).save(buffer, format="PNG")
        return buffer.getvalue()

    png = await anyio.to_thread.run_sync(render)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
