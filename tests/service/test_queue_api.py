"""The queue through the HTTP API (real app, real store): over the concurrency cap a submit is
``queued`` (202), not refused; 429 only when the queue is full; cancelling a queued study never
starts it; every study response names where to watch it; ``/v1/info`` names the Ray head.

The one slot is held by a study whose "driver" is a ``sleep`` in its own session, so nothing
here starts a real driver."""

from __future__ import annotations

import subprocess
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.config import Settings
from service.launch.runner import process_start
from service.store import Store, StudyRow
from tests.servers import app_with_the_only_slot_held

SPEC: dict[str, Any] = {"model": "mlp", "dataset": "digits", "budget": {"steps": 100},
                        "num_trials": 2}


@pytest.fixture()
def client(tmp_path):
    settings = Settings(data_dir=tmp_path, max_concurrent_studies=1, max_queued_studies=2,
                        reconcile_interval_s=0, queue_poll_s=0.2, local_ray="per-study",
                        ray_dashboard=False)
    with app_with_the_only_slot_held(settings, SPEC) as (c, _, running_id):
        yield c, settings, running_id


def test_submits_over_the_cap_queue_and_only_a_full_queue_is_429(client):
    c, settings, running_id = client
    ids = []
    for i in range(2):
        r = c.post("/v1/studies", json={**SPEC, "name": f"q{i}"})
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "queued"
        ids.append(r.json()["id"])
    r = c.post("/v1/studies", json=SPEC)
    assert r.status_code == 429
    detail = r.json()["detail"]
    assert "queue is full" in detail and "max_queued_studies" in detail
    assert "max_concurrent_studies" in detail

    info = c.get("/v1/info").json()
    assert (info["studies_running"], info["studies_queued"]) == (1, 2)
    assert info["ray"]["mode"] == "per-study" and info["max_queued_studies"] == 2

    # cancelling a queued study ends it without a driver, and frees a queue place
    r = c.delete(f"/v1/studies/{ids[0]}")
    assert r.json()["status"] == "cancelled"
    store = Store(settings.sqlalchemy_url, migrate=False)
    assert store.get_study(ids[0]).launches == 0, "a cancelled queued study never starts"
    assert c.post("/v1/studies", json=SPEC).status_code == 202
    assert store.get_study(ids[1]).status == "queued", "the slot is still taken"


def test_study_responses_say_where_to_watch(client):
    c, settings, running_id = client
    body = c.get(f"/v1/studies/{running_id}").json()
    assert body["tensorboard_logdir"] == str(settings.ray_results_path / running_id)
    assert body["optuna_storage"] == settings.sqlalchemy_url
    assert body["optuna_dashboard_command"] == f"optuna-dashboard {settings.sqlalchemy_url}"
    listed = c.get("/v1/studies").json()["data"][0]
    assert listed["tensorboard_logdir"] == body["tensorboard_logdir"]


def test_optuna_storage_hides_the_password(tmp_path):
    from service.api.watch import study_watch_fields

    settings = Settings(data_dir=tmp_path,
                        database_url="postgresql+psycopg://phitune:hunter2@db:5432/phitune")
    fields = study_watch_fields(settings, "abc")
    assert "hunter2" not in str(fields)
    assert fields["optuna_storage"] == "postgresql+psycopg://phitune:***@db:5432/phitune"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str | None:
    """None: the default SQLite file under ``data_dir``; else a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def test_concurrent_submits_fill_the_queue_exactly(tmp_path, database_url):
    """Twelve POSTs at once, the only slot taken, room for three in the queue: exactly three
    are queued (202) and nine refused (429), on SQLite and on PostgreSQL (the queue bound is
    checked with the insert, in one transaction; a count before the insert let them all in)."""
    blocker = subprocess.Popen(["sleep", "120"], start_new_session=True)
    settings = Settings(data_dir=tmp_path, database_url=database_url, max_concurrent_studies=1,
                        max_queued_studies=3, reconcile_interval_s=0, queue_poll_s=0.2,
                        local_ray="per-study", ray_dashboard=False)
    store = Store(settings.sqlalchemy_url)
    row, _ = store.create_study(SPEC, "holds the only slot")
    store.update_study(row.id, status="running")
    store.record_launch(row.id, pid=blocker.pid, driver_start=process_start(blocker.pid))
    codes: list[int] = []
    n = 12
    barrier = threading.Barrier(n)
    try:
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
            def submit(i: int) -> None:
                barrier.wait()
                r = c.post("/v1/studies", json={**SPEC, "name": f"race{i}"})
                codes.append(r.status_code)
                if r.status_code == 429:
                    assert "queue is full" in r.json()["detail"], r.text

            threads = [threading.Thread(target=submit, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(codes) == [202] * 3 + [429] * (n - 3), codes
            assert c.get("/v1/info").json()["studies_queued"] == 3
    finally:
        blocker.kill()
        blocker.wait()
    assert store.count_status(StudyRow, "queued") == 3
    assert store.count_status(StudyRow, "running") == 1
