"""``/readyz`` reflects the store and the Ray cluster; lists paginate and filter."""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.api.routes.health import parse_ray_address
from service.config import Settings
from service.store import Store

#: Without a token the API answers only to loopback Host names (DNS-rebinding guard).
LOOPBACK = "http://127.0.0.1"


@pytest.mark.parametrize(("address", "want"), [
    ("10.0.0.1:6380", ("10.0.0.1", 6380)),
    ("ray://head:10002", ("head", 10002)),
    ("ray://head", ("head", 10001)),
    ("http://head:8265", ("head", 8265)),
    ("head", ("head", 6379)),
    ("[::1]:6379", ("::1", 6379)),
    ("auto", None),
    ("local", None),
])
def test_parse_ray_address(address, want):
    assert parse_ray_address(address) == want


def test_readyz_checks_ray_when_configured(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        up = f"127.0.0.1:{listener.getsockname()[1]}"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            down = f"127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        with TestClient(create_app(Settings(data_dir=tmp_path / "a", ray_address=up)),
                        base_url=LOOPBACK) as c:
            r = c.get("/readyz")
            assert r.status_code == 200 and r.json() == {"status": "ok", "store": "ok",
                                                         "ray": "ok"}
        with TestClient(create_app(Settings(data_dir=tmp_path / "b", ray_address=down)),
                        base_url=LOOPBACK) as c:
            r = c.get("/readyz")
            assert r.status_code == 503 and "unreachable" in r.json()["ray"]
            assert r.json()["store"] == "ok"
        settings = Settings(data_dir=tmp_path / "c", ray_address=up, runner="ray-job",
                            ray_dashboard_address=f"http://{down}")
        with TestClient(create_app(settings), base_url=LOOPBACK) as c:
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json()["ray"] == "ok"
            assert "unreachable" in r.json()["ray_jobs"]


def test_readyz_without_ray_address_checks_only_the_store(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url=LOOPBACK) as c:
        assert c.get("/readyz").json() == {"status": "ok", "store": "ok"}
    app = create_app(Settings(data_dir=tmp_path))
    # a store whose database cannot be opened (the server went away after startup)
    app.state.store = Store("sqlite:////nonexistent-dir/x.db", migrate=False)
    r = TestClient(app, base_url=LOOPBACK).get("/readyz")  # no lifespan: keep the broken store
    assert r.status_code == 503 and r.json()["store"].startswith("unavailable")


def test_study_and_trial_lists_paginate_and_filter(tmp_path):
    settings = Settings(data_dir=tmp_path)
    with TestClient(create_app(settings), base_url=LOOPBACK) as c:
        store: Store = c.app.state.store
        spec = {"model": "mlp", "dataset": "digits", "budget": {"steps": 100}}
        ids = [store.create_study(spec, f"s{i}")[0].id for i in range(3)]
        store.finish_study(ids[1], "failed", error="x")
        for i in range(5):
            store.upsert_trial(ids[0], f"t{i}", budget_steps=50 if i < 2 else 100,
                               status="error" if i == 4 else "terminated", params={},
                               step=1, metrics={})
        page = c.get("/v1/studies", params={"limit": 2, "offset": 1}).json()
        assert page["count"] == 3 and [s["id"] for s in page["data"]] == [ids[1], ids[0]]
        failed = c.get("/v1/studies", params={"status": "failed"}).json()
        assert failed["count"] == 1 and failed["data"][0]["id"] == ids[1]
        assert c.get("/v1/studies", params={"status": "bogus"}).status_code == 422

        base = f"/v1/studies/{ids[0]}/trials"
        page = c.get(base, params={"limit": 2, "offset": 2}).json()
        assert page["count"] == 5 and [t["trial_id"] for t in page["data"]] == ["t2", "t3"]
        by_budget = c.get(base, params={"budget_steps": 50}).json()
        assert by_budget["count"] == 2
        errors = c.get(base, params={"status": "error"}).json()
        assert errors["count"] == 1 and errors["data"][0]["trial_id"] == "t4"
        assert c.get("/v1/studies/nope/trials").status_code == 404
