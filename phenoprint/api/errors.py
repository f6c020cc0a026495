"""Domain errors → HTTP statuses, at the edge; every message says what was wrong and what to send instead."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from phenoprint.api.batcher import BatcherClosedError
from phenoprint.api.schemas import ErrorMessage, UnknownExperimentMessage
from phenoprint.api.uploads import SEND_INSTEAD, NotPngError
from phenoprint.errors import ImageFormatError, UnknownExperimentError

#: Statuses of the data endpoints, for the OpenAPI schema (422 comes from FastAPI's own validation).
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorMessage, "description": "an API key is configured and X-API-Key is missing or wrong"},
}
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorMessage, "description": "the service is starting or stopping"},
}
UNKNOWN_EXPERIMENT: dict[int | str, dict[str, Any]] = {
    404: {"model": UnknownExperimentMessage, "description": "no index of that experiment is loaded"},
}
UPLOAD: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorMessage, "description": "the body is not valid multipart/form-data"},
    413: {"model": ErrorMessage, "description": "the request body exceeds the upload limit"},
    415: {"model": ErrorMessage, "description": "a file is not a PNG"},
}


def invalid_field(field: str, message: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 in FastAPI's own shape (``detail``: a list of ``{loc, msg, type}``), for checks a schema cannot state."""
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": kind}])


def too_large(limit: int, size: int | None = None) -> HTTPException:
    """The 413 of a request body over ``limit`` bytes."""
    got = f"a body of {size:,} bytes" if size is not None else "a longer body"
    return HTTPException(
        413,
        f"request too large: {got} was sent, the limit is {limit:,} bytes (PHENOPRINT_MAX_UPLOAD_BYTES); send one "
        "well per request, 6 PNGs per site for 1 or 2 sites",
    )


def public_error(error: dict[str, Any]) -> dict[str, Any]:
    """One validation error as a client should see it: where, what, and which kind, without the ``input`` pydantic
    attaches (for a multipart form that is every part, upload internals included) or other server objects."""
    loc = [str(part) if not isinstance(part, int) else part for part in error.get("loc", ())]
    kind = str(error.get("type", "value_error"))
    msg = str(error.get("msg", "invalid value"))
    if kind == "missing" and loc:
        msg = f"{msg}: send the form field {loc[-1]!r}"
    out: dict[str, Any] = {"loc": loc, "msg": msg, "type": kind}
    ctx = {k: v for k, v in (error.get("ctx") or {}).items() if isinstance(v, (str, int, float, bool))}
    if ctx:
        out["ctx"] = ctx
    return out


async def _unknown_experiment(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnknownExperimentError)
    body = UnknownExperimentMessage(detail=f"{exc}; send one of the known experiments", known=exc.known)
    return JSONResponse(body.model_dump(), status_code=404)


async def _not_png(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=415)


async def _bad_image(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImageFormatError)
    error = {"loc": ["body", "files"], "msg": str(exc), "type": "image_format", "ctx": {"file": exc.source}}
    return JSONResponse({"detail": [error]}, status_code=422)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 without echoing the request, with the messages about ``files`` rewritten to say what to send."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": [public_error(_explained(dict(e))) for e in exc.errors()]}, status_code=422)


def _explained(error: dict[str, Any]) -> dict[str, Any]:
    loc = tuple(error.get("loc", ()))
    if loc[:2] != ("body", "files"):
        return error
    if len(loc) == 3 and isinstance(loc[2], int) and isinstance(error.get("input"), str):
        # a part without a file name is a text field to the multipart parser: "Expected UploadFile, received str"
        message = (
            f"part {loc[2] + 1} of `files` is a text field without a file name, not a file; {SEND_INSTEAD}, each "
            "as a file part with its file name (curl: -F files=@B02_s1_w1.png)"
        )
        return {"type": "file_expected", "loc": loc, "msg": message}  # the text itself is not echoed back
    if len(loc) == 2 and error.get("type") in ("missing", "too_short"):
        return {**error, "msg": f"no files were sent; {SEND_INSTEAD}"}
    return error


async def _http_error(request: Request, exc: Exception) -> Any:
    """FastAPI's answer to an HTTPException, except that a multipart body the parser refused says why and what to
    send (starlette says only "Invalid multipart data.")."""
    assert isinstance(exc, StarletteHTTPException)
    cause = _multipart_cause(exc) if exc.status_code == 400 else None
    if cause is None:
        return await http_exception_handler(request, exc)
    if "header size" in cause:  # python-multipart caps a part's header line (Content-Disposition) at about 4 KB
        detail = (
            "a part's headers exceed the multipart parser's limit of about 4 KB, most likely because of a file name "
            "of thousands of characters; name each file <well>_s<site>_w<channel>.png as in RxRx1, e.g. B02_s1_w1.png"
        )
    else:
        detail = f"the body is not valid multipart/form-data ({cause}); {SEND_INSTEAD}"
    return JSONResponse({"detail": detail}, status_code=400)


def _multipart_cause(exc: BaseException) -> str | None:
    """The message of the parser error behind a 400 raised while reading a multipart body (None: another 400)."""
    seen: list[BaseException] = []
    link: BaseException | None = exc.__context__
    while link is not None and link not in seen and not isinstance(link, MultiPartException):
        seen.append(link)
        link = link.__cause__ or link.__context__
    if link is None or not isinstance(link, MultiPartException):
        return None
    parser_error = link.__cause__
    return str(parser_error) if parser_error is not None else link.message


async def _closed(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"{exc}; retry shortly (see /readyz)"}, status_code=503)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping: invalid fields 422 (without echoing the request, and saying what to send for ``files``),
    unknown experiment 404, not a PNG 415, any other image problem 422, closed 503, and multipart bodies the parser
    refuses 400 with the parser's reason."""
    app.add_exception_handler(UnknownExperimentError, _unknown_experiment)
    app.add_exception_handler(NotPngError, _not_png)  # handlers are looked up along the MRO: this one wins
    app.add_exception_handler(ImageFormatError, _bad_image)
    app.add_exception_handler(BatcherClosedError, _closed)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
