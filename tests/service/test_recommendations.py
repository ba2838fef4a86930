"""``POST /v1/recommendations`` through a real app: the body of ``POST /v1/studies`` in, the
recommended φ/phases with expected gap and labelled evidence out; works on an empty store,
learns from finished studies, never answers NaN, refuses what a study would refuse. A spec
whose curvature is measured is a job (202 + ``Location``, run by its real driver process);
one with nothing to measure is answered at once (200)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.config import Settings
from service.schemas import PhiRecommendation, StudyCreate
from service.store import Store

LOOPBACK = "http://127.0.0.1"
SPEC: dict[str, Any] = {"model": "mlp", "model_kwargs": {"hidden_sizes": [16]},
                        "dataset": "digits", "optimizer": {"name": "sgd", "lr": 0.1},
                        "batch_size": 64, "budget": {"steps": 100}, "num_trials": 4}


def _strict(text: str) -> Any:
    def no_constant(c: str) -> Any:
        raise AssertionError(f"non-finite number {c} in a response")
    return json.loads(text, parse_constant=no_constant)


def _recommend(client: TestClient, spec: dict[str, Any], timeout: float = 300) -> Any:
    """POST, then poll the queued job's ``Location`` until it ends; the recommendation."""
    r = client.post("/v1/recommendations", json=spec)
    assert r.status_code == 202, r.text
    job = _strict(r.text)
    assert job["status"] in ("queued", "running") and job["result"] is None
    location = r.headers["location"]
    assert location == f"/v1/recommendations/{job['id']}" == job["links"]["self"]["href"]
    deadline = time.monotonic() + timeout
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"recommendation job still {job['status']}"
        time.sleep(0.3)
        got = client.get(location)
        assert got.status_code == 200, got.text
        job = _strict(got.text)
    assert job["status"] == "succeeded", job["error"]
    assert job["spec"] == StudyCreate.model_validate(spec).model_dump(mode="json")
    return job["result"]


@pytest.fixture()
def app(tmp_path):
    settings = Settings(data_dir=tmp_path, max_trials=10, ray_num_cpus=2,
                        max_model_params=200_000)
    with TestClient(create_app(settings), base_url=LOOPBACK) as c:
        yield c, settings


def test_empty_store_gets_a_measured_recommendation(app):
    client, _ = app
    rec = PhiRecommendation.model_validate(_recommend(client, SPEC))
    assert rec.source == "model" and rec.phi > 0 and rec.phases == 1
    assert rec.budget_steps == 100 and rec.optimizer == "sgd" and rec.history_cases == 0
    sources = [s["source"] for s in rec.suggestions]
    assert sources[0] == "model"
    assert {"paper_default", "theory", "calibrated"} <= set(sources)
    assert rec.features["init_lambda_max"] > 0 and rec.feature_cost_s["init"] > 0
    assert {"median", "worst", "n"} <= set(rec.expected_gap["points"])
    assert rec.model_provenance["refit_command"].startswith("python -m bench.phi_suggestions")
    assert rec.neighbours and all(n["source"] == "corpus" for n in rec.neighbours)


def test_adamw_and_the_get_form_still_work(app):
    client, _ = app
    spec = {**SPEC, "optimizer": {"name": "adamw", "lr": 3e-3}}
    rec = _recommend(client, spec)
    assert rec["optimizer"] == "adamw" and rec["phi"] > 0
    got = client.get("/v1/recommendations", params={"model": "mlp", "dataset": "digits"})
    assert got.status_code == 200 and got.json()["source"] == "calibrated"


@pytest.mark.parametrize("change,field", [
    ({"model_kwargs": {"hidden_sizes": [4096, 4096]}}, "model_kwargs"),  # over the param cap
    ({"model": "no-such-model"}, "model"),
    ({"budget": {"steps": 0}}, "steps"),
    ({"num_trials": 1000}, "num_trials"),
])
def test_what_a_study_would_refuse_is_a_422_naming_the_field(app, change, field):
    client, _ = app
    r = client.post("/v1/recommendations", json={**SPEC, **change})
    assert r.status_code == 422, r.text
    assert field in r.text


def test_an_unstable_lr_still_answers_finite_numbers(app):
    client, _ = app
    rec = _recommend(client, {**SPEC, "optimizer": {"name": "sgd", "lr": 9.0}})
    assert rec["features"]["init_stability"] > rec["features"]["init_lambda_max"]


def test_finished_studies_feed_the_model(app):
    client, settings = app
    store = Store(settings.sqlalchemy_url)
    row, _ = store.create_study(StudyCreate.model_validate(SPEC).model_dump(mode="json"), "h")
    for i, (phi, value) in enumerate([(0.1, 0.80), (1.0, 0.86), (10.0, 0.83), (30.0, 0.7)]):
        store.upsert_trial(row.id, f"t{i}", budget_steps=100, status="TERMINATED",
                           params={"phi": phi, "phases": 1}, step=100,
                           metrics={"val_accuracy": value}, value=value)
    store.finish_study(row.id, "succeeded", result={"budgets": [
        {"budget_steps": 100, "best": {"phi": 1.0, "phases": 1, "value": 0.86}}]})
    rec = _recommend(client, SPEC)
    assert rec["history_cases"] == 1
    assert any(s["source"] == "history" for s in rec["suggestions"])
    # the study is a case of the model: same spec, distance 0 on its budget features
    assert any(n["source"] == f"history:{row.id}" for n in rec["neighbours"])


def test_nothing_to_measure_is_answered_at_once(app, monkeypatch):
    """A model over the measured size (here: any) gets the labelled budget-features fallback
    in the request itself (200), and no job."""
    import service.launch.recommendation as recommendation

    monkeypatch.setattr(recommendation, "MEASURE_MAX_PARAMS", 10)
    client, settings = app
    r = client.post("/v1/recommendations", json=SPEC)
    assert r.status_code == 200, r.text
    rec = PhiRecommendation.model_validate(_strict(r.text))
    assert rec.source == "model_partial_features" and "curvature not measured" in rec.warnings[0]
    from service.store.recommendation_jobs import RecommendationJobRow

    assert Store(settings.sqlalchemy_url).count_status(RecommendationJobRow, "queued",
                                                       "running", "succeeded") == 0


def test_a_recommendation_job_can_be_cancelled_and_unknown_ones_are_404(app):
    client, _ = app
    r = client.post("/v1/recommendations", json=SPEC)
    assert r.status_code == 202, r.text
    url = r.headers["location"]
    gone = client.delete(url)
    assert gone.status_code == 200 and gone.json()["status"] in ("cancelled", "succeeded")
    assert client.get(url).json()["status"] == gone.json()["status"]
    missing = client.get("/v1/recommendations/no-such-job")
    assert missing.status_code == 404 and "no-such-job" in missing.json()["detail"]


def test_client_and_cli_recommend_against_a_real_server(tmp_path, capsys):
    """``client.recommend(spec)`` and ``phitune recommend spec.yaml [--json]`` (uvicorn)."""
    import yaml

    from service.cli.demo import _stop, start_api
    from service.cli.main import main
    from service.client import PhiTuneClient

    proc, url = start_api(tmp_path, None, tmp_path / "api.log",
                          extra_env={"PHITUNE_LOCAL_RAY": "per-study"})
    try:
        with PhiTuneClient(url, timeout=300) as client:
            rec = client.recommend(StudyCreate.model_validate(SPEC))
        assert isinstance(rec, PhiRecommendation) and rec.source == "model"
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(SPEC))
        assert main(["--url", url, "recommend", str(path), "--json"]) == 0
        assert _strict(capsys.readouterr().out)["phi"] == rec.phi  # deterministic
        assert main(["--url", url, "recommend", str(path)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"phi={rec.phi:g} phases=1 source=model") and "theory" in out
    finally:
        _stop(proc)
