"""``GET /sirnas/{sirna_id}``: what an siRNA is, where it sits in the loaded experiments, and what resembles it."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from phenoprint.api.deps import ServiceDep
from phenoprint.api.errors import NOT_READY
from phenoprint.api.registry import LoadedIndex
from phenoprint.api.schemas import ErrorMessage, SimilarSirna, SirnaLocation, SirnaResponse
from phenoprint.index.classify import similar_sirnas

router = APIRouter(prefix="/sirnas", tags=["sirnas"])


@router.get(
    "/{sirna_id}",
    summary="Look up one siRNA",
    response_model=SirnaResponse,
    responses={
        **NOT_READY,
        404: {"model": ErrorMessage, "description": "no loaded index holds this siRNA, or the experiment is unknown"},
    },
)
async def get_sirna(
    sirna_id: Annotated[int, Path(ge=0, le=2**63 - 1, description="the siRNA id (as in RxRx1 metadata)")],
    service: ServiceDep,
    k: Annotated[int, Query(ge=1, le=100, description="similar siRNAs returned")] = 10,
    experiment: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="index whose centroids rank the similar siRNAs (default: the "
            "loaded index with most wells of this siRNA)",
        ),
    ] = None,
) -> SirnaResponse:
    """Its kind comes from the type of its wells (never from id ranges); its locations and neighbours from the
    indexes loaded now."""
    indexes = service.registry.snapshot()
    holding = {name: loaded for name, loaded in indexes.items() if sirna_id in loaded.sirna_kinds}
    if not holding:
        raise HTTPException(
            404, f"no loaded index holds siRNA {sirna_id}; loaded experiments: {', '.join(indexes) or '(none)'}"
        )
    if experiment is not None:
        chosen = service.registry.get(experiment)
        if sirna_id not in chosen.sirna_kinds:
            raise HTTPException(
                404, f"the index of {experiment} does not hold siRNA {sirna_id}; it is in {', '.join(holding)}"
            )
    else:
        chosen = max(holding.values(), key=lambda li: (_count(li, sirna_id), li.experiment))
    wells = {(w.experiment, w.plate, w.well): w for li in holding.values() for w in li.index.sirna_wells(sirna_id)}
    rows = [wells[key] for key in sorted(wells)]
    kinds = Counter(w.well_type for w in rows)
    similar = similar_sirnas(chosen.index, sirna_id, k)
    names = {k: v for li in holding.values() for k, v in li.sirna_names.items()}
    return SirnaResponse(
        sirna_id=sirna_id,
        sirna=names.get(sirna_id),
        kind=kinds.most_common(1)[0][0],
        locations=[
            SirnaLocation(experiment=r.experiment, plate=int(r.plate), well=r.well, cell_type=r.cell_type) for r in rows
        ],
        experiments=sorted(holding),
        similar_in=chosen.experiment,
        similar=[
            SimilarSirna(
                sirna_id=p.sirna_id,
                sirna=chosen.sirna_names.get(p.sirna_id),
                score=p.score,
                rank=p.rank,
                kind=chosen.sirna_kinds.get(p.sirna_id, ""),
            )
            for p in similar
        ],
    )


def _count(loaded: LoadedIndex, sirna_id: int) -> int:
    return len(loaded.index.sirna_wells(sirna_id))
