"""``phitune demo``: the whole product on one machine in a few minutes.

Starts a local Ray head (with its dashboard) and the API server as real processes, submits a
small real study through the client library, follows it, prints the best schedule and tears
everything down. It is what ``make demo`` runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")


def demo_spec(steps: int, trials: int) -> dict[str, Any]:
    """A small real study: an MLP on Fashion-MNIST (10k training images) when the Debian
    package is installed, else on scikit-learn's 8×8 digits."""
    if (FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").exists():
        dataset, kwargs = "fashion_mnist", {"subset": 10_000}
    else:
        dataset, kwargs = "digits", {}
    return {
        "name": f"demo: mlp on {dataset}",
        "model": "mlp",
        "dataset": dataset,
        "dataset_kwargs": kwargs,
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "batch_size": 128,
        "budget": {"steps": steps},
        "search": {"phi": {"min": 0.1, "max": 50}, "phases": {"min": 1, "max": 3}},
        "num_trials": trials,
        "max_concurrent_trials": 2,
        "eval_every": max(1, steps // 8),
        "seed": 0,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not open port {port} within {timeout} s")


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _ray_bin() -> str:
    return shutil.which("ray") or str(Path(sys.executable).parent / "ray")


def ensure_ray_token() -> None:
    """Create Ray's auth token (``~/.ray/auth_token``) if there is none yet, as ``ray start``
    would; clients (the driver, the Jobs API, the dashboard) then read the same token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return
    subprocess.run([_ray_bin(), "get-auth-token", "--generate"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)


def start_ray_head(log: Path, num_cpus: int | None = None) -> tuple[subprocess.Popen, str, str]:
    """``ray start --head --block`` as a child process group; returns (proc, address, dashboard)."""
    ray_bin = _ray_bin()
    ensure_ray_token()
    port, dash = free_port(), free_port()
    cmd = [ray_bin, "start", "--head", "--block", f"--port={port}",
           f"--num-cpus={num_cpus or os.cpu_count() or 1}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", "--include-dashboard=true", "--disable-usage-stats",
           # Ray's default 52365 is taken by any other Ray on the machine; without its agent
           # the head cannot run jobs ("No available agent to submit job")
           f"--dashboard-agent-listen-port={free_port()}"]
    # token auth explicitly on: an open Ray port is remote code execution
    env = dict(os.environ, RAY_AUTH_MODE="token")
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    wait_for_port(port, proc, "ray head")
    wait_for_port(dash, proc, "ray dashboard")
    return proc, f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"


def start_api(data_dir: Path, ray_address: str | None, log: Path,
              extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, PHITUNE_DATA_DIR=str(data_dir.absolute()), PYTHONUNBUFFERED="1")
    if ray_address:
        env["PHITUNE_RAY_ADDRESS"] = ray_address
        env["RAY_AUTH_MODE"] = "token"
    env.update(extra_env or {})
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port),
             "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
    wait_for_port(port, proc, "API server")
    return proc, f"http://127.0.0.1:{port}"


def run_demo(data_dir: Path, steps: int = 400, trials: int = 8) -> int:
    from service.cli.format import format_best, format_winner
    from service.client import PhiTuneClient

    data_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        print("starting a local Ray head with its dashboard ...", flush=True)
        ray_proc, address, dashboard = start_ray_head(data_dir / "ray-head.log")
        stack.callback(_stop, ray_proc)
        print(f"Ray dashboard: {dashboard}", flush=True)
        api_proc, url = start_api(data_dir, address, data_dir / "api.log")
        stack.callback(_stop, api_proc)
        print(f"phitune API: {url}  (OpenAPI docs at {url}/docs)", flush=True)
        with PhiTuneClient(url) as client:
            study = client.submit(demo_spec(steps, trials))
            print(f"submitted study {study.id}: {study.name}", flush=True)
            study = client.wait(study.id, progress=True, poll=2.0)
            if study.status != "succeeded":
                print(f"study {study.status}: {study.error}", file=sys.stderr)
                return 1
            best = client.best(study.id)
            trials_ = client.trials(study.id).data
            result = client.result(study.id)
        print()
        # one row per run: a search candidate at its rung's horizon, or a finalist's extra seed
        print(f"{'trial':<12} {'kind':<9} {'horizon':>7} {'status':<11} {'phi':>8} {'phases':>6} "
              f"{'eta_max':>8} {'step':>6} metric")
        for t in sorted(trials_, key=lambda t: (t.budget_steps, t.params.get("kind") != "search",
                                                t.params.get("phi", 0), t.params.get("lr", 0))):
            value = t.metrics.get(best.metric)
            print(f"{t.trial_id:<12} {t.params.get('kind', 'search'):<9} {t.budget_steps:>7} "
                  f"{t.status:<11} {t.params.get('phi', 0):8.3f} {t.params.get('phases', 0):>6} "
                  f"{t.params.get('lr', 0):8.4g} {t.step:>6} "
                  f"{'' if value is None else f'{value:.4f}'}")
        print()
        print(format_best(best))
        advice = format_winner(result)
        if advice:
            print(advice)
        if result.compute is not None:
            print(f"compute: {result.compute.units:.2f} full-budget runs "
                  f"({result.compute.steps} optimizer steps, {result.method})")
        print(f"Ray dashboard (while it ran): {dashboard}")
        print(f"store: {data_dir / 'phitune.db'}; results: {data_dir / 'ray_results' / study.id}")
    return 0
