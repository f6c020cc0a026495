"""``/healthz`` (the process answers), ``/readyz`` (model and an index loaded), ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from phenoprint import __version__
from phenoprint.api.metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from phenoprint.api.schemas import Health, Readiness
from phenoprint.api.state import Service

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness", response_model=Health)
async def healthz(request: Request) -> Health:
    """200 whenever the process can answer (it loads nothing), with what it runs: the package version, the model's
    fingerprint and how many indexes are loaded (so a deployment can be told apart without another call)."""
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        return Health(status="ok", version=__version__, model_fingerprint=None, indexes=0)
    return Health(
        status="ok",
        version=__version__,
        model_fingerprint=service.model.fingerprint,
        indexes=len(service.registry.snapshot()),
    )


@router.get(
    "/readyz",
    summary="Readiness",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready: see `reasons`"}},
)
async def readyz(request: Request) -> Readiness | JSONResponse:
    """200 once the model and at least one index are loaded; 503 with the reasons until then."""
    service: Service | None = getattr(request.app.state, "service", None)
    reasons = []
    if service is None:
        reasons.append("the model is not loaded (starting up or shutting down)")
        body = Readiness(status="not_ready", model_fingerprint=None, experiments=[], reasons=reasons)
        return JSONResponse(body.model_dump(), status_code=503)
    experiments = sorted(service.registry.snapshot())
    if not experiments:
        refused = service.registry.refused
        detail = "; ".join(f"{name}: {why}" for name, why in refused.items())
        reasons.append(f"no index loaded from {service.registry.root}" + (f" (refused: {detail})" if detail else ""))
    if not service.batcher.running:
        reasons.append("the micro-batcher is not running")
    body = Readiness(
        status="not_ready" if reasons else "ready",
        model_fingerprint=service.model.fingerprint,
        experiments=experiments,
        reasons=reasons,
    )
    return JSONResponse(body.model_dump(), status_code=503) if reasons else body


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text exposition"}},
)
async def metrics(request: Request) -> Response:
    """Request counts by route and status, latency, micro-batch sizes, loaded indexes and reloads."""
    registry: ServiceMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
