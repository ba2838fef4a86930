"""One long-lived local Ray head shared by every driver: one dashboard at a stable address.

Without ``PHITUNE_RAY_ADDRESS``, ``phitune serve`` attaches to the head listening on
``127.0.0.1:<ray_head_port>`` or starts one (``ray start --head`` in its own session, so it
outlives the API like the drivers do), then hands its address to the API and every driver as
if it were a cluster. The head is announced on 127.0.0.1, its dashboard (and Jobs API) bound
to 127.0.0.1:<ray_head_dashboard_port>, and token auth is on (an open Ray port runs any code).
``PHITUNE_LOCAL_RAY=per-study`` keeps the older mode: each driver starts its own local Ray.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from service.config import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayHead:
    """Where the shared head answers, and whether this call started it."""

    address: str
    dashboard_url: str
    started: bool
    session_id: int | None = None


def ray_bin() -> str:
    return shutil.which("ray") or str(Path(sys.executable).parent / "ray")


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def head_sid_file(settings: Settings) -> Path:
    """Session id of the head this data dir's ``phitune serve`` started (its processes)."""
    return settings.data_dir.absolute() / "ray-head.sid"


def ensure_head(settings: Settings, timeout: float = 120.0) -> RayHead:
    """Attach to the shared head, or start it when nothing listens on its port."""
    address = f"127.0.0.1:{settings.ray_head_port}"
    dashboard = f"http://127.0.0.1:{settings.ray_head_dashboard_port}"
    if _port_open(settings.ray_head_port):
        logger.info("attaching to the Ray head at %s (dashboard %s)", address, dashboard)
        return RayHead(address, dashboard, started=False)
    if os.environ.get("RAY_AUTH_TOKEN") is None:  # the token `ray start` and clients share
        subprocess.run([ray_bin(), "get-auth-token", "--generate"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
    cmd = [ray_bin(), "start", "--head", f"--port={settings.ray_head_port}",
           "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={settings.ray_head_dashboard_port}", "--include-dashboard=true",
           f"--ray-client-server-port={_free_port()}", "--disable-usage-stats",
           # Ray's default agent port (52365) belongs to whichever Ray took it first; without
           # its agent a head cannot run Ray Jobs
           f"--dashboard-agent-listen-port={_free_port()}"]
    if settings.ray_num_cpus is not None:
        cmd.append(f"--num-cpus={settings.ray_num_cpus}")
    settings.logs_path.mkdir(parents=True, exist_ok=True)
    log = settings.logs_path / "ray-head.log"
    env = dict(os.environ, RAY_AUTH_MODE="token")
    logger.info("starting the shared Ray head: %s", " ".join(cmd))
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    head_sid_file(settings).write_text(str(proc.pid))
    code = proc.wait(timeout)
    if code != 0:
        raise RuntimeError(f"`ray start --head` failed with status {code}; see {log}")
    deadline = time.monotonic() + timeout
    while not (_port_open(settings.ray_head_port)
               and _port_open(settings.ray_head_dashboard_port)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray head did not open {address} and {dashboard} within "
                               f"{timeout:g} s; see {log}")
        time.sleep(0.3)
    logger.info("Ray head at %s, dashboard %s", address, dashboard)
    return RayHead(address, dashboard, started=True, session_id=proc.pid)


def with_shared_head(settings: Settings) -> Settings:
    """The settings the API and its drivers run with: unchanged with a configured cluster or
    ``local_ray=per-study``, else pointed at the shared head (attached or started)."""
    if settings.ray_address or settings.local_ray != "shared":
        return settings
    head = ensure_head(settings)
    update = {"ray_address": head.address}
    if not settings.ray_dashboard_address:
        update["ray_dashboard_address"] = head.dashboard_url
    return settings.model_copy(update=update)
