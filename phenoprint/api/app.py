"""The FastAPI application: ``create_app(settings)`` wires routers, errors, limits and metrics; the lifespan loads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING

import anyio.to_thread
from fastapi import Depends, FastAPI, Security
from starlette.routing import BaseRoute

from phenoprint import __version__
from phenoprint.api.auth import ApiKeyMiddleware
from phenoprint.api.deps import api_key_scheme, require_api_key
from phenoprint.api.errors import UNAUTHORIZED, install_error_handlers
from phenoprint.api.limits import BodyLimitMiddleware
from phenoprint.api.metrics import MetricsMiddleware, ServiceMetrics
from phenoprint.api.routers import experiments, health, plates, predictions, preview, sirnas, wells
from phenoprint.api.settings import Settings, get_settings
from phenoprint.api.state import start_service
from phenoprint.api.ui import install_ui

if TYPE_CHECKING:  # the model is loaded and run in phenoprint.api.state, the one API module that imports torch
    from phenoprint.embedder.inference import LoadedModel

log = logging.getLogger(__name__)

DESCRIPTION = """\
Name the siRNA of an RxRx1-style Cell Painting well across experimental batches.

Post a well's channel PNGs (6 per site, 1 or 2 sites, named `…_s<site>_w<channel>.png` as in the release) to
`/classify` with its experiment: the well is embedded by the 6-channel model, centred with the experiment's own
control-well statistics, and ranked against the experiment's index. When `PHENOPRINT_API_KEY` is set, the data
endpoints need it in the `X-API-Key` header.

A plate viewer of the served experiments and their predictions (`phenoprint predict`) is at [/ui/](/ui/).
"""


def app_settings(app: FastAPI) -> Settings:
    """The settings an app runs with: the override tests install, else the process's (from the environment)."""
    provider = app.dependency_overrides.get(get_settings, get_settings)
    return provider()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model and the indexes (in a worker thread), run the micro-batcher and the index reloader."""
    settings = app_settings(app)
    service = await anyio.to_thread.run_sync(partial(start_service, settings, app.state.metrics, app.state.model))
    async with service.batcher:
        await service.warm_up()
        reloader = None
        if settings.reload_interval_s > 0:
            reloader = asyncio.create_task(service.reload_forever(settings.reload_interval_s), name="index-reloader")
        app.state.service = service
        try:
            yield
        finally:
            app.state.service = None
            if reloader is not None:
                reloader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reloader


def create_app(settings: Settings | None = None, *, model: LoadedModel | None = None) -> FastAPI:
    """Build the app; nothing is loaded until its lifespan starts (``uvicorn`` or ``with TestClient(app)``).

    Args:
        settings: what to serve and how; None reads ``PHENOPRINT_*`` environment variables (:func:`get_settings`).
            Given settings are installed as ``app.dependency_overrides[get_settings]``, which tests may replace.
        model: the model to serve, already loaded (``phenoprint serve`` loads it before binding the port, so that a
            bad run directory is one clear error rather than a startup traceback); None loads ``settings.model``.
    """
    app = FastAPI(
        title="phenoprint",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from install_ui, with their assets served from the package
        redoc_url=None,
        openapi_tags=[
            {"name": "wells", "description": "classify or embed one well from its images"},
            {"name": "experiments", "description": "the per-experiment indexes being served"},
            {"name": "sirnas", "description": "siRNA lookup"},
            {"name": "preview", "description": "RGB composites of sites"},
            {"name": "operations", "description": "health, readiness and metrics"},
        ],
    )
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    app.state.service = None
    app.state.model = model
    app.state.metrics = ServiceMetrics()
    install_error_handlers(app)
    guarded: list[BaseRoute] = []
    app.add_middleware(BodyLimitMiddleware, max_bytes=lambda: app_settings(app).max_upload_bytes)
    app.add_middleware(ApiKeyMiddleware, key=lambda: app_settings(app).api_key, guarded=lambda: guarded)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: it also counts 401s and 413s
    auth = [Depends(require_api_key)]
    if app_settings(app).api_key is not None:  # declare the key in the OpenAPI schema only when one is needed
        auth.append(Security(api_key_scheme))
    before = len(app.router.routes)
    data_routers = (wells.router, experiments.router, predictions.router, plates.router, sirnas.router, preview.router)
    for router in data_routers:
        app.include_router(router, dependencies=auth, responses=UNAUTHORIZED)
    guarded += app.router.routes[before:]  # the data routes: the middleware checks the key before their body
    app.include_router(health.router)
    install_ui(app)
    return app
