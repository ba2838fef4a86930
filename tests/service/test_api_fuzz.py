"""Property-based fuzzing of the whole HTTP API from its OpenAPI spec (schemathesis): a real
uvicorn server, the real app and store; positive and negative cases for every operation.

Properties: no 5xx; every 4xx carries a non-empty message (``detail``); 2xx JSON bodies are
JSON. Valid study submissions cannot start real drivers: the store holds one running study
(its "driver" is a harmless ``sleep`` in its own session), ``max_concurrent_studies=1`` and
``max_queued_studies=0``, so they get 429 (queue full), which is itself checked for a message.

POST /v1/curvature is fuzzed the same way: a running curvature job (another ``sleep``) holds
its kind's only slot. The success paths (202, stored ``queued``) of both POSTs run against a
second server whose queue has room but whose slots stay taken, so nothing ever launches
(:func:`test_fuzz_success_paths_queue_and_never_launch`).
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from service.cli.demo import _stop, start_api
from service.store import Store, StudyRow

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis==4.32.5")
from schemathesis import GenerationMode  # noqa: E402

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = int(os.environ.get("PHITUNE_FUZZ_EXAMPLES", "15"))
EXCLUDED: set[tuple[str, str]] = set()


def hold_the_only_slots(data_dir, blocker: subprocess.Popen) -> str:
    """A running study, curvature job and recommendation job whose "driver" is ``blocker``:
    with ``max_concurrent_studies=1`` no submitted job can start. Returns the study's id."""
    from service.schemas import StudyCreate
    from service.store import recommendation_jobs
    from service.store.curvature_jobs import CurvatureJobRow, create_job

    store = Store(f"sqlite:///{data_dir / 'phitune.db'}")
    row, _ = store.create_study({"model": "mlp", "dataset": "digits",
                                 "budget": {"steps": 100}}, "holds the only slot")
    store.update_study(row.id, status="running")
    store.record_launch(row.id, pid=blocker.pid)
    job = create_job(store, {"model": "mlp", "dataset": "digits"})
    with store.session() as s:
        s.get(CurvatureJobRow, job.id).status = "running"
    store.record_launch(job.id, pid=blocker.pid, table=CurvatureJobRow)
    rec = recommendation_jobs.create_job(store, StudyCreate.model_validate(
        {"model": "mlp", "dataset": "digits", "budget": {"steps": 100}}).model_dump(mode="json"))
    with store.session() as s:
        s.get(recommendation_jobs.RecommendationJobRow, rec.id).status = "running"
    store.record_launch(rec.id, pid=blocker.pid, table=recommendation_jobs.RecommendationJobRow)
    store.engine.dispose()
    return row.id


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fuzz")
    blocker = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    blocker_study = hold_the_only_slots(data_dir, blocker)
    env = {"PHITUNE_API_TOKEN": TOKEN, "PHITUNE_MAX_CONCURRENT_STUDIES": "1",
           "PHITUNE_MAX_QUEUED_STUDIES": "0",  # the queue is full: valid submits get 429
           "PHITUNE_RECONCILE_INTERVAL_S": "0", "PHITUNE_RAY_DASHBOARD": "false"}
    proc, url = start_api(data_dir, None, data_dir / "api.log", extra_env=env)
    try:
        yield url, data_dir, blocker_study
    finally:
        _stop(proc)
        blocker.kill()
        blocker.wait()


def check_response(case: Any, response: Any) -> None:
    where = f"{case.method} {case.formatted_path} -> {response.status_code}"
    assert response.status_code < 500, f"{where}: {response.text[:500]}"
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and body.get("detail"), f"{where}: no message: {body}"
        if isinstance(body["detail"], list):
            assert all(item.get("msg") for item in body["detail"]), f"{where}: {body}"
    if response.status_code < 300 and "json" in response.headers.get("content-type", ""):
        response.json()


def operations(url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    ops = [result.ok() for result in schema.get_all_operations()]
    return [op for op in ops if (op.method.upper(), op.path) not in EXCLUDED]


def fuzz(strategy: Any, url: str, label: str, seen: dict[str, set[int]], examples: int,
         token: bool = True) -> None:
    """Run ``examples`` generated requests; with ``token=False`` the mutating request goes out
    without credentials and must be refused."""

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        # our token, not a generated Authorization header
        case.headers = {**headers, **AUTH} if token else headers
        response = case.call(base_url=url, timeout=30)
        seen.setdefault(label, set()).add(response.status_code)
        if not token:
            # dependencies resolve in order: an invalid body may be reported (422) before the
            # missing token; what must never happen is a 2xx or a 404 that ran the route
            assert response.status_code in (401, 413, 422), f"{label}: {response.status_code}"
        check_response(case, response)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz_every_operation(server, mode):
    url, data_dir, blocker_study = server
    ops = operations(url)
    assert len(ops) >= 10, [f"{o.method} {o.path}" for o in ops]
    seen: dict[str, set[int]] = {}
    for op in ops:
        label = f"{op.method.upper()} {op.path}"
        fuzz(op.as_strategy(generation_mode=mode), url, label, seen, EXAMPLES)
        if op.method.upper() == "GET" and "{study_id}" in op.path:
            # the same reads on a study that exists (running, no result yet)
            strategy = op.as_strategy(generation_mode=mode,
                                      path_parameters={"study_id": blocker_study})
            fuzz(strategy, url, f"{label} (exists)", seen, max(3, EXAMPLES // 3))
    # valid submissions were refused by the concurrency cap, never launched
    store = Store(f"sqlite:///{data_dir / 'phitune.db'}", migrate=False)
    rows, total = store.list_studies(limit=10)
    assert total == 1 and rows[0].id == blocker_study
    print({k: sorted(v) for k, v in sorted(seen.items())})


def test_fuzz_without_token_is_refused_on_mutations(server):
    url, _, _ = server
    seen: dict[str, set[int]] = {}
    for op in operations(url):
        if op.method.upper() not in ("GET", "HEAD", "OPTIONS"):
            fuzz(op.as_strategy(), url, f"{op.method.upper()} {op.path}", seen, 5, token=False)
    assert seen


def test_valid_submission_over_the_cap_is_429_with_message(server):
    import httpx

    url, _, _ = server
    spec = {"model": "mlp", "dataset": "digits", "budget": {"steps": 100}, "num_trials": 2}
    r = httpx.post(f"{url}/v1/studies", json=spec, headers=AUTH)
    assert r.status_code == 429 and "max_concurrent_studies" in r.json()["detail"]
    r = httpx.post(f"{url}/v1/studies", json=spec, headers={**AUTH, "Idempotency-Key": "k"})
    assert r.status_code == 429, "a new idempotency key does not bypass the cap"


@pytest.fixture(scope="module")
def queueing_server(tmp_path_factory):
    """Room in the queue (valid submits are 202 ``queued``), every slot held: nothing runs."""
    data_dir = tmp_path_factory.mktemp("fuzz-queue")
    blocker = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    hold_the_only_slots(data_dir, blocker)
    env = {"PHITUNE_API_TOKEN": TOKEN, "PHITUNE_MAX_CONCURRENT_STUDIES": "1",
           "PHITUNE_MAX_QUEUED_STUDIES": "1000", "PHITUNE_RECONCILE_INTERVAL_S": "0",
           "PHITUNE_RAY_DASHBOARD": "false", "PHITUNE_LOCAL_RAY": "per-study"}
    proc, url = start_api(data_dir, None, data_dir / "api.log", extra_env=env)
    try:
        yield url, data_dir
    finally:
        _stop(proc)
        blocker.kill()
        blocker.wait()


#: Registered names (the schema cannot enumerate a plugin registry, so generated names
#: would almost always be 422): the rest of each body is generated from the schema.
VALID_NAMES = {"model": "mlp", "dataset": "digits", "model_kwargs": {}, "dataset_kwargs": {}}


def test_fuzz_success_paths_queue_and_never_launch(queueing_server):
    """Schema-valid bodies with registered names: each POST is 202 (stored ``queued``) or a
    4xx with a message (a configured cap, a batch larger than the data), never a 5xx, and no
    submitted job ever starts (both kinds' slots stay held)."""
    from service.store.curvature_jobs import CurvatureJobRow

    url, data_dir = queueing_server
    seen: dict[str, set[int]] = {}
    for op in operations(url):
        if op.method.upper() == "POST" and op.path in ("/v1/studies", "/v1/curvature"):
            fuzz_valid(op, url, f"POST {op.path}", seen)
    assert 202 in seen.get("POST /v1/studies", set()), seen
    assert 202 in seen.get("POST /v1/curvature", set()), seen
    store = Store(f"sqlite:///{data_dir / 'phitune.db'}", migrate=False)
    for table in (StudyRow, CurvatureJobRow):  # only the blockers run; the rest waits
        assert store.count_status(table, "running") == 1, table
        assert store.count_status(table, "queued") >= 1, table
    print({k: sorted(v) for k, v in sorted(seen.items())})


def fuzz_valid(op: Any, url: str, label: str, seen: dict[str, set[int]]) -> None:
    """Positive cases of ``op`` with :data:`VALID_NAMES` (and a small budget) patched in."""

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def run(case: Any) -> None:
        if isinstance(case.body, dict):
            case.body = {**case.body, **VALID_NAMES}
            if label.endswith("studies"):  # a budget the caps allow
                case.body["budget"] = {"steps": 100}
        headers = {k: v for k, v in (case.headers or {}).items()
                   if k.lower() != "authorization"}
        case.headers = {**headers, **AUTH}
        response = case.call(base_url=url, timeout=30)
        seen.setdefault(label, set()).add(response.status_code)
        check_response(case, response)
        if response.status_code == 202:
            assert response.json()["status"] == "queued", response.text[:300]

    run()
