"""Agent mode's leases through the real app and store (no Ray: the driver's proxy side is
played by :func:`service.store.external.offer_trial`, what the proxy trainable calls).

Covers the refusals the issue names (a lease that is not the caller's 403, a late or different
report 409, a result without the metric or non-finite 422, an ended study 410), expiry and
re-offer, idempotent reports, and concurrent claims on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.config import Settings
from service.schemas import StudyCreate
from service.store import Store
from service.store.external import (
    claim_trial,
    get_external_trial,
    list_leases,
    offer_trial,
)

TOKEN = "lease-test-token"
EXTERNAL = {"trainer": "external", "optimizer": {"name": "sgd", "lr": 0.1},
            "budget": {"steps": 40}, "metric": "val_loss", "num_trials": 2, "eval_every": 10}


def payload(trial_id: str, study_id: str) -> dict[str, Any]:
    return {"trial_id": trial_id, "study_id": study_id, "total_steps": 40, "seed": 0,
            "metric": "val_loss", "mode": "min", "optimizer": "sgd", "lr": 0.1,
            "schedule": "uba", "schedule_params": {"phi": 1.0}, "lr_curve": [0.1] * 40}


@contextmanager
def app_with_running_external_study(tmp_path, ttl: float = 30.0, spec: dict | None = None
                                    ) -> Iterator[tuple[TestClient, Store, str]]:
    """The app and a ``running`` study whose "driver" is a ``sleep`` (so reconcile leaves it
    alone); the test offers trials as the driver's proxies would."""
    from service.api.main import create_app
    from service.launch.runner import process_start

    settings = Settings(data_dir=tmp_path, api_token=TOKEN, lease_ttl_s=ttl,
                        reconcile_interval_s=0, queue_poll_s=60)
    blocker = subprocess.Popen(["sleep", "300"], start_new_session=True)
    store = Store(settings.sqlalchemy_url)
    body = StudyCreate.model_validate(spec or EXTERNAL).model_dump(mode="json")
    row, _ = store.create_study(body, "external")
    store.update_study(row.id, status="running")
    store.record_launch(row.id, pid=blocker.pid, driver_start=process_start(blocker.pid))
    try:
        with TestClient(create_app(settings), base_url="http://127.0.0.1",
                        headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            yield client, store, row.id
    finally:
        blocker.kill()
        blocker.wait()


def agent(name: str) -> dict[str, str]:
    return {"X-Phitune-Agent": name}


def test_external_spec_names_what_does_not_belong():
    assert StudyCreate.model_validate(EXTERNAL).model is None
    for field, value in (("model", "mlp"), ("dataset", "digits"),
                         ("model_kwargs", {"hidden": 8})):
        with pytest.raises(ValidationError, match=f"{field}: not allowed with trainer"):
            StudyCreate.model_validate({**EXTERNAL, field: value})
    with pytest.raises(ValidationError, match="budget.epochs: trainer 'external' needs"):
        StudyCreate.model_validate({**EXTERNAL, "budget": {"epochs": 2}})
    with pytest.raises(ValidationError, match="curvature"):
        StudyCreate.model_validate({**EXTERNAL, "curvature": True})
    with pytest.raises(ValidationError, match="model: required with trainer 'builtin'"):
        StudyCreate.model_validate({k: v for k, v in EXTERNAL.items() if k != "trainer"}
                                   | {"dataset": "digits"})


def test_post_external_study_with_a_model_is_a_422_naming_it(tmp_path):
    with app_with_running_external_study(tmp_path) as (client, _, _):
        r = client.post("/v1/studies", json={**EXTERNAL, "model": "mlp"})
        assert r.status_code == 422 and "model: not allowed" in r.text


def test_lease_lifecycle_and_refusals(tmp_path):
    with app_with_running_external_study(tmp_path) as (client, store, sid):
        assert client.post(f"/v1/studies/{sid}/leases", headers=agent("a")).status_code == 204
        offer_trial(store, sid, "t1", payload("t1", sid))
        r = client.post(f"/v1/studies/{sid}/leases", headers=agent("a"))
        assert r.status_code == 201, r.text
        lease = r.json()
        assert lease["trial_id"] == "t1" and lease["attempt"] == 1 and lease["ttl_s"] == 30
        assert lease["trial"]["total_steps"] == 40 and len(lease["trial"]["lr_curve"]) == 40
        lid = lease["lease_id"]
        # the only trial is leased: nothing for a second agent right now
        assert client.post(f"/v1/studies/{sid}/leases", headers=agent("b")).status_code == 204

        hb = client.post(f"/v1/leases/{lid}/heartbeat", headers=agent("a"))
        assert hb.status_code == 200 and hb.json()["status"] == "leased"
        assert hb.json()["expires_at"] >= lease["expires_at"]
        # another agent cannot renew or report it
        assert client.post(f"/v1/leases/{lid}/heartbeat", headers=agent("b")).status_code == 403
        r = client.post(f"/v1/leases/{lid}/result", headers=agent("b"),
                        json={"metrics": {"val_loss": 0.5}})
        assert r.status_code == 403 and "another agent" in r.text
        assert client.post("/v1/leases/nope/heartbeat", headers=agent("a")).status_code == 404
        # a result without the study's metric, or a non-finite one: 422 naming it
        r = client.post(f"/v1/leases/{lid}/result", headers=agent("a"),
                        json={"metrics": {"val_accuracy": 0.9}})
        assert r.status_code == 422 and "metrics.val_loss" in r.text
        r = client.post(f"/v1/leases/{lid}/result", headers={**agent("a"),
                        "Content-Type": "application/json"},
                        content=b'{"metrics": {"val_loss": NaN}}')
        assert r.status_code == 422, r.text
        r = client.post(f"/v1/leases/{lid}/result", headers=agent("a"), json={})
        assert r.status_code == 422 and "metrics" in r.text
        # the report, once; the same again is the same answer; a different one a 409
        ok = client.post(f"/v1/leases/{lid}/result", headers=agent("a"),
                         json={"metrics": {"val_loss": 0.25, "val_accuracy": 0.9}})
        assert ok.status_code == 200 and ok.json()["status"] == "succeeded", ok.text
        again = client.post(f"/v1/leases/{lid}/result", headers=agent("a"),
                            json={"metrics": {"val_loss": 0.25, "val_accuracy": 0.9}})
        assert again.status_code == 200 and again.json() == ok.json()
        other = client.post(f"/v1/leases/{lid}/result", headers=agent("a"),
                            json={"failed": True, "error": "oops"})
        assert other.status_code == 409 and "already" in other.text
        assert client.post(f"/v1/leases/{lid}/heartbeat", headers=agent("a")).status_code == 409
        row = get_external_trial(store, sid, "t1")
        assert row is not None and row.status == "succeeded"
        assert row.metrics == {"val_loss": 0.25, "val_accuracy": 0.9}
        # the study ends: claims and heartbeats say so (410), a repeated report still matches
        store.finish_study(sid, "cancelled", error="test")
        assert client.post(f"/v1/studies/{sid}/leases", headers=agent("a")).status_code == 410
        again = client.post(f"/v1/leases/{lid}/result", headers=agent("a"),
                            json={"metrics": {"val_loss": 0.25, "val_accuracy": 0.9}})
        assert again.status_code == 200
        # a built-in study has no leases; an unknown one is a 404
        assert client.post("/v1/studies/nope/leases").status_code == 404


def test_builtin_study_refuses_leases(tmp_path):
    spec = {"model": "mlp", "dataset": "digits", "budget": {"steps": 40}, "num_trials": 2,
            "eval_every": 10}
    with app_with_running_external_study(tmp_path, spec=spec) as (client, _, sid):
        r = client.post(f"/v1/studies/{sid}/leases")
        assert r.status_code == 409 and "trainer 'external'" in r.text


def test_an_expired_lease_is_offered_again_and_its_late_report_refused(tmp_path):
    with app_with_running_external_study(tmp_path, ttl=0.4) as (client, store, sid):
        offer_trial(store, sid, "t1", payload("t1", sid))
        first = client.post(f"/v1/studies/{sid}/leases", headers=agent("a")).json()
        time.sleep(0.6)  # agent a went silent past its lease
        r = client.post(f"/v1/studies/{sid}/leases", headers=agent("b"))
        assert r.status_code == 201 and r.json()["trial_id"] == "t1"
        second = r.json()
        assert second["attempt"] == 2 and second["lease_id"] != first["lease_id"]
        late = client.post(f"/v1/leases/{first['lease_id']}/result", headers=agent("a"),
                           json={"metrics": {"val_loss": 9.0}})
        assert late.status_code == 409 and "offered again" in late.text
        assert client.post(f"/v1/leases/{first['lease_id']}/heartbeat",
                           headers=agent("a")).status_code == 409
        ok = client.post(f"/v1/leases/{second['lease_id']}/result", headers=agent("b"),
                         json={"metrics": {"val_loss": 0.5}})
        assert ok.status_code == 200
        row = get_external_trial(store, sid, "t1")
        assert row is not None and row.metrics == {"val_loss": 0.5} and row.attempt == 2
        assert [lease.attempt for lease in list_leases(store, sid)] == [1, 2]
        # an expired lease that nobody re-claimed is refused all the same
        offer_trial(store, sid, "t2", payload("t2", sid))
        third = client.post(f"/v1/studies/{sid}/leases", headers=agent("a")).json()
        time.sleep(0.6)
        r = client.post(f"/v1/leases/{third['lease_id']}/result", headers=agent("a"),
                        json={"metrics": {"val_loss": 0.7}})
        assert r.status_code == 409 and "expired" in r.text


def test_a_failed_trial_is_offered_again_when_ray_retries_it(tmp_path):
    with app_with_running_external_study(tmp_path) as (client, store, sid):
        offer_trial(store, sid, "t1", payload("t1", sid))
        lid = client.post(f"/v1/studies/{sid}/leases").json()["lease_id"]
        r = client.post(f"/v1/leases/{lid}/result", json={"failed": True, "error": "exit 3"})
        assert r.status_code == 200 and r.json()["status"] == "failed"
        assert offer_trial(store, sid, "t1", payload("t1", sid)).status == "pending"
        r = client.post(f"/v1/studies/{sid}/leases")
        assert r.status_code == 201 and r.json()["attempt"] == 2


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'leases.db'}"
    return request.getfixturevalue("postgres_url")


def test_concurrent_claims_lease_each_trial_once(store_url):
    store = Store(store_url)
    row, _ = store.create_study(StudyCreate.model_validate(EXTERNAL).model_dump(mode="json"),
                                "claims")
    trials = [f"t{i}" for i in range(6)]
    for t in trials:
        offer_trial(store, row.id, t, payload(t, row.id))
    got: list[str] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        while True:
            claimed = claim_trial(store, row.id, f"x/agent{i}", 60)
            if claimed is None:
                return
            with lock:
                got.append(claimed[0].trial_id)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(got) == trials
    assert len(list_leases(store, row.id)) == len(trials)
    store.engine.dispose()


def test_claims_take_pending_trials_first_then_expired_leases(store_url):
    """Offered trials are claimed oldest first; a lease past its expiry is claimed (a new
    attempt) once nothing is offered, and a valid lease never is."""
    store = Store(store_url)
    row, _ = store.create_study(StudyCreate.model_validate(EXTERNAL).model_dump(mode="json"),
                                "expired")
    for t in ("t0", "t1"):
        offer_trial(store, row.id, t, payload(t, row.id))
    held = claim_trial(store, row.id, "x/a", 60)
    short = claim_trial(store, row.id, "x/b", 0.2)
    assert held and short and (held[0].trial_id, short[0].trial_id) == ("t0", "t1")
    assert claim_trial(store, row.id, "x/c", 60) is None  # both leases still valid
    time.sleep(0.4)  # b's lease on t1 expires
    offer_trial(store, row.id, "t2", payload("t2", row.id))
    pending = claim_trial(store, row.id, "x/c", 60)
    assert pending and pending[0].trial_id == "t2" and pending[0].attempt == 1
    again = claim_trial(store, row.id, "x/d", 60)
    assert again and again[0].trial_id == "t1" and again[0].attempt == 2
    assert again[1].lease_holder == "x/d" and again[1].lease_id == again[0].id
    assert claim_trial(store, row.id, "x/e", 60) is None
    store.engine.dispose()


def _sqlite_plan(store: Store, statement: Any) -> list[str]:
    """SQLite's ``EXPLAIN QUERY PLAN`` of a statement (the plan does not depend on the
    bound values; datetimes are bound as SQLAlchemy's SQLite type stores them, text)."""
    from datetime import datetime

    compiled = statement.compile(dialect=store.engine.dialect)
    params = [compiled.params[k] for k in compiled.positiontup]
    params = [v.isoformat(" ") if isinstance(v, datetime) else v for v in params]
    with store.engine.connect() as conn:
        return [r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}",
                                                    tuple(params))]


def test_the_claim_seeks_the_claim_index_without_sorting_the_study(tmp_path):
    """Both of a claim's updates (pending, then expired) find their trial by a seek on the
    claim index ``(study_id, status, created_at, trial_id)``, in claim order: no temporary
    B-tree sorting the study's trials, whatever their number. The plan is the migrated
    schema's (``Store`` runs the migrations, 0010 included)."""
    from service.store.db import utcnow
    from service.store.external import ExternalTrialRow, _claim, _claimable

    store = Store(f"sqlite:///{tmp_path / 'plan.db'}")
    row, _ = store.create_study(StudyCreate.model_validate(EXTERNAL).model_dump(mode="json"),
                                "plan")
    for i in range(200):
        offer_trial(store, row.id, f"t{i:03d}", payload(f"t{i:03d}", row.id))
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    t = ExternalTrialRow.__table__
    now = utcnow()
    pending, expired = _claimable(t, now)
    for claimable in (pending, expired):
        plan = _sqlite_plan(store, _claim(t, row.id, claimable, now, "l", "x/a", 60))
        assert any("INDEX ix_phitune_external_trials_claim (study_id=? AND status=?)" in step
                   for step in plan), plan
        assert not any("TEMP B-TREE" in step for step in plan), plan
    store.engine.dispose()


def test_an_idle_poll_is_a_read_that_waits_for_no_writer(tmp_path):
    """With every trial leased, a claim (the 204 poll) finds nothing by a read: it answers
    at once while another connection holds SQLite's write lock (a write would wait up to the
    30 s busy timeout), and commits nothing."""
    import sqlite3

    path = tmp_path / "poll.db"
    store = Store(f"sqlite:///{path}")
    row, _ = store.create_study(StudyCreate.model_validate(EXTERNAL).model_dump(mode="json"),
                                "poll")
    offer_trial(store, row.id, "t0", payload("t0", row.id))
    assert claim_trial(store, row.id, "x/a", 60) is not None
    writer = sqlite3.connect(path, timeout=1)
    writer.execute("BEGIN IMMEDIATE")  # another process's write transaction, held
    try:
        t0 = time.monotonic()
        assert claim_trial(store, row.id, "x/b", 60) is None
        assert time.monotonic() - t0 < 5
    finally:
        writer.rollback()
        writer.close()
    assert [lease.holder for lease in list_leases(store, row.id)] == ["x/a"]
    store.engine.dispose()
