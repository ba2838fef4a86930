"""The schedules router on a bare FastAPI app (it is not wired into service.api.main here)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.routes.schedules import MAX_STEPS, router
from tuning.schedules import SCHEDULES, create_schedule


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(router)
    return TestClient(app, base_url="http://127.0.0.1")  # loopback mode checks Host


def test_list_has_every_schedule_with_params(client: TestClient) -> None:
    r = client.get("/v1/schedules")
    assert r.status_code == 200
    got = {s["name"]: s for s in r.json()["schedules"]}
    assert set(got) == set(SCHEDULES)
    phi = got["uba"]["params"]["phi"]
    assert phi["kind"] == "float_or_list" and phi["default"] == 5.0 and phi["low"] == 0.0


def test_values_match_library(client: TestClient) -> None:
    r = client.get("/v1/schedules/uba", params={"steps": 50, "phi": "2.5", "eta_max": "0.1",
                                                "phases": "2", "variant": "restart"})
    assert r.status_code == 200, r.text
    body = r.json()
    want = create_schedule("uba", 50, phi=2.5, eta_max=0.1, phases=2, variant="restart")
    assert body["values"] == want.values()
    assert body["params"]["phases"] == 2 and body["relative"] is False


def test_lists_bools_and_null(client: TestClient) -> None:
    r = client.get("/v1/schedules/uba?steps=40&phi=1,10&boundaries=20&eta_max=0.2,0.1")
    assert r.status_code == 200, r.text
    want = create_schedule("uba", 40, phi=[1.0, 10.0], boundaries=[20], eta_max=[0.2, 0.1])
    assert r.json()["values"] == want.values()
    r = client.get("/v1/schedules/uba?steps=40&phi=1&phi=10&phases=2")  # repeated keys
    assert r.status_code == 200 and r.json()["params"]["phi"] == [1.0, 10.0]
    r = client.get("/v1/schedules/onecycle?steps=30&three_phase=true&eta_max=null")
    assert r.status_code == 200, r.text
    assert r.json()["values"] == create_schedule("onecycle", 30, three_phase=True).values()


@pytest.mark.parametrize(("url", "status", "param"), [
    ("/v1/schedules/cosin?steps=10", 404, "name"),
    ("/v1/schedules/uba?steps=10&phi=-1", 422, "phi"),
    ("/v1/schedules/uba?steps=10&phi=abc", 422, "phi"),
    ("/v1/schedules/uba?steps=10&ph=1", 422, "ph"),
    ("/v1/schedules/uba?steps=10&phases=11", 422, "phases"),
    ("/v1/schedules/uba?steps=10&warmup_steps=10", 422, "warmup_steps"),
    ("/v1/schedules/onecycle?steps=10&three_phase=maybe", 422, "three_phase"),
    ("/v1/schedules/plot?name=nope", 404, "name"),
    ("/v1/schedules/plot?name=uba&phi=-2", 422, "phi"),
])
def test_errors_name_the_parameter(client: TestClient, url: str, status: int,
                                   param: str) -> None:
    r = client.get(url)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"] == ["query", param]
    assert param in detail[0]["msg"] or status == 404


def test_steps_limits(client: TestClient) -> None:
    assert client.get("/v1/schedules/uba?steps=0").status_code == 422
    assert client.get(f"/v1/schedules/uba?steps={MAX_STEPS + 1}").status_code == 422


def test_plot_png(client: TestClient) -> None:
    r = client.get("/v1/schedules/plot?name=uba&phi=5&steps=1000")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
