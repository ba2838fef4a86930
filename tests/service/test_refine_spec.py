"""``refine: true`` in a study request: mapped onto tuning's ``StudySpec.refine``; a study with
no full-budget run (budget fraction 1.0 missing) or a trainer that records no gradient norms
(``trainer: external``) is a 422 naming ``refine``, and the same study refused by `tuning`
with a ValueError naming it (one rule, both layers)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.config import Settings
from service.launch.runner import spec_from_study
from service.schemas import StudyCreate
from tuning.specs import StudySpec

BASE: dict[str, Any] = {"model": "mlp", "dataset": "digits", "budget": {"steps": 100},
                        "num_trials": 2, "refine": True}
EXTERNAL: dict[str, Any] = {"trainer": "external", "budget": {"steps": 100}, "num_trials": 2,
                            "refine": True}


@pytest.fixture()
def client(tmp_path):
    settings = Settings(data_dir=tmp_path, ray_num_cpus=2, local_ray="per-study")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        yield c


def test_refine_maps_onto_the_tuning_spec(tmp_path) -> None:
    spec = spec_from_study("s", StudyCreate.model_validate(BASE), Settings(data_dir=tmp_path),
                           100)
    assert spec.refine is True
    off = spec_from_study("s", StudyCreate.model_validate({**BASE, "refine": False}),
                          Settings(data_dir=tmp_path), 100)
    assert off.refine is False


@pytest.mark.parametrize("body", [
    {**BASE, "budget": {"steps": 100, "fractions": [0.5]}},
    {**BASE, "budget": {"steps": 100, "fractions": [0.25, 0.5]}},
    EXTERNAL,
])
def test_refine_without_a_full_budget_run_or_norms_is_a_422_naming_refine(client, tmp_path,
                                                                          body) -> None:
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 422, r.text
    assert any(e["msg"].startswith("Value error, refine:") for e in r.json()["detail"]), r.text
    # the same study without refine is accepted by the schema and by tuning alike
    ok = StudyCreate.model_validate({**body, "refine": False})
    spec_from_study("s", ok, Settings(data_dir=tmp_path), 100)
    # and tuning refuses the refined one itself, naming the field
    spec = spec_from_study("s", ok, Settings(data_dir=tmp_path), 100)
    with pytest.raises(ValueError, match="^refine: "):
        StudySpec(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
                     if f.name != "refine"}, refine=True)
