"""``progress.best_value`` of a study, read through the HTTP API (real app, real store): the
best of the runs finished at the longest horizon any run has finished, reported with that
horizon, never a mix of ladder rungs nor a running trial's intermediate value. One test writes
trial rows the way the driver's sink does; one runs a real tiny ladder study (real driver
code in this process, real Ray, Optuna, training on digits) while a thread polls the API."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from tests.servers import app_with_the_only_slot_held

SPEC: dict[str, Any] = {"model": "mlp", "dataset": "digits", "budget": {"steps": 60},
                        "num_trials": 3, "max_concurrent_trials": 2, "eval_every": 10,
                        "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9},
                        "batch_size": 64, "ladder": {"eta": 3, "rungs": 2},
                        "search": {"phi": {"min": 0.3, "max": 30}, "phases": {"min": 1,
                                                                              "max": 1}}}


@pytest.fixture()
def api(tmp_path):
    """The app with its only study slot held by a ``sleep`` "driver": a submitted study stays
    queued, so the test runs its driver itself."""
    settings = Settings(data_dir=tmp_path, max_concurrent_studies=1, reconcile_interval_s=0,
                        queue_poll_s=0.2, local_ray="per-study", ray_dashboard=False,
                        ray_num_cpus=2)
    with app_with_the_only_slot_held(settings, SPEC) as (c, store, _):
        yield c, settings, store


def _progress(c: TestClient, study_id: str) -> dict[str, Any]:
    """The progress of one study, from the study route and from the list page (two read
    paths, one answer)."""
    one = c.get(f"/v1/studies/{study_id}").json()["progress"]
    listed = next(s for s in c.get("/v1/studies").json()["data"] if s["id"] == study_id)
    assert listed["progress"] == one
    return one


@pytest.mark.parametrize(("metric", "short", "full", "running"), [
    ("val_accuracy", 0.9, 0.8, 0.95),
    ("val_loss", 0.2, 0.3, 0.1),
])
def test_best_value_is_the_best_finished_run_at_the_longest_finished_horizon(
        api, metric, short, full, running):
    c, _, store = api
    r = c.post("/v1/studies", json={**SPEC, "metric": metric})
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    assert _progress(c, sid)["best_value"] is None
    assert _progress(c, sid)["best_value_steps"] is None

    def trial(tid: str, steps: int, status: str, value: float) -> None:
        store.upsert_trial(sid, tid, budget_steps=steps, status=status, params={"phi": 1.0},
                           step=steps, metrics={metric: value}, value=value)

    # rung 1 (20 steps): one run finished, a worse one too; a running one is not counted
    trial("a", 20, "terminated", short)
    trial("b", 20, "terminated", full if metric == "val_loss" else 0.5)
    trial("c", 20, "running", running)
    assert (_progress(c, sid)["best_value"], _progress(c, sid)["best_value_steps"]) == (short, 20)
    # the full horizon runs: its intermediate values (better than any) do not count yet
    trial("d", 60, "running", running)
    assert (_progress(c, sid)["best_value"], _progress(c, sid)["best_value_steps"]) == (short, 20)
    # once one full-budget run finished, the best is at 60 steps, even though it is worse
    # than the short run (values of different horizons are not compared)
    trial("d", 60, "terminated", full)
    trial("e", 60, "error", running)
    p = _progress(c, sid)
    assert (p["best_value"], p["best_value_steps"]) == (full, 60)
    assert (p["trials_total"], p["trials_finished"], p["trials_running"],
            p["trials_failed"]) == (5, 3, 1, 1)


def test_a_running_ladder_study_reports_its_best_at_the_horizon_it_was_reached(api):
    from service.launch.study_driver import run

    c, settings, _ = api
    r = c.post("/v1/studies", json=SPEC)
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            seen.append(c.get(f"/v1/studies/{sid}").json()["progress"])
            done.wait(0.3)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        assert run(sid, settings) == 0  # the driver's code, in this (main) thread: real Ray
    finally:
        done.set()
        poller.join()
    final = _progress(c, sid)
    trials = c.get(f"/v1/studies/{sid}/trials").json()["data"]
    finished: dict[int, list[float]] = {}
    for t in trials:
        if t["status"] == "terminated":
            finished.setdefault(t["budget_steps"], []).append(t["metrics"]["val_accuracy"])
    assert sorted(finished) == [20, 60], trials  # a tiny ladder: rung 20, then the full 60
    assert final["best_value_steps"] == 60
    assert final["best_value"] == pytest.approx(max(finished[60]))
    # while it ran: the horizon only grew, and every best was a finished run's value there
    horizons = [p["best_value_steps"] for p in seen if p["best_value_steps"] is not None]
    assert horizons == sorted(horizons) and 20 in horizons, horizons
    for p in seen:
        if p["best_value_steps"] is not None:
            assert any(p["best_value"] == pytest.approx(v)
                       for v in finished[p["best_value_steps"]]), (p, finished)
