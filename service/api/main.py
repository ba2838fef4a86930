"""The FastAPI application: routers, error mapping, startup reconciliation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from service.api.auth import BodySizeLimitMiddleware, authorize
from service.api.routes import (
    budgets,
    curvature,
    health,
    recommendations,
    schedules,
    studies,
)
from service.config import Settings, get_settings
from service.errors import PhituneError
from service.launch.runner import Runner, make_runner
from service.schemas import TERMINAL_STATUSES
from service.store import Store, utcnow

logger = logging.getLogger(__name__)

#: A study accepted less than this long ago without a driver is still being launched.
LAUNCH_WINDOW = timedelta(seconds=60)


def reconcile(store: Store, runner: Runner, max_launches: int = 3) -> list[str]:
    """Studies left ``queued``/``running`` by an API or driver that died: relaunch a driver for
    those whose driver is gone. A relaunched driver restores the study's Tune experiments
    (finished trials are kept, the searcher resumes), so nothing finished is re-run. A study
    whose driver died ``max_launches`` times is failed with the end of its log instead of
    being relaunched forever. Returns the ids relaunched."""
    relaunched = []
    for status in ("queued", "running"):
        rows, _ = store.list_studies(status=status, limit=10_000)
        for row in rows:
            if runner.driver_alive(row.driver_pid, row.driver_job_id):
                continue
            if (row.driver_pid is None and row.driver_job_id is None
                    and utcnow() - row.created_at < LAUNCH_WINDOW):
                continue  # just accepted: the request that created it is launching it
            # the row may have moved on while we looked (driver finished, user cancelled)
            current = store.get_study(row.id)
            if current is None or current.status in TERMINAL_STATUSES:
                continue
            runner.cleanup(row.driver_pid, row.driver_job_id)
            if (current.launches or 0) >= max_launches:
                tail = runner.log_tail(row.id, row.driver_job_id).strip().splitlines()[-5:]
                store.finish_study(row.id, "failed", error=(
                    f"driver died {current.launches} times (max_launches); last log lines: "
                    + " | ".join(tail)))
                logger.error("study %s: driver died %d times, failed", row.id, current.launches)
                continue
            logger.warning("study %s: driver %s is gone, relaunching", row.id,
                           row.driver_job_id or row.driver_pid)
            runner.launch(row.id)
            relaunched.append(row.id)
    return relaunched


async def _reconcile_forever(store: Store, runner: Runner, settings: Settings) -> None:
    """Relaunch drivers that die while the API runs (not only at startup)."""
    while True:
        await asyncio.sleep(settings.reconcile_interval_s)
        try:
            await asyncio.to_thread(reconcile, store, runner, settings.max_launches)
        except Exception:  # keep watching; the store may be briefly unavailable
            logger.exception("reconcile failed")


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
        runner = make_runner(settings, store)
        app.state.settings, app.state.store, app.state.runner = settings, store, runner
        reconcile(store, runner, settings.max_launches)
        # import the registries now, not in the first POST (seconds: torch, plugins)
        await asyncio.to_thread(studies.registry_names)
        watcher = (asyncio.create_task(_reconcile_forever(store, runner, settings))
                   if settings.reconcile_interval_s > 0 else None)
        yield
        if watcher is not None:
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
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)

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
    return app
