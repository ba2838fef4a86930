"""The FastAPI application: routers, error mapping, the lifecycle loop (queue + reconcile)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from service.api.auth import BodySizeLimitMiddleware, TrustedHostMiddleware, authorize
from service.api.routes import (
    budgets,
    curvature,
    health,
    leases,
    library,
    recommendations,
    schedules,
    studies,
)
from service.api.strict_json import StrictJSONMiddleware
from service.api.study_json import StudyJSON
from service.config import Settings, get_settings
from service.errors import PhituneError
from service.launch.lifecycle import reconcile, start_queued
from service.launch.runner import Runner, make_runner
from service.store import Store

logger = logging.getLogger(__name__)

async def _lifecycle_forever(store: Store, runner: Runner, settings: Settings) -> None:
    """Start queued jobs as slots free up (every ``queue_poll_s``) and relaunch drivers that
    die while the API runs (every ``reconcile_interval_s``; 0: at startup only)."""
    loop = asyncio.get_running_loop()
    next_reconcile = loop.time() + settings.reconcile_interval_s
    while True:
        await asyncio.sleep(settings.queue_poll_s)
        try:
            if settings.reconcile_interval_s > 0 and loop.time() >= next_reconcile:
                next_reconcile = loop.time() + settings.reconcile_interval_s
                await asyncio.to_thread(reconcile, store, runner, settings)
            else:
                await asyncio.to_thread(start_queued, store, runner, settings)
        except Exception:  # keep watching; the store may be briefly unavailable
            logger.exception("reconcile failed")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Fails (ValueError) before serving anything when the configuration would
    expose an unauthenticated API on the network, names an unreadable token file or a tracker
    whose package is missing."""
    settings = settings or get_settings()
    api_token = settings.check_exposure()
    settings.check_trackers()
    if api_token is None:
        logger.warning("no API token configured: mutating routes are open (loopback only)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.sqlalchemy_url)
        runner = make_runner(settings, store)
        app.state.settings, app.state.store, app.state.runner = settings, store, runner
        reconcile(store, runner, settings)
        # import the registries and Ray Tune now, not in the first POST (seconds)
        await asyncio.to_thread(studies.warm_up)
        watcher = asyncio.create_task(_lifecycle_forever(store, runner, settings))
        yield
        watcher.cancel()
        store.engine.dispose()

    app = FastAPI(
        title="phitune",
        version="0.1.0",
        summary="Tune the UBA learning-rate schedule (φ, phases) for a fixed iteration budget.",
        lifespan=lifespan,
        dependencies=[Depends(authorize)],
    )
    app.state.settings, app.state.api_token = settings, api_token
    app.state.study_json = StudyJSON(settings)  # renders the polled study reads
    # outermost last: Host check, then the size limit, then strict JSON on a bounded body
    app.add_middleware(StrictJSONMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    if api_token is None:  # loopback mode: no DNS rebinding into the open API
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)

    @app.exception_handler(PhituneError)
    async def _phitune_error(_: Request, exc: PhituneError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail()}, status_code=exc.status_code,
                            headers=exc.headers)

    app.include_router(health.router)
    app.include_router(studies.router)
    app.include_router(schedules.router)
    app.include_router(budgets.router)
    app.include_router(recommendations.router)
    app.include_router(curvature.router)
    app.include_router(leases.router)
    app.include_router(library.router)
    return app
