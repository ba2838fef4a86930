"""``POST /v1/recommendations`` through a real app: the body of ``POST /v1/studies`` in, the
recommended φ/phases with expected gap and labelled evidence out; works on an empty store,
learns from finished studies, never answers NaN, refuses what a study would refuse."""

from __future__ import annotations

import json
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


@pytest.fixture()
def app(tmp_path):
    settings = Settings(data_dir=tmp_path, max_trials=10, ray_num_cpus=2,
                        max_model_params=200_000)
    with TestClient(create_app(settings), base_url=LOOPBACK) as c:
        yield c, settings


def test_empty_store_gets_a_measured_recommendation(app):
    client, _ = app
    r = client.post("/v1/recommendations", json=SPEC)
    assert r.status_code == 200, r.text
    body = _strict(r.text)
    rec = PhiRecommendation.model_validate(body)
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
    rec = _strict(client.post("/v1/recommendations", json=spec).text)
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
    r = client.post("/v1/recommendations", json={**SPEC, "optimizer": {"name": "sgd",
                                                                        "lr": 9.0}})
    assert r.status_code == 200, r.text
    rec = _strict(r.text)
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
    rec = _strict(client.post("/v1/recommendations", json=SPEC).text)
    assert rec["history_cases"] == 1
    assert any(s["source"] == "history" for s in rec["suggestions"])
    # the study is a case of the model: same spec, distance 0 on its budget features
    assert any(n["source"] == f"history:{row.id}" for n in rec["neighbours"])


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
