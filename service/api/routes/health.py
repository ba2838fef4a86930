"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import StoreDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(store: StoreDep) -> JSONResponse:
    """The store answers (studies can be accepted)."""
    try:
        store.ping()
    except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
        return JSONResponse({"status": "unavailable", "store": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok", "store": "ok"})
