"""The FastAPI application: routers, error mapping, startup reconciliation."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from service.api.routes import health, schedules, studies
from service.auth import BodySizeLimitMiddleware, authorize
from service.config import Settings, get_settings
from service.errors import PhituneError
from service.runner import LocalProcessRunner
from service.store import Store

logger = logging.getLogger(__name__)


def reconcile(store: Store, runner: LocalProcessRunner) -> None:
    """Studies left ``queued``/``running`` by an API or driver that died: relaunch a driver for
    those whose driver is gone. A relaunched driver restores the study's Tune experiments
    (finished trials are kept, the searcher resumes), so nothing finished is re-run."""
    for status in ("queued", "running"):
        rows, _ = store.list_studies(status=status, limit=10_000)
        for row in rows:
            if not runner.is_alive(row.driver_pid):
                logger.warning("study %s: driver %s is gone, relaunching", row.id, row.driver_pid)
                runner.launch(row.id)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Fails (ValueError) before serving anything when the configuration would
    expose an unauthenticated API on the network or names an unreadable token file."""
    settings = settings or get_settings()
    api_token = settings.check_exposure()
    if api_token is None:
        logger.warning("no API token configured: mutating routes are open (loopback only)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.sqlalchemy_url)
        runner = LocalProcessRunner(settings, store)
        app.state.settings, app.state.store, app.state.runner = settings, store, runner
        reconcile(store, runner)
        yield
        store.engine.dispose()

    app = FastAPI(
        title="phitune",
        version="0.1.0",
        summary="Tune the UBA learning-rate schedule (φ, phases) for a fixed iteration budget.",
        lifespan=lifespan,
        dependencies=[Depends(authorize)],
    )
    app.state.settings, app.state.api_token = settings, api_token
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)

    @app.exception_handler(PhituneError)
    async def _phitune_error(_: Request, exc: PhituneError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail()}, status_code=exc.status_code,
                            headers=exc.headers)

    app.include_router(health.router)
    app.include_router(studies.router)
    app.include_router(schedules.router)
    return app
