"""Run each job's driver as a Ray Job (``PHITUNE_RUNNER=ray-job``): studies and curvature jobs.

On a real cluster the API should not host drivers: a Ray Job runs ``python -m
service.launch.study_driver <id>`` (or ``curvature_driver``) on the cluster (head node by
default), survives the API, and is stopped with ``stop_job`` (SIGTERM, then SIGKILL after
Ray's grace period). The Jobs API runs arbitrary
commands, so the cluster must use token auth (``RAY_AUTH_MODE=token``) and its dashboard port
must never be reachable by untrusted clients; we send the cluster token as a bearer header.

The job needs the store and the storage path too: ``PHITUNE_DATABASE_URL`` must be a database
the cluster can reach (PostgreSQL, not an API-local SQLite file) and ``PHITUNE_DATA_DIR`` a
path every node shares (NFS/EFS/a PVC), because Tune's ``storage_path`` lives under it.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.config import Settings
from service.launch.env import driver_env
from service.launch.kinds import JOB_MARKER, DriverRef, JobKind, LaunchDeferred, marker
from service.schemas import TERMINAL_STATUSES
from service.store import Store

logger = logging.getLogger(__name__)

#: Environment a job's driver gets (the rest of the API's environment stays with the API).
FORWARDED_PREFIXES = ("PHITUNE_", "TUNE_", "RAY_AUTH_MODE", "PYTHONUNBUFFERED")
ACTIVE_JOB_STATES = frozenset({"PENDING", "RUNNING"})
#: How long a submit waits for the head's job agent to come up before the job goes back to the
#: queue (a request must not hang on it).
AGENT_WAIT_S = 5.0


def ray_auth_headers() -> dict[str, str]:
    """``Authorization: Bearer <token>`` for a token-auth cluster: ``RAY_AUTH_TOKEN``, else the
    file ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` (what ``ray start`` uses)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
        try:
            token = path.read_text().strip()
        except OSError:
            token = ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def job_env(settings: Settings) -> dict[str, str]:
    """The driver's settings, explicitly; Ray itself sets ``RAY_ADDRESS`` inside a job, so the
    driver connects with ``address="auto"``."""
    env = {k: v for k, v in driver_env(settings).items() if k.startswith(FORWARDED_PREFIXES)}
    env["PHITUNE_RAY_ADDRESS"] = "auto"
    env.pop("PHITUNE_RAY_NUM_CPUS", None)
    return env


class RayJobRunner:
    """:class:`service.launch.runner.Runner` over the Ray Jobs API (``JobSubmissionClient``),
    for studies and curvature jobs alike."""

    def __init__(self, settings: Settings, store: Store, client: Any | None = None) -> None:
        if not settings.ray_dashboard_address:
            raise ValueError("PHITUNE_RUNNER=ray-job needs PHITUNE_RAY_DASHBOARD_ADDRESS "
                             "(http://<head>:8265)")
        self.settings = settings
        self.store = store
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.settings.ray_dashboard_address,
                                               headers=ray_auth_headers())
        return self._client

    def launch(self, kind: JobKind, job_id: str) -> str:
        row = self.store.get_job(kind.table, job_id)
        attempt = (row.launches if row else 0) + 1
        python = self.settings.ray_job_python or sys.executable
        env = job_env(self.settings)
        env[JOB_MARKER] = marker(kind, job_id)
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                submission = self.client.submit_job(
                    entrypoint=shlex.join(kind.entrypoint(python, job_id)),
                    submission_id=f"phitune-{kind.name}-{job_id}-{attempt}",
                    runtime_env={"env_vars": env},
                    metadata={"phitune_kind": kind.name, "phitune_id": job_id},
                )
                break
            except RuntimeError as exc:
                # a head that just started has no job agent yet ("try again later")
                if "No available agent" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise LaunchDeferred(str(exc)) from exc
                time.sleep(1.0)
        self.store.record_launch(job_id, job_id=submission, table=kind.table)
        logger.info("%s %s: driver submitted as Ray Job %s", kind.name, job_id, submission)
        row = self.store.get_job(kind.table, job_id)
        if row is not None and row.status in TERMINAL_STATUSES:  # a cancel raced the submit
            self.cancel(kind, job_id, DriverRef(job_id=submission))
        return str(submission)

    def cancel(self, kind: JobKind, job_id: str, driver: DriverRef,
               after: Callable[[], None] | None = None) -> None:
        """``stop_job`` (SIGTERM, then SIGKILL after Ray's grace period); ``after`` runs in a
        background thread once the job is no longer pending or running."""
        if driver.job_id is not None:
            try:
                self.client.stop_job(driver.job_id)
            except Exception:  # the job may be gone already; the job is cancelled either way
                logger.exception("%s %s: stop_job(%s) failed", kind.name, job_id,
                                 driver.job_id)
        if after is not None:
            threading.Thread(target=self._after_stop, args=(kind, job_id, driver, after),
                             daemon=True, name=f"cancel-{job_id[:8]}").start()

    def _after_stop(self, kind: JobKind, job_id: str, driver: DriverRef,
                    after: Callable[[], None]) -> None:
        deadline = time.monotonic() + self.settings.cancel_grace_s + 30
        while self.driver_alive(driver) and time.monotonic() < deadline:
            time.sleep(0.5)
        try:
            after()
        except Exception:  # noqa: BLE001 - reconcile retries; the cancel stands
            logger.exception("%s %s: finalising after cancel failed", kind.name, job_id)

    def driver_alive(self, driver: DriverRef) -> bool:
        """A job that is pending or running; an unreachable Jobs API counts as alive so a
        dashboard blip never launches a second driver."""
        if driver.job_id is None:
            return False
        try:
            status = self.client.get_job_status(driver.job_id)
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                return False
            logger.warning("cannot read Ray Job %s: %s", driver.job_id, exc)
            return True
        except Exception as exc:  # noqa: BLE001 - connection errors: assume alive
            logger.warning("cannot read Ray Job %s: %s", driver.job_id, exc)
            return True
        return str(getattr(status, "value", status)) in ACTIVE_JOB_STATES

    def cleanup(self, kind: JobKind, job_id: str, driver: DriverRef) -> None:
        """Ray tears a finished job's processes down itself."""

    def log_tail(self, kind: JobKind, job_id: str, driver: DriverRef,
                 chars: int = 2000) -> str:
        if driver.job_id is None:
            return ""
        try:
            return str(self.client.get_job_logs(driver.job_id))[-chars:]
        except Exception:  # noqa: BLE001
            return ""
