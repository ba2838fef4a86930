"""Recording a library-mode study (``trainer: library``) through the real app and store.

The user's process runs the study; the server stores it ``running`` outside the queue (no
driver, no slot), takes its trials (``PUT .../trials/{id}``) and its end (``POST ...:finish``).
Covers the refusals: 404 unknown, 409 another trainer or a finished study (finishing twice),
422 naming the field, 401 without the token; and that reconcile never launches it."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, get_args

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.schemas import LibraryTrialRecord, ReportedTrialStatus, StudyCreate
from service.store import Store, StudyRow
from tuning.results import (
    TRIAL_STATUSES,
    BestSchedule,
    BudgetResult,
    StudyResult,
    TrialRecord,
)

TOKEN = "library-test-token"
LIBRARY = {"trainer": "library", "optimizer": {"name": "sgd", "lr": 0.1},
           "budget": {"steps": 40}, "metric": "val_loss", "num_trials": 2, "eval_every": 10}
TRIAL = {"budget_steps": 40, "status": "terminated", "params": {"phi": 1.5, "phases": 1},
         "step": 40, "metrics": {"val_loss": 0.25, "step": 40}, "node_ip": "127.0.0.1"}


def result_dict(value: float = 0.25) -> dict[str, Any]:
    best = BestSchedule(schedule="uba", phi=1.5, phases=1, eta_max=0.1, eta_min=0.0,
                        variant="restart", total_steps=40, metric="val_loss", value=value,
                        trial_id="t1", lr_curve=[0.1] * 40)
    return StudyResult(metric="val_loss", mode="min", budgets=[BudgetResult(
        budget_steps=40, fraction=1.0, num_trials=1, num_failed=0, best=best)]).to_dict()


@pytest.fixture()
def app(tmp_path):
    from service.api.main import create_app

    settings = Settings(data_dir=tmp_path, api_token=TOKEN, reconcile_interval_s=0,
                        queue_poll_s=60, max_concurrent_studies=1)
    with TestClient(create_app(settings), base_url="http://127.0.0.1",
                    headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client, Store(settings.sqlalchemy_url), settings


def create(client: TestClient, **extra: Any) -> str:
    r = client.post("/v1/studies", json={**LIBRARY, **extra})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "running"
    return r.json()["id"]


def test_the_schema_mirrors_tunings_trial_record() -> None:
    assert get_args(ReportedTrialStatus) == TRIAL_STATUSES
    assert set(LibraryTrialRecord.model_fields) == {
        f.name for f in fields(TrialRecord)} - {"trial_id"}


@pytest.mark.parametrize(("extra", "field"), [
    ({"model": "mlp"}, "model"), ({"dataset": "digits"}, "dataset"),
    ({"budget": {"epochs": 2}}, "budget.epochs"), ({"curvature": True}, "curvature"),
    ({"compare": ["schedulefree"]}, "compare")])
def test_a_library_study_names_no_model_or_dataset(extra, field) -> None:
    with pytest.raises(ValueError, match=rf"{field}: .*trainer 'library'"):
        StudyCreate.model_validate({**LIBRARY, **extra})


def test_created_running_outside_the_queue_and_never_launched(app) -> None:
    from service.launch.lifecycle import reconcile

    client, store, settings = app
    assert client.post("/v1/studies", json=LIBRARY,
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
    study_id = create(client, name="mine")
    listed = client.get("/v1/studies").json()["data"]
    assert [(s["id"], s["status"], s["spec"]["trainer"]) for s in listed] == [
        (study_id, "running", "library")]
    # it takes no server slot: with max_concurrent_studies=1 a queued study still starts
    assert store.count_status(StudyRow, "running") == 0
    assert client.get("/v1/info").json()["studies_running"] == 0
    queued, _ = store.create_study({"trainer": "builtin"}, "other")
    assert store.claim_next(StudyRow, settings.max_concurrent_studies) == queued.id
    store.finish_study(queued.id, "cancelled")
    # reconcile sees no driver and must not relaunch it
    runner = client.app.state.runner
    assert reconcile(store, runner, settings) == []
    row = store.get_study(study_id)
    assert row is not None and row.status == "running" and row.launches == 0
    assert row.driver_pid is None and row.driver_job_id is None
    # the same Idempotency-Key gives the same study (200)
    r1 = client.post("/v1/studies", json=LIBRARY, headers={"Idempotency-Key": "k1"})
    r2 = client.post("/v1/studies", json=LIBRARY, headers={"Idempotency-Key": "k1"})
    assert (r1.status_code, r2.status_code) == (202, 200)
    assert r1.json()["id"] == r2.json()["id"]
    # no :extend for a study the user's process ran
    assert client.post(f"/v1/studies/{study_id}:extend",
                       json={"extra_iterations": 1}).status_code == 409


def test_trials_and_the_result_are_recorded_like_a_drivers(app) -> None:
    client, store, _ = app
    study_id = create(client)
    r = client.put(f"/v1/studies/{study_id}/trials/t1", json=TRIAL)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "terminated" and r.json()["metrics"]["val_loss"] == 0.25
    assert client.put(f"/v1/studies/{study_id}/trials/t1", json=TRIAL).status_code == 200
    running = {**TRIAL, "status": "running", "step": 10, "metrics": {"val_loss": 0.9}}
    client.put(f"/v1/studies/{study_id}/trials/t2", json={
        **running, "grad_norms": {"norm": "l2", "total_steps": 2, "stride": 1,
                                  "values": [1.0, None]}})
    trials = client.get(f"/v1/studies/{study_id}/trials").json()
    assert trials["count"] == 2
    assert client.get(f"/v1/studies/{study_id}/trials/t2/grad_norms").json()["values"] == [
        1.0, None]
    progress = client.get(f"/v1/studies/{study_id}").json()["progress"]
    assert progress["best_value"] == 0.25
    assert client.get(f"/v1/studies/{study_id}/best").status_code == 409  # not done yet

    r = client.post(f"/v1/studies/{study_id}:finish", json={"result": result_dict()})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    best = client.get(f"/v1/studies/{study_id}/best").json()
    assert best["phi"] == 1.5 and best["lr_curve"] == [0.1] * 40
    assert client.get(f"/v1/studies/{study_id}/result").json()["budgets"][0]["budget_steps"] \
        == 40
    # a trial that never reported its end is not left running
    statuses = {t["trial_id"]: t["status"] for t in
                client.get(f"/v1/studies/{study_id}/trials").json()["data"]}
    assert statuses == {"t1": "terminated", "t2": "error"}
    # finished: a second finish and a late trial are 409
    again = client.post(f"/v1/studies/{study_id}:finish", json={"result": result_dict()})
    assert again.status_code == 409 and "succeeded" in again.text
    assert client.put(f"/v1/studies/{study_id}/trials/t3", json=TRIAL).status_code == 409


def test_an_error_fails_the_study(app) -> None:
    client, _, _ = app
    study_id = create(client)
    r = client.post(f"/v1/studies/{study_id}:finish", json={"error": "StudyFailedError: x"})
    assert r.status_code == 200 and r.json()["status"] == "failed"
    assert client.get(f"/v1/studies/{study_id}").json()["error"] == "StudyFailedError: x"


def test_refusals(app) -> None:
    client, store, _ = app
    study_id = create(client)
    assert client.put("/v1/studies/nope/trials/t1", json=TRIAL).status_code == 404
    assert client.post("/v1/studies/nope:finish", json={"error": "x"}).status_code == 404
    builtin, _ = store.create_study({"trainer": "builtin"}, "builtin")
    for call in (lambda i: client.put(f"/v1/studies/{i}/trials/t1", json=TRIAL),
                 lambda i: client.post(f"/v1/studies/{i}:finish", json={"error": "x"})):
        r = call(builtin.id)
        assert r.status_code == 409 and "trainer 'library'" in r.text
    bad_trials = [({**TRIAL, "status": "done"}, "status"),
                  ({**TRIAL, "budget_steps": 0}, "budget_steps"),
                  ({**TRIAL, "extra": 1}, "extra"),
                  ({k: v for k, v in TRIAL.items() if k != "budget_steps"}, "budget_steps"),
                  ({**TRIAL, "metrics": {"val_loss": "x"}}, "metrics"),
                  ({**TRIAL, "grad_norms": {"norm": "l3", "total_steps": 1, "stride": 1,
                                            "values": []}}, "grad_norms")]
    for body, field in bad_trials:
        r = client.put(f"/v1/studies/{study_id}/trials/t1", json=body)
        assert r.status_code == 422 and field in r.text, (field, r.text)
    no_metric = result_dict()
    del no_metric["metric"]
    for body, field in [({}, "result"), ({"result": result_dict(), "error": "x"}, "result"),
                        ({"result": no_metric}, "result.metric"),
                        ({"result": {**result_dict(), "budgets": [{"x": 1}]}},
                         "result.budgets")]:
        r = client.post(f"/v1/studies/{study_id}:finish", json=body)
        assert r.status_code == 422 and field in r.text, (field, r.text)
    assert store.get_study(study_id).status == "running"  # nothing changed


def test_the_recorded_spec_and_an_inert_pickled_sink() -> None:
    import pickle

    from service.client import PhiTuneClient
    from service.library import ServerSink, finite_json, study_create

    spec = study_create(name="n", budget_steps=40, optimizer_lr=0.2, num_trials=3,
                        budget_fractions=(0.5, 1.0), compare=["cosine"], seed=7,
                        eval_every=0, phi_max=10.0)
    assert (spec.trainer, spec.budget.steps, spec.budget.fractions, spec.optimizer.lr,
            spec.metric, spec.num_trials, spec.compare, spec.seed) == (
        "library", 40, [0.5, 1.0], 0.2, "val_loss", 3, ["cosine"], 7)
    with pytest.raises(ValueError, match="optimizer_lr"):
        study_create(name="n", budget_steps=40, optimizer_lr=-1)
    assert finite_json({"a": [1.0, float("nan")], "b": float("inf")}) == {
        "a": [1.0, None], "b": None}
    with PhiTuneClient("http://127.0.0.1:9", token="secret") as client:
        copy = pickle.loads(pickle.dumps(ServerSink(client, "sid")))
    assert copy.client is None and copy.study_id == "sid"
    assert b"secret" not in pickle.dumps(copy)
    copy.on_trial(TrialRecord(trial_id="t", budget_steps=1, status="running", params={}))


def test_heartbeats_keep_a_library_study_running_and_silence_fails_it(app) -> None:
    """``POST :heartbeat`` (and a trial record) is the library process's sign of life;
    reconcile's check fails a study silent for ``library_heartbeat_timeout_s`` with the time
    of its last heartbeat, and its running trials end ``error``. Silence counts only while the
    API has been up; a heartbeat that lands first wins."""
    from datetime import timedelta

    from service.launch.lifecycle import fail_silent_library_studies
    from service.store import utcnow

    client, store, settings = app
    study_id = create(client)
    r = client.post(f"/v1/studies/{study_id}:heartbeat")
    assert r.status_code == 200, r.text
    assert r.json()["timeout_s"] == settings.library_heartbeat_timeout_s
    beat = store.get_study(study_id).heartbeat_at
    assert beat is not None
    r = client.put(f"/v1/studies/{study_id}/trials/t1", json={**TRIAL, "status": "running"})
    assert r.status_code == 200
    assert store.get_study(study_id).heartbeat_at > beat  # a record is a sign of life

    timeout = timedelta(seconds=settings.library_heartbeat_timeout_s)
    long_ago = utcnow() - 10 * timeout
    assert fail_silent_library_studies(store, settings, up_since=long_ago) == []
    later = utcnow() + timeout + timedelta(seconds=1)
    # an API up for less than the timeout fails nothing (it may have missed the beats)
    assert fail_silent_library_studies(store, settings, up_since=later - timeout / 2,
                                       now=later) == []
    # a heartbeat newer than the cutoff keeps it running (the update re-checks)
    assert not store.fail_silent_library_study(study_id, utcnow() - timeout, "x")
    last = store.get_study(study_id).heartbeat_at

    assert fail_silent_library_studies(store, settings, up_since=long_ago,
                                       now=later) == [study_id]
    study = client.get(f"/v1/studies/{study_id}").json()
    assert study["status"] == "failed"
    assert study["error"].startswith("library process stopped heartbeating at "
                                     f"{last.replace(tzinfo=later.tzinfo).isoformat()}")
    assert "PHITUNE_LIBRARY_HEARTBEAT_TIMEOUT_S" in study["error"]
    trials = client.get(f"/v1/studies/{study_id}/trials").json()["data"]
    assert [(t["status"], t["error"]) for t in trials] == [
        ("error", "library process stopped heartbeating")]
    # the process, if it was only cut off, learns that its study ended
    r = client.post(f"/v1/studies/{study_id}:heartbeat")
    assert r.status_code == 409 and "failed" in r.text
    assert client.post("/v1/studies/nope:heartbeat").status_code == 404
    builtin, _ = store.create_study({"trainer": "builtin"}, "other")
    assert client.post(f"/v1/studies/{builtin.id}:heartbeat").status_code == 409


def test_the_heartbeat_thread_beats_until_stopped_or_the_study_ends(caplog) -> None:
    import threading

    from service.client import Conflict
    from service.library import Heartbeat
    from service.schemas import LibraryHeartbeat
    from service.store import utcnow

    class Server:
        def __init__(self, beats_before_end: int) -> None:
            self.calls = 0
            self.left = beats_before_end
            self.ended = threading.Event()

        def heartbeat_study(self, study_id: str) -> LibraryHeartbeat:
            self.calls += 1
            if self.calls > self.left:
                self.ended.set()
                raise Conflict("study 'sid' is failed", 409)
            if self.calls == 2:
                raise OSError("connection refused")  # a blip: logged, the next beat retries
            return LibraryHeartbeat(study_id=study_id, heartbeat_at=utcnow(), timeout_s=0.01)

    server = Server(beats_before_end=4)
    beat = Heartbeat(server, "sid", 0.01).start()  # type: ignore[arg-type]
    assert server.ended.wait(5)
    beat.stop()
    assert (server.calls, beat.beats) == (5, 3) and "is failed" in (beat.ended or "")
    assert "one late beat would fail it" in caplog.text  # 0.01 s > half of 0.01 s
    server = Server(beats_before_end=10_000)
    beat = Heartbeat(server, "sid", 3600).start()  # type: ignore[arg-type]
    beat.stop()  # wakes the thread from its wait
    assert server.calls == 1 and beat.ended is None
    with pytest.raises(ValueError, match="heartbeat_s"):
        Heartbeat(server, "sid", 0)  # type: ignore[arg-type]
