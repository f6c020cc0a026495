"""``POST /classify`` and ``POST /embed``: a well's images → its siRNA candidates, or its embedding."""

from __future__ import annotations

import time
from typing import Annotated, cast

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Form

from phenoprint.api.deps import ServiceDep, SettingsDep
from phenoprint.api.errors import NOT_READY, UNKNOWN_EXPERIMENT, UPLOAD, invalid_field
from phenoprint.api.registry import LoadedIndex
from phenoprint.api.schemas import (
    ClassifyFields,
    ClassifyResponse,
    ClassifyTimings,
    EmbedFields,
    EmbedResponse,
    EmbedTimings,
    PredictionOut,
    SiteEmbedding,
    WellFiles,
)
from phenoprint.api.uploads import read_uploads
from phenoprint.index.classify import Classification, classify
from phenoprint.index.config import Mode
from phenoprint.index.experiment import ExperimentIndex

router = APIRouter(tags=["wells"])


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _well(sent: str | None, named: str | None) -> str | None:
    """The well as sent, else as the file names give it (upper case)."""
    well = sent or named
    return None if well is None else well.upper()


def _plates(loaded: LoadedIndex, plate: int | None) -> np.ndarray | None:
    """The ``plates`` argument of ``index.center``: required, and known, when the index was centred per plate."""
    index = loaded.index
    if not index.config.per_plate:
        return None
    known = index.plates
    shown = ", ".join(map(str, known))
    if plate is None:
        raise invalid_field(
            "plate", f"the index of {loaded.experiment} was centred per plate: send the well's plate (one of {shown})"
        )
    if plate not in known:
        raise invalid_field(
            "plate", f"{loaded.experiment} has no centering statistics for plate {plate}; send one of {shown}"
        )
    return np.array([plate])


def centering_name(index: ExperimentIndex) -> str:
    """The index's centering in words (``tvn``, ``center per plate``), with ``(auto)`` when chosen on its controls."""
    c = index.config
    return f"{c.center}{' per plate' if c.per_plate else ''}{' (auto)' if 'selection' in index.manifest else ''}"


@router.post(
    "/classify",
    summary="Name the siRNA of one well",
    response_model=ClassifyResponse,
    responses={**UNKNOWN_EXPERIMENT, **UPLOAD, **NOT_READY},
)
async def classify_well(
    files: WellFiles, form: Annotated[ClassifyFields, Form()], service: ServiceDep, settings: SettingsDep
) -> ClassifyResponse:
    """Embed the well (one forward pass shared with concurrent requests), centre it with its experiment's
    statistics, and rank the siRNAs of the experiment's index."""
    started = time.perf_counter()
    loaded = service.registry.get(form.experiment)
    plates = _plates(loaded, form.plate)
    model = service.model
    cell_type = loaded.index.cell_type if model.config.model.cell_type_context else None
    with service.batcher.arriving() as arrival:
        upload = await read_uploads(
            files,
            max_sites=settings.max_sites_per_well,
            max_pixels=settings.max_image_pixels,
            channels=service.model.config.model.channels,
        )
        decoded = time.perf_counter()
        vectors = await arrival.submit(service.well_images(upload.sites, loaded, cell_type))
    embedded = time.perf_counter()
    top_k, index = form.top_k, loaded.index
    # the index's own mode unless the service overrides it (IndexConfig validates it is one of the two)
    mode = settings.classify_mode or cast(Mode, index.config.mode)

    def search() -> Classification:
        return classify(index.center(vectors.well[None, :], plates), index, k=top_k, mode=mode)

    result = await anyio.to_thread.run_sync(search)
    done = time.perf_counter()
    names = loaded.sirna_names
    return ClassifyResponse(
        experiment=form.experiment,
        predictions=[
            PredictionOut(sirna_id=p.sirna_id, sirna=names.get(p.sirna_id), score=p.score, rank=p.rank)
            for p in result.predictions(0)
        ],
        unknown=bool(result.unknown[0]),
        best_similarity=float(result.best_similarity[0]),
        mode=mode,
        centering=centering_name(index),
        plate=form.plate,
        well=_well(form.well, upload.well),
        sites=list(upload.site_numbers),
        model_fingerprint=model.fingerprint,
        index_created=index.manifest.get("created"),
        timings=ClassifyTimings(
            decode=_ms(decoded - started),
            embed=_ms(embedded - decoded),
            search=_ms(done - embedded),
            total=_ms(done - started),
        ),
    )


@router.post(
    "/embed",
    summary="Embed one well",
    response_model=EmbedResponse,
    responses={**UNKNOWN_EXPERIMENT, **UPLOAD, **NOT_READY},
)
async def embed_well(
    files: WellFiles, form: Annotated[EmbedFields, Form()], service: ServiceDep, settings: SettingsDep
) -> EmbedResponse:
    """The well's unit vector (the normalized mean of its sites'), per-site vectors on request, and the vector
    centred with the experiment's statistics when ``experiment`` is given."""
    started = time.perf_counter()
    model = service.model
    loaded = service.registry.get(form.experiment) if form.experiment else None
    plates = _plates(loaded, form.plate) if loaded is not None else None
    cell_type = None
    if model.config.model.cell_type_context:
        cell_type = loaded.index.cell_type if loaded is not None else form.cell_type
        if cell_type not in model.config.model.cell_types:
            known = ", ".join(model.config.model.cell_types)
            got = "none was sent" if cell_type is None else f"got {cell_type!r}"
            raise invalid_field(
                "cell_type", f"this model needs the cell type ({known}; {got}): send `experiment` or `cell_type`"
            )
    if model.config.normalization == "experiment" and loaded is None:
        raise invalid_field(
            "experiment",
            "this model standardizes images by per-experiment statistics: send `experiment` (see GET /experiments)",
        )
    with service.batcher.arriving() as arrival:
        upload = await read_uploads(
            files,
            max_sites=settings.max_sites_per_well,
            max_pixels=settings.max_image_pixels,
            channels=service.model.config.model.channels,
        )
        decoded = time.perf_counter()
        vectors = await arrival.submit(service.well_images(upload.sites, loaded, cell_type))
    embedded = time.perf_counter()
    centred = None
    if loaded is not None:
        centred = loaded.index.center(vectors.well[None, :], plates)[0]
    done = time.perf_counter()
    sites = None
    if form.per_site:
        sites = [
            SiteEmbedding(site=s, embedding=v.tolist()) for s, v in zip(upload.site_numbers, vectors.sites, strict=True)
        ]
    return EmbedResponse(
        embedding=vectors.well.tolist(),
        dim=int(vectors.well.shape[0]),
        centred=None if centred is None else centred.tolist(),
        experiment=form.experiment,
        plate=form.plate,
        well=_well(form.well, upload.well),
        sites=list(upload.site_numbers),
        site_embeddings=sites,
        model_fingerprint=model.fingerprint,
        timings=EmbedTimings(
            decode=_ms(decoded - started),
            embed=_ms(embedded - decoded),
            center=_ms(done - embedded),
            total=_ms(done - started),
        ),
    )
