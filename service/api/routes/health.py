"""Liveness and readiness probes.

``/healthz``: the process answers. ``/readyz``: studies can be accepted *and run*: the store
answers and, when the service is configured for a Ray cluster (``PHITUNE_RAY_ADDRESS``), the
cluster's GCS port (and, for the Ray Job runner, its dashboard/Jobs port) accepts
connections. A TCP connect, not ``ray.init``: no Ray inside a request, and a probe must stay
cheap.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import SettingsDep, StoreDep
from service.api.watch import optuna_storage, ray_mode
from service.schemas import RayInfo, ServiceInfo
from service.store import StudyRow

router = APIRouter(tags=["health"])

#: Default ports when an address omits one: GCS, Ray Client, dashboard/Jobs.
RAY_GCS_PORT, RAY_CLIENT_PORT, RAY_DASHBOARD_PORT = 6379, 10001, 8265


def parse_ray_address(address: str) -> tuple[str, int] | None:
    """``host:port``, ``ray://host:port`` or ``http(s)://host:port`` → (host, port); ``auto``
    and ``local`` (resolved by Ray on this machine) → None."""
    if address in ("auto", "local", ""):
        return None
    if "://" in address:
        parts = urlsplit(address)
        default = {"ray": RAY_CLIENT_PORT, "http": RAY_DASHBOARD_PORT,
                   "https": RAY_DASHBOARD_PORT}.get(parts.scheme, RAY_GCS_PORT)
        if not parts.hostname:
            return None
        return parts.hostname, parts.port or default
    host, _, port = address.rpartition(":")
    if not host:
        return address, RAY_GCS_PORT
    return host.strip("[]"), int(port)


def tcp_reachable(host: str, port: int, timeout: float = 1.0) -> str:
    """"ok" or the reason the connection failed."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "ok"
    except OSError as exc:
        return f"{host}:{port} unreachable: {exc.strerror or exc}"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "store or Ray cluster unreachable"}})
def readyz(store: StoreDep, settings: SettingsDep) -> JSONResponse:
    """The store answers and the configured Ray cluster is reachable (studies can run)."""
    checks: dict[str, str] = {}
    try:
        store.ping()
        checks["store"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
        checks["store"] = f"unavailable: {type(exc).__name__}"
    for name, address in (("ray", settings.ray_address),
                          ("ray_jobs", settings.ray_dashboard_address
                           if settings.runner == "ray-job" else None)):
        if not address:
            continue
        try:
            target = parse_ray_address(address)
        except ValueError:
            checks[name] = f"bad address {address!r}"
            continue
        if target is not None:
            checks[name] = tcp_reachable(*target)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", **checks},
                        status_code=200 if ok else 503)


@router.get("/v1/info", response_model=ServiceInfo)
def info(store: StoreDep, settings: SettingsDep) -> ServiceInfo:
    """The Ray head every driver uses (its dashboard), the runner, where TensorBoard and
    optuna-dashboard find the studies, and the queue's fill."""
    mode = ray_mode(settings)
    return ServiceInfo(
        ray=RayInfo(mode=mode, address=settings.ray_address,  # type: ignore[arg-type]
                    dashboard_url=settings.ray_dashboard_address),
        runner=settings.runner, tensorboard_root=str(settings.ray_results_path),
        optuna_storage=optuna_storage(settings),
        max_concurrent_studies=settings.max_concurrent_studies,
        max_queued_studies=settings.max_queued_studies,
        studies_running=store.count_status(StudyRow, "running"),
        studies_queued=store.count_status(StudyRow, "queued"))
