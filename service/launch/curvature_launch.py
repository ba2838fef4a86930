"""Start a curvature job's driver process (the local counterpart of a study's runner)."""

from __future__ import annotations

import subprocess
import sys

from service.config import Settings
from service.launch.env import driver_env
from service.store import Store
from service.store.curvature_jobs import update_job


def launch_job(settings: Settings, store: Store, job_id: str) -> int:
    settings.logs_path.mkdir(parents=True, exist_ok=True)
    with open(settings.logs_path / f"curvature-{job_id}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.launch.curvature_driver", job_id], stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=driver_env(settings),
            start_new_session=True)
    update_job(store, job_id, driver_pid=proc.pid)
    return proc.pid
