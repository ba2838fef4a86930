"""Katib / W&B-style spec fields: ``metric: val_perplexity`` (an LM metric, refused with 422
naming ``metric`` on a classification dataset), ``max_failed_trials`` (bounded in the schema,
mapped onto tuning's StudySpec), ``eta_min`` (already a spec field, mapped to the trials)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.config import Settings
from service.launch.runner import spec_from_study
from service.schemas import StudyCreate

BASE = {"model": "mlp", "dataset": "digits", "budget": {"steps": 100}, "num_trials": 2}


@pytest.fixture()
def client(tmp_path):
    settings = Settings(data_dir=tmp_path, ray_num_cpus=2, local_ray="per-study")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        yield c


def test_val_perplexity_needs_a_language_model_dataset(client) -> None:
    r = client.post("/v1/studies", json={**BASE, "metric": "val_perplexity"})
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "metric"] and "language-model" in err["msg"]
    r = client.post("/v1/studies", json={**BASE, "metric": "val_bleu"})
    assert r.status_code == 422 and "metric" in r.text


@pytest.mark.parametrize("bad", [-1, 1.5, "many"])
def test_max_failed_trials_bounds(client, bad) -> None:
    r = client.post("/v1/studies", json={**BASE, "max_failed_trials": bad})
    assert r.status_code == 422 and "max_failed_trials" in r.text


def test_new_fields_map_onto_the_tuning_spec(tmp_path) -> None:
    lm = StudyCreate.model_validate({**BASE, "dataset": "shakespeare_char",
                                     "model": "char_transformer", "metric": "val_perplexity",
                                     "max_failed_trials": 3, "eta_min": 0.001})
    out = spec_from_study("s1", lm, Settings(data_dir=tmp_path), 100)
    assert out.max_failed_trials == 3 and out.metric == "val_perplexity" and out.mode == "min"
    assert out.train.eta_min == 0.001
    plain = spec_from_study("s2", StudyCreate.model_validate(BASE), Settings(data_dir=tmp_path),
                            100)
    assert plain.max_failed_trials is None


@pytest.mark.parametrize("warmup,want", [(0, (0.0, 0.0)), (20, (0.2, 0.2)),
                                         ({"min": 0, "max": 30}, (0.0, 0.3))])
def test_warmup_steps_fixed_or_searched_map_to_fractions_of_each_run(tmp_path, warmup,
                                                                      want) -> None:
    spec = StudyCreate.model_validate({**BASE, "search": {"warmup_steps": warmup}})
    out = spec_from_study("s", spec, Settings(data_dir=tmp_path), 100)
    assert (out.search.warmup_min, out.search.warmup_max) == pytest.approx(want)
    assert out.search.searches_warmup == isinstance(warmup, dict)


@pytest.mark.parametrize("warmup", [100, -1, {"min": 5, "max": 2}, {"min": 0, "max": 150}])
def test_bad_warmup_is_a_422_naming_the_field(client, warmup) -> None:
    r = client.post("/v1/studies", json={**BASE, "search": {"warmup_steps": warmup}})
    assert r.status_code == 422 and "warmup_steps" in r.text, r.text


def test_warm_start_from_an_unknown_study_is_a_422(client) -> None:
    r = client.post("/v1/studies", json={**BASE, "warm_start_from": "no-such-study"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "warm_start_from"]


def test_warm_start_evaluates_the_sources_best_full_horizon_candidates_first(tmp_path) -> None:
    from service.launch.runner import warm_start, warm_start_points
    from service.store import Store
    from tuning.proposer import initial_points

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    src, _ = store.create_study(StudyCreate.model_validate(BASE).model_dump(mode="json"), "src")
    trials = [  # (id, budget, status, value, params)
        ("a", 100, "terminated", 0.80, {"phi": 1.0, "phases": 1, "kind": "search"}),
        ("b", 100, "terminated", 0.90, {"phi": 0.3, "phases": 2, "kind": "search"}),
        ("c", 100, "error", None, {"phi": 9.0, "phases": 1, "kind": "search"}),
        ("d", 50, "terminated", 0.99, {"phi": 30.0, "phases": 1, "kind": "search"}),  # shorter
        ("e", 100, "terminated", 0.95, {"schedule": "cosine", "kind": "baseline"}),
        ("f", 100, "terminated", 0.85, {"phi": 2.0, "phases": 3, "kind": "search"}),
    ]
    for tid, budget, status, value, params in trials:
        store.upsert_trial(src.id, tid, budget_steps=budget, status=status, value=value,
                           params=params, metrics={}, step=budget)
    assert warm_start_points(store, src.id, "max", 5) == [
        {"phi": 0.3, "phases": 2}, {"phi": 2.0, "phases": 3}, {"phi": 1.0, "phases": 1}]
    assert warm_start_points(store, src.id, "min", 1) == [{"phi": 1.0, "phases": 1}]

    spec = StudyCreate.model_validate({**BASE, "num_trials": 4, "warm_start_from": src.id})
    out = warm_start(spec_from_study("new", spec, Settings(data_dir=tmp_path), 100), store,
                     src.id)
    assert out.extra_points[:2] == ({"phi": 0.3, "phases": 2}, {"phi": 2.0, "phases": 3})
    first = initial_points(out)  # what the search evaluates before sampling
    # η_max is searched by default: a warm start without its own η_max starts at the study's lr
    assert first[:2] == [{"phi": 0.3, "phases": 2, "lr": 0.1}, {"phi": 2.0, "phases": 3, "lr": 0.1}]
