"""``POST /v1/studies/{id}:extend`` without Ray: the extended spec keeps every earlier
iteration's plan (ladders, finalist count, proposals, warm-start points), and the route's
refusals (404, 409, 422 naming the field, 429) through the real app and store.

The one slot is held by a ``sleep`` "driver" in its own session (as in test_queue_api), so an
accepted extension stays queued and no driver starts. The real extension of a real study is
tests/e2e/test_extend_e2e.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
import pytest

from service.config import Settings
from service.launch.extend import extended_spec, iterations_of
from service.launch.runner import spec_from_study
from service.schemas import StudyCreate
from service.store import Store
from tests.servers import app_with_the_only_slot_held
from tuning.proposer import PHASES, PHI, propose

BASE: dict[str, Any] = {"model": "mlp", "dataset": "digits", "budget": {"steps": 300},
                        "eval_every": 10}


def _tuning(spec: StudyCreate, tmp_path) -> Any:
    return spec_from_study("s", spec, Settings(data_dir=tmp_path), spec.budget.steps or 0)


def _fitting_ladders() -> list[tuple[int, dict[str, Any]]]:
    """(num_trials, ladder) pairs whose ladder fits the trial count (the others are a 422 at
    POST, tested in test_search_schema.py); only these can be extended."""
    import tempfile
    from pathlib import Path

    out = []
    for num_trials in (1, 2, 3, 5, 7, 8, 9, 13, 17, 24, 31):
        for ladder in ({}, {"iterations": 2}, {"brackets": 2}, {"eta": 2}):
            try:
                _tuning(StudyCreate.model_validate({**BASE, "num_trials": num_trials,
                                                    "ladder": ladder}),
                        Path(tempfile.gettempdir()))
            except ValueError:
                continue
            out.append((num_trials, ladder))
    return out


@pytest.mark.parametrize(("num_trials", "ladder"), _fitting_ladders())
@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_extension_keeps_the_earlier_iterations_plan_and_proposals(
        num_trials, ladder, sampler, tmp_path) -> None:
    old = StudyCreate.model_validate({**BASE, "num_trials": num_trials, "ladder": ladder,
                                      "search": {"sampler": sampler}})
    before = _tuning(old, tmp_path)
    n = iterations_of(old)
    new = extended_spec(old, 2, Settings(data_dir=tmp_path))
    after = _tuning(new, tmp_path)
    assert new.ladder.iterations == n + 2
    assert new.num_trials == num_trials + 2 * (num_trials // n)
    assert after.num_finalists == before.num_finalists
    assert after.ladders()[:n] == before.ladders(), "earlier iterations keep their plan"
    # the new iterations have the study's per-iteration size (Hyperband brackets cycle on)
    if "brackets" not in ladder:
        assert [lad.rungs[0].candidates for lad in after.ladders()[n:]] == \
            [num_trials // n] * 2
    # the same model trials give the same proposals for every earlier iteration
    space = {PHI: optuna.distributions.FloatDistribution(0.01, 50.0, log=True),
             PHASES: optuna.distributions.IntDistribution(1, 3)}
    model = [optuna.trial.create_trial(params={PHI: 0.1 * (i + 1), PHASES: 1 + i % 3},
                                       distributions=space, value=0.5 + 0.01 * i)
             for i in range(min(num_trials, 6))]
    for it, lad in enumerate(before.ladders()):
        k = lad.rungs[0].candidates
        seen = model[:it]
        assert propose(after, it, k, seen, [{PHI: 5.0}]) == \
            propose(before, it, k, seen, [{PHI: 5.0}])


def test_warm_start_takes_the_same_points_after_an_extension(tmp_path) -> None:
    from service.launch.runner import warm_start

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    src, _ = store.create_study(StudyCreate.model_validate(BASE).model_dump(mode="json"), "src")
    for i in range(8):
        store.upsert_trial(src.id, f"t{i}", budget_steps=300, status="terminated",
                           value=0.5 + i / 100, params={"phi": 1.0 + i, "phases": 1,
                                                        "kind": "search"},
                           metrics={}, step=300)
    old = StudyCreate.model_validate({**BASE, "num_trials": 4, "warm_start_from": src.id})
    row, _ = store.create_study(old.model_dump(mode="json"), "warm")
    first = warm_start(_tuning(old, tmp_path), store, src.id, as_of=row.created_at)
    assert len(first.extra_points) == 2, "half of the first iteration's 4 candidates"
    new = extended_spec(old, 3, Settings(data_dir=tmp_path))
    # meanwhile the source was extended too: its new trials finished after this study's
    # submission and do not change what this study evaluates first
    store.upsert_trial(src.id, "late", budget_steps=300, status="terminated", value=0.99,
                       params={"phi": 40.0, "phases": 2, "kind": "search"}, metrics={}, step=300)
    again = warm_start(_tuning(new, tmp_path), store, src.id, as_of=row.created_at)
    assert again.extra_points == first.extra_points


# ---------------------------------------------------------------------- the route, real app

@pytest.fixture()
def api(tmp_path):
    settings = Settings(data_dir=tmp_path, max_concurrent_studies=1, max_queued_studies=1,
                        max_trials=12, reconcile_interval_s=0, queue_poll_s=0.2,
                        local_ray="per-study", ray_dashboard=False)
    with app_with_the_only_slot_held(settings, {**BASE, "num_trials": 2}) as held:
        yield held


def _succeeded(store: Store, spec: dict[str, Any]) -> str:
    spec = StudyCreate.model_validate(spec).model_dump(mode="json")
    row, _ = store.create_study(spec, None)
    store.update_study(row.id, status="running")
    store.finish_study(row.id, "succeeded", result={"metric": "val_accuracy", "best": None})
    return row.id


def _field(r: Any) -> list[str]:
    return r.json()["detail"][0]["loc"]


def test_extend_queues_the_study_with_its_new_spec_and_refuses_what_it_cannot(api) -> None:
    c, store, running_id = api
    sid = _succeeded(store, {**BASE, "num_trials": 3})
    # 422 naming the field: missing, zero, unknown field, past the configured max_trials
    assert _field(c.post(f"/v1/studies/{sid}:extend", json={})) == ["body", "extra_iterations"]
    assert _field(c.post(f"/v1/studies/{sid}:extend",
                         json={"extra_iterations": 0})) == ["body", "extra_iterations"]
    r = c.post(f"/v1/studies/{sid}:extend", json={"extra_trials": 3})
    assert r.status_code == 422 and "extra_trials" in r.text
    r = c.post(f"/v1/studies/{sid}:extend", json={"extra_iterations": 4})  # 3 + 12 > 12
    assert r.status_code == 422 and _field(r) == ["body", "extra_iterations"]
    assert "num_trials=15" in r.json()["detail"][0]["msg"]
    # 404 unknown, 409 running, 409 a curvature job
    assert c.post("/v1/studies/nope:extend", json={"extra_iterations": 1}).status_code == 404
    r = c.post(f"/v1/studies/{running_id}:extend", json={"extra_iterations": 1})
    assert r.status_code == 409 and "running" in r.json()["detail"]
    from service.store.curvature_jobs import create_job

    job = create_job(store, {"model": "mlp", "dataset": "digits"})
    r = c.post(f"/v1/studies/{job.id}:extend", json={"extra_iterations": 1})
    assert r.status_code == 409 and "curvature job" in r.json()["detail"]
    # a warm start reads its source as of the submission: an unfinished source is a 422
    r = c.post("/v1/studies", json={**BASE, "warm_start_from": running_id})
    assert r.status_code == 422 and _field(r) == ["body", "warm_start_from"], r.text
    assert "running" in r.json()["detail"][0]["msg"]
    # 409 for what cannot keep its plan: ASHA, curvature-seeded studies
    asha = _succeeded(store, {**BASE, "num_trials": 2, "method": "asha"})
    r = c.post(f"/v1/studies/{asha}:extend", json={"extra_iterations": 1})
    assert r.status_code == 409 and "ladder" in r.json()["detail"]
    curv = _succeeded(store, {**BASE, "num_trials": 2, "curvature": True})
    assert c.post(f"/v1/studies/{curv}:extend",
                  json={"extra_iterations": 1}).status_code == 409

    # accepted: queued again (the only slot is held), the spec shows the new plan
    r = c.post(f"/v1/studies/{sid}:extend", json={"extra_iterations": 2})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["finished_at"] is None
    assert body["spec"]["num_trials"] == 9 and body["spec"]["ladder"]["iterations"] == 3
    assert body["spec"]["finalists"] == 0, "the default finalist count is pinned"
    assert c.get(f"/v1/studies/{sid}").json()["spec"] == body["spec"]
    assert store.get_study(sid).result is not None, "the old result stays until replaced"
    assert store.get_study(sid).launches == 0
    # extending it again before it finished: 409; the queue (1 place) is full: 429
    assert c.post(f"/v1/studies/{sid}:extend",
                  json={"extra_iterations": 1}).status_code == 409
    other = _succeeded(store, {**BASE, "num_trials": 2})
    r = c.post(f"/v1/studies/{other}:extend", json={"extra_iterations": 1})
    assert r.status_code == 429 and "queue is full" in r.json()["detail"]
    assert store.get_study(other).status == "succeeded", "a refused extension changes nothing"


def test_extended_spec_is_refused_past_64_iterations(tmp_path) -> None:
    spec = StudyCreate.model_validate({**BASE, "num_trials": 64, "ladder": {"iterations": 60}})
    with pytest.raises(Exception, match="extra_iterations") as err:
        extended_spec(spec, 5, Settings(data_dir=tmp_path, max_trials=1000))
    assert getattr(err.value, "field", None) == "extra_iterations"
    ok = extended_spec(spec, 4, Settings(data_dir=tmp_path, max_trials=1000))
    assert dataclasses.asdict(_tuning(ok, tmp_path).ladder)["iterations"] == 64
