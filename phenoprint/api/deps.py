"""Dependencies of the routes, as ``Annotated`` aliases: settings, the running service, the API key check."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader

from phenoprint.api.settings import Settings, get_settings
from phenoprint.api.state import Service

API_KEY_HEADER = "X-API-Key"
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
    """401 unless the request carries the configured key in ``X-API-Key`` (nothing to check when none is set)."""
    if settings.api_key is None:
        return
    given = request.headers.get(API_KEY_HEADER)
    if given is None:
        raise HTTPException(
            401, f"missing API key: send it in the {API_KEY_HEADER} header", headers={"WWW-Authenticate": "ApiKey"}
        )
    if not secrets.compare_digest(given.encode(), settings.api_key.get_secret_value().encode()):
        raise HTTPException(
            401, f"wrong API key in the {API_KEY_HEADER} header", headers={"WWW-Authenticate": "ApiKey"}
        )
