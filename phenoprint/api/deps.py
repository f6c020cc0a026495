"""Dependencies of the routes, as ``Annotated`` aliases: settings, the running service, the API key check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader

from phenoprint.api.auth import API_KEY_HEADER, CHALLENGE, key_problem
from phenoprint.api.settings import Settings, get_settings
from phenoprint.api.state import Service

#: Declares the key in the OpenAPI schema (added to the data routes only when a key is configured).
api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="the key set in PHENOPRINT_API_KEY, when one is set"
)

SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_service(request: Request) -> Service:
    """The service the lifespan started (503 outside it: before startup finished or after shutdown began)."""
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise HTTPException(503, "the service is not running (starting up or shutting down); retry shortly")
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    """401 unless the request carries the configured key in ``X-API-Key`` (nothing to check when none is set).

    :class:`phenoprint.api.auth.ApiKeyMiddleware` refuses such requests before their body is read; this dependency
    declares the key in the OpenAPI schema and guards the routes of an app assembled without the middleware.
    """
    problem = key_problem(request.headers.get(API_KEY_HEADER), settings.api_key)
    if problem is not None:
        raise HTTPException(401, problem, headers=CHALLENGE)
