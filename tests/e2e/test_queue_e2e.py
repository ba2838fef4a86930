"""The queue end to end: concurrent POSTs over ``PHITUNE_MAX_CONCURRENT_STUDIES`` leave exactly
the cap running and the rest ``queued``; the queued ones start in submission order as slots
free, never more than the cap at once, and all finish. SQLite and PostgreSQL (the cap is a
claim in the database, so this holds for several API replicas too). Real server, real drivers
on the shared Ray head ``phitune serve`` starts, real training on digits with tiny budgets."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import httpx
import pytest

from service.cli.demo import _stop, free_port, start_api
from service.client import PhiTuneClient
from service.launch.runner import kill_session
from service.store import Store
from tests.service.pg import fresh_database, throwaway_postgres

pytestmark = pytest.mark.e2e

CAP, N = 2, 4
SPEC: dict[str, Any] = {
    "model": "mlp", "dataset": "digits",
    "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9}, "batch_size": 64,
    "budget": {"steps": 40}, "num_trials": 1, "max_concurrent_trials": 1,
    "search": {"phi": {"min": 0.5, "max": 20.0}, "phases": {"min": 1, "max": 1}},
    "eval_every": 20, "early_stopping": False, "seed": 1,
}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'phitune.db'}"
        return
    url = os.environ.get("PHITUNE_TEST_POSTGRES_URL")
    if url:
        yield fresh_database(url)
        return
    with throwaway_postgres() as server:
        yield fresh_database(server)


def test_concurrent_submits_over_the_cap_queue_and_all_finish(database_url, tmp_path):
    env = {"PHITUNE_DATABASE_URL": database_url, "PHITUNE_MAX_CONCURRENT_STUDIES": str(CAP),
           "PHITUNE_QUEUE_POLL_S": "0.5", "PHITUNE_RECONCILE_INTERVAL_S": "0",
           "PHITUNE_LOCAL_RAY": "shared", "PHITUNE_RAY_NUM_CPUS": "2",
           "PHITUNE_RAY_HEAD_PORT": str(free_port()),
           "PHITUNE_RAY_HEAD_DASHBOARD_PORT": str(free_port()),
           "PHITUNE_DATASET_DIR": os.environ.get("PHITUNE_DATASET_DIR", str(tmp_path / "data"))}
    proc, url = start_api(tmp_path, None, tmp_path / "api.log", extra_env=env)
    store = Store(database_url, migrate=False)
    try:
        with PhiTuneClient(url) as client:
            info = httpx.get(f"{url}/v1/info", timeout=60).json()
            assert info["ray"]["mode"] == "shared", info
            ids: list[str] = []
            barrier = threading.Barrier(N)

            def submit(i: int) -> None:
                barrier.wait()
                ids.append(client.submit({**SPEC, "name": f"q{i}", "seed": i}).id)

            threads = [threading.Thread(target=submit, args=(i,)) for i in range(N)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(ids) == N
            statuses = [store.get_study(i).status for i in ids]
            assert statuses.count("running") == CAP and statuses.count("queued") == N - CAP, \
                statuses

            most = 0
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                rows = [store.get_study(i) for i in ids]
                running = sum(r.status == "running" for r in rows)
                most = max(most, running)
                assert running <= CAP, [r.status for r in rows]
                if all(r.status in ("succeeded", "failed", "cancelled") for r in rows):
                    break
                time.sleep(0.5)
            rows = sorted((store.get_study(i) for i in ids), key=lambda r: r.created_at)
            logs = {r.id: (tmp_path / "logs" / f"{r.id}.log") for r in rows}
            assert all(r.status == "succeeded" for r in rows), [
                (r.status, r.error, logs[r.id].read_text()[-2000:] if logs[r.id].exists()
                 else "") for r in rows]
            assert most == CAP
            queued_later = [r for r in rows if r.started_at > min(x.finished_at for x in rows)]
            assert len(queued_later) >= N - CAP, "the queued ones started once a slot freed"
            order = [r.id for r in sorted(queued_later, key=lambda r: r.started_at)]
            assert order == [r.id for r in queued_later], "in submission order"
            dashboards = {client.get(i).dashboard_url for i in ids}
            assert len(dashboards) == 1 and dashboards.pop() == info["ray"]["dashboard_url"], \
                "every study on the one shared dashboard"
    finally:
        _stop(proc)
        sid = tmp_path / "ray-head.sid"
        if sid.exists():
            kill_session(int(sid.read_text()))
