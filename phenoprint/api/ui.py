"""The browser side of the service: the plate viewer at ``/ui/`` and the API docs, every asset served from the
package so that nothing is fetched from outside (a lab's service often has no internet)."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

#: The UI's own files (HTML, CSS, JS), shipped in the package.
UI_DIR = Path(str(files("phenoprint.api") / "ui"))
#: Where the docs pages' Swagger UI and ReDoc bundles are served from.
DOCS_ASSETS = "/docs-assets"
REDOC_BUNDLE = "redoc.standalone.js"
REDOC_REMOTE_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
#: The pages may load and connect to this service only (the browser refuses anything else, should a file try).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def docs_assets_dir() -> Path:
    """The folder of Swagger UI's and ReDoc's bundles, from the ``fastapi-offline`` package (which ships both, and
    nothing else we use: its FastAPI factory is not needed, FastAPI's own page builders take the asset URLs)."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


@lru_cache(maxsize=1)
def redoc_offline() -> bytes:
    """ReDoc's bundle with its one hard-wired remote asset (the sidebar's Redocly logo, which no option turns off)
    pointed at the service's own favicon; the test of the pages' request log fails if a new version adds another."""
    bundle = (docs_assets_dir() / REDOC_BUNDLE).read_bytes()
    return bundle.replace(REDOC_REMOTE_LOGO, f"{DOCS_ASSETS}/favicon.png".encode())


class UiFiles(StaticFiles):
    """The UI's static files, each sent with the content security policy (and no caching of stale versions)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_ui(app: FastAPI) -> None:
    """Mount the UI at ``/ui/`` and serve ``/docs`` and ``/redoc`` from packaged assets (FastAPI's documented way of
    self-hosting them: the app is created with ``docs_url=None, redoc_url=None`` and these routes replace them).

    The pages themselves hold no data: every number they show comes from the API, which checks the key."""
    app.mount("/ui", UiFiles(directory=UI_DIR, html=True), name="ui")

    @app.get(f"{DOCS_ASSETS}/{REDOC_BUNDLE}", include_in_schema=False)
    async def redoc_bundle() -> Response:  # before the mount, which would serve the file as shipped
        return Response(redoc_offline(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_assets_dir()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth_redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth_redirect,
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            # the validator badge would load an image from the Swagger project's server
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(oauth_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
