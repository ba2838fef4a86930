"""The polled study reads (``service.store.views`` + ``service.api.study_json``) answer exactly
what a ``StudyPublic`` of the same rows says, on SQLite and PostgreSQL, and never serve a
stale memo."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from service.api.auth import HIDDEN_ERROR
from service.api.main import create_app
from service.api.routes.studies import to_public
from service.config import Settings
from service.schemas import StudyCreate, StudyPublic
from service.store import Store

LOOPBACK = "http://127.0.0.1"
SPEC = {"model": "mlp", "dataset": "digits", "budget": {"steps": 90, "fractions": [1 / 3, 1]},
        "num_trials": 4}
LOSS_SPEC = {**SPEC, "metric": "val_loss"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str | None:
    """None: the default SQLite file under ``data_dir``; else a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def _stored(spec: dict) -> dict:
    return StudyCreate.model_validate(spec).model_dump(mode="json")


def _fill(store: Store) -> list[str]:
    """Studies in several states: ladder trials at two horizons, a failed study with a
    non-ASCII name and an error, a loss metric (min is best), one without trials."""
    ladder, _ = store.create_study(_stored(SPEC), "ladder")
    for i, (steps, status, value) in enumerate([(30, "terminated", 0.95), (30, "running", 0.99),
                                                (90, "terminated", 0.9), (90, "terminated", 0.8),
                                                (90, "error", None), (90, "stopped_early", 0.5)]):
        store.upsert_trial(ladder.id, f"t{i}", budget_steps=steps, status=status,
                           params={"phi": 0.5 + i}, step=steps, metrics={}, value=value)
    store.update_study(ladder.id, status="running", dashboard_url="http://ray:8265")
    failed, _ = store.create_study(_stored(SPEC), "φ-Studie «ü»")
    store.finish_study(failed.id, "failed", error="dataset root /data/x is missing")
    loss, _ = store.create_study(_stored(LOSS_SPEC), None)
    for i, value in enumerate([0.7, 0.3]):
        store.upsert_trial(loss.id, f"t{i}", budget_steps=90, status="terminated",
                           params={}, step=90, metrics={}, value=value)
    store.finish_study(loss.id, "succeeded", result={"metric": "val_loss", "mode": "min",
                                                     "budgets": []})
    empty, _ = store.create_study(_stored(SPEC), "no trials yet")
    return [ladder.id, failed.id, loss.id, empty.id]


def test_study_reads_are_the_json_of_a_study_public(tmp_path, database_url):
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    with TestClient(create_app(settings), base_url=LOOPBACK) as c:
        store: Store = c.app.state.store
        ids = _fill(store)
        bodies = {}
        for study_id in ids:
            r = c.get(f"/v1/studies/{study_id}")
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            want = to_public(store, store.get_study(study_id), settings=settings)
            got = r.json()
            assert got == want.model_dump(mode="json")
            assert list(got) == list(StudyPublic.model_fields)  # the schema's order
            # encoded as JSONResponse encodes (compact, UTF-8 as is)
            assert r.content == json.dumps(got, ensure_ascii=False,
                                           separators=(",", ":")).encode()
            bodies[study_id] = r.content
        ladder = json.loads(bodies[ids[0]])["progress"]
        assert ladder == {"trials_total": 6, "trials_running": 1, "trials_finished": 4,
                          "trials_failed": 1, "best_value": 0.9, "best_value_steps": 90}
        assert json.loads(bodies[ids[2]])["progress"]["best_value"] == 0.3  # loss: min

        page = c.get("/v1/studies", params={"limit": 3})
        data = page.json()
        assert data["count"] == 4
        assert [s["id"] for s in data["data"]] == ids[::-1][:3]  # newest first
        for item in data["data"]:
            assert json.dumps(item, ensure_ascii=False,
                              separators=(",", ":")).encode() == bodies[item["id"]]
        assert c.get("/v1/studies", params={"status": "failed"}).json()["count"] == 1
        past = c.get("/v1/studies", params={"offset": 10}).json()
        assert past == {"data": [], "count": 4}
        assert c.get("/v1/studies/no-such-study").status_code == 404


def test_a_changed_study_or_trial_is_read_anew(tmp_path):
    """The renderer memoises on the stored values: every change shows at the next read."""
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url=LOOPBACK) as c:
        store: Store = c.app.state.store
        study, _ = store.create_study(_stored(SPEC), "s")
        url = f"/v1/studies/{study.id}"
        assert c.get(url).json()["progress"]["trials_total"] == 0
        store.upsert_trial(study.id, "t0", budget_steps=90, status="running", params={},
                           step=10, metrics={}, value=0.1)
        first = c.get(url).json()["progress"]
        assert first["trials_running"] == 1 and first["best_value"] is None
        store.upsert_trial(study.id, "t0", status="terminated", step=90, value=0.7)
        after = c.get(url).json()["progress"]
        assert after["trials_finished"] == 1 and after["best_value"] == 0.7
        store.update_study(study.id, status="running")
        assert c.get(url).json()["status"] == "running"
        assert c.get("/v1/studies").json()["data"][0]["progress"] == after


def test_token_less_readers_see_no_error_details(tmp_path):
    settings = Settings(data_dir=tmp_path, api_token="sekrit", read_auth=False)
    with TestClient(create_app(settings), base_url=LOOPBACK) as c:
        store: Store = c.app.state.store
        row, _ = store.create_study(_stored(SPEC), "s")
        store.finish_study(row.id, "failed", error="/data/private is missing")
        auth = {"Authorization": "Bearer sekrit"}
        for _ in range(2):  # a memo of one reader's answer is never the other's
            assert c.get(f"/v1/studies/{row.id}").json()["error"] == HIDDEN_ERROR
            assert c.get("/v1/studies").json()["data"][0]["error"] == HIDDEN_ERROR
            assert c.get(f"/v1/studies/{row.id}", headers=auth).json()["error"] == \
                "/data/private is missing"
            assert c.get("/v1/studies", headers=auth).json()["data"][0]["error"] == \
                "/data/private is missing"
