"""Request body limit: refuse by Content-Length before reading, and count streamed (chunked) bytes as they come."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from phenoprint.api.errors import too_large


class BodyLimitMiddleware:
    """Answer 413 to any request whose body exceeds ``max_bytes()`` bytes.

    A declared ``Content-Length`` over the limit is refused before a byte of the body is read. A body without one
    (chunked transfer) or that lies is counted while the app reads it; the first chunk over the limit raises the 413
    inside the app, which stops the multipart parser there.
    """

    def __init__(self, app: ASGIApp, max_bytes: Callable[[], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes()
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            error = too_large(limit, declared)
            response = JSONResponse({"detail": error.detail}, status_code=413, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
