"""The API key check, done by a middleware before any byte of a request body is read."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

API_KEY_HEADER = "X-API-Key"
CHALLENGE = {"WWW-Authenticate": "ApiKey"}


def key_problem(given: str | None, key: SecretStr | None) -> str | None:
    """Why a request's ``X-API-Key`` value is refused (None: accepted, or no key is configured)."""
    if key is None:
        return None
    if given is None:
        return f"missing API key: send it in the {API_KEY_HEADER} header"
    if not secrets.compare_digest(given.encode(), key.get_secret_value().encode()):
        return f"wrong API key in the {API_KEY_HEADER} header"
    return None


class ApiKeyMiddleware:
    """Answer 401 to a request for a guarded route without the configured key, before the app reads its body.

    FastAPI parses a multipart body before it runs a route's dependencies, so a dependency alone would read a large
    unauthenticated upload in full before refusing it.

    Args:
        app: the next ASGI app.
        key: the configured key, read per request (None: no check).
        guarded: the routes that need the key.
    """

    def __init__(self, app: ASGIApp, key: Callable[[], SecretStr | None], guarded: Callable[[], Sequence[BaseRoute]]):
        self.app = app
        self.key = key
        self.guarded = guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            key = self.key()
            if key is not None and any(route.matches(scope)[0] != Match.NONE for route in self.guarded()):
                problem = key_problem(Headers(scope=scope).get(API_KEY_HEADER), key)
                if problem is not None:
                    headers = {**CHALLENGE, "Connection": "close"}  # the unread body is not drained
                    await JSONResponse({"detail": problem}, status_code=401, headers=headers)(scope, receive, send)
                    return
        await self.app(scope, receive, send)
