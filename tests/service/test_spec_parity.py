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
