"""A real 2-node Ray cluster (two ``ray start`` processes, token auth on), the study's driver
submitted as a Ray Job through ``JobSubmissionClient`` (``PHITUNE_RUNNER=ray-job``), and the
study's trials landing on both nodes (each node has 1 CPU, two trials run at once); a
curvature job runs as a Ray Job the same way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.cli.demo import _stop, ensure_ray_token, free_port, start_api, start_ray_head
from service.client import PhiTuneClient
from service.launch.kinds import CURVATURE
from service.launch.ray_jobs import ray_auth_headers
from service.store import Store

pytestmark = pytest.mark.e2e

TOKEN = "multinode-api-token"
SPEC = {
    "model": "mlp",
    "dataset": "digits",
    "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9},
    "batch_size": 64,
    "budget": {"steps": 90},
    "search": {"phi": {"min": 0.5, "max": 20.0}, "phases": {"min": 1, "max": 1}},
    "num_trials": 2,
    "max_concurrent_trials": 2,
    "early_stopping": False,
    "eval_every": 30,
    "seed": 5,
}


def start_worker(address: str, log: Path) -> subprocess.Popen:
    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    env = dict(os.environ, RAY_AUTH_MODE="token")
    with open(log, "ab") as out:
        return subprocess.Popen([ray_bin, "start", f"--address={address}", "--num-cpus=1",
                                 "--block", "--disable-usage-stats",
                                 f"--dashboard-agent-listen-port={free_port()}"], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)


def dashboard_get(dashboard: str, path: str, **params) -> dict:
    r = httpx.get(f"{dashboard}{path}", params=params, headers=ray_auth_headers(), timeout=30)
    r.raise_for_status()
    return r.json()


def alive_nodes(dashboard: str) -> list[dict]:
    data = dashboard_get(dashboard, "/api/v0/nodes", limit=100)
    return [n for n in data["data"]["result"]["result"] if n["state"] == "ALIVE"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ensure_ray_token()  # a fresh machine has none until the first token-auth cluster starts
    assert ray_auth_headers(), "no Ray auth token after `ray get-auth-token --generate`"
    logs = tmp_path_factory.mktemp("ray")
    head, address, dashboard = start_ray_head(logs / "head.log", num_cpus=1)
    worker = start_worker(address, logs / "worker.log")
    try:
        deadline = time.monotonic() + 120
        while len(alive_nodes(dashboard)) < 2:
            assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-3000:]
            assert worker.poll() is None, (logs / "worker.log").read_text()[-3000:]
            time.sleep(1)
        yield address, dashboard
    finally:
        _stop(worker)
        _stop(head)


def test_dashboard_refuses_requests_without_the_ray_token(cluster):
    """The Jobs API is remote code execution: the cluster must refuse anonymous clients."""
    _, dashboard = cluster
    r = httpx.get(f"{dashboard}/api/jobs/", timeout=30)
    assert r.status_code == 401
    r = httpx.get(f"{dashboard}/api/jobs/", headers={"Authorization": "Bearer wrong"},
                  timeout=30)
    assert r.status_code == 403


def test_study_as_ray_job_uses_both_nodes(cluster, tmp_path):
    address, dashboard = cluster
    env = {"PHITUNE_RUNNER": "ray-job", "PHITUNE_RAY_DASHBOARD_ADDRESS": dashboard,
           "PHITUNE_API_TOKEN": TOKEN, "PHITUNE_RECONCILE_INTERVAL_S": "0",
           "PHITUNE_DATASET_DIR": os.environ.get("PHITUNE_DATASET_DIR", str(tmp_path / "data"))}
    api, url = start_api(tmp_path, address, tmp_path / "api.log", extra_env=env)
    try:
        assert httpx.get(f"{url}/readyz").json() == {
            "status": "ok", "store": "ok", "ray": "ok", "ray_jobs": "ok"}
        with PhiTuneClient(url, token=TOKEN) as client:
            study = client.submit(SPEC)
            final = client.wait(study.id, timeout=480, poll=1.0)
            job_id = Store(f"sqlite:///{tmp_path / 'phitune.db'}",
                           migrate=False).get_study(study.id).driver_job_id
            assert final.status == "succeeded", (final.error,
                                                  dashboard_get(dashboard, f"/api/jobs/{job_id}"))
            trials = client.trials(study.id).data
        # the driver writes the result, then shuts Ray down and exits: the job ends after
        deadline = time.monotonic() + 120
        while (job := dashboard_get(dashboard, f"/api/jobs/{job_id}"))["status"] in (
                "PENDING", "RUNNING") and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        _stop(api)
    assert job_id == f"phitune-study-{study.id}-1"
    assert job["status"] == "SUCCEEDED" and job["entrypoint"].endswith(
        f"-m service.launch.study_driver {study.id}")
    assert len(trials) == 2 and all(t.status == "terminated" for t in trials)

    # where did the trials run? the state API keeps finished actors with their node
    actors = dashboard_get(dashboard, "/api/v0/actors", limit=1000, detail="true")
    trial_nodes = {a["node_id"] for a in actors["data"]["result"]["result"]
                   if a["class_name"] == "ImplicitFunc" and a.get("node_id")}
    assert len(trial_nodes) == 2, trial_nodes
    assert trial_nodes == {n["node_id"] for n in alive_nodes(dashboard)}


def alive_trial_actors(dashboard: str) -> list[dict]:
    actors = dashboard_get(dashboard, "/api/v0/actors", limit=1000, detail="true")
    return [a for a in actors["data"]["result"]["result"]
            if a["class_name"] == "ImplicitFunc" and a["state"] == "ALIVE"]


@pytest.mark.parametrize("runner", ["ray-job", "local"])
def test_cancel_stops_trials_on_the_cluster_within_10s(cluster, tmp_path, runner):
    """With a remote cluster the trials are not our child processes: a cancel must still stop
    them (ray-job: ``stop_job``; local driver: SIGTERM → ``ray.shutdown`` → the cluster kills
    the dead driver's actors)."""
    address, dashboard = cluster
    env = {"PHITUNE_RUNNER": runner, "PHITUNE_RAY_DASHBOARD_ADDRESS": dashboard,
           "PHITUNE_API_TOKEN": TOKEN, "PHITUNE_RECONCILE_INTERVAL_S": "0",
           "PHITUNE_DATASET_DIR": os.environ.get("PHITUNE_DATASET_DIR", str(tmp_path / "data"))}
    api, url = start_api(tmp_path, address, tmp_path / "api.log", extra_env=env)
    try:
        with PhiTuneClient(url, token=TOKEN) as client:
            study = client.submit({**SPEC, "budget": {"steps": 50_000}, "eval_every": 100})
            deadline = time.monotonic() + 240
            while len(alive_trial_actors(dashboard)) < 2:
                assert time.monotonic() < deadline, client.get(study.id)
                assert client.get(study.id).status in ("queued", "running")
                time.sleep(1)
            t0 = time.monotonic()
            assert client.cancel(study.id).status == "cancelled"
            while alive_trial_actors(dashboard):
                assert time.monotonic() - t0 < 10, alive_trial_actors(dashboard)
                time.sleep(0.2)
            elapsed = time.monotonic() - t0
            assert client.get(study.id).status == "cancelled"
    finally:
        _stop(api)
    print(f"{runner}: trials on the cluster stopped {elapsed:.2f} s after DELETE")
    if runner == "ray-job":
        job_id = f"phitune-study-{study.id}-1"
        deadline = time.monotonic() + 30
        while dashboard_get(dashboard, f"/api/jobs/{job_id}")["status"] != "STOPPED":
            assert time.monotonic() < deadline
            time.sleep(0.5)


def test_curvature_job_runs_as_a_ray_job(cluster, tmp_path):
    """Curvature jobs share the studies' runner: with ``PHITUNE_RUNNER=ray-job`` their driver
    is a Ray Job too (and it does not migrate the schema: the API did)."""
    address, dashboard = cluster
    env = {"PHITUNE_RUNNER": "ray-job", "PHITUNE_RAY_DASHBOARD_ADDRESS": dashboard,
           "PHITUNE_API_TOKEN": TOKEN, "PHITUNE_RECONCILE_INTERVAL_S": "0",
           "PHITUNE_DATASET_DIR": os.environ.get("PHITUNE_DATASET_DIR", str(tmp_path / "data"))}
    api, url = start_api(tmp_path, address, tmp_path / "api.log", extra_env=env)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        r = httpx.post(f"{url}/v1/curvature", headers=auth, timeout=30, json={
            "model": "mlp", "dataset": "digits", "num_batches": 1, "batch_size": 64,
            "lanczos_steps": 5, "num_probes": 1})
        assert r.status_code == 202, r.text
        job = r.json()
        deadline = time.monotonic() + 300
        while job["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(1)
            r = httpx.get(f"{url}/v1/curvature/{job['id']}", headers=auth, timeout=30)
            assert r.status_code == 200, r.text
            job = r.json()
    finally:
        _stop(api)
    ray_job = Store(f"sqlite:///{tmp_path / 'phitune.db'}",
                    migrate=False).get_job(CURVATURE.table, job["id"]).driver_job_id
    assert ray_job == f"phitune-curvature-{job['id']}-1"
    assert job["status"] == "succeeded", (job["error"],
                                          dashboard_get(dashboard, f"/api/jobs/{ray_job}"))
    assert job["report"] and job["suggestions"]
    assert dashboard_get(dashboard, f"/api/jobs/{ray_job}")["entrypoint"].endswith(
        f"-m service.launch.curvature_driver {job['id']}")
