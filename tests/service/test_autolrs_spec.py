"""The ``autolrs`` compare arm in a spec: stages that cannot fit a budget are a 422 naming
``autolrs.<field>`` and a ValueError naming the same field in `tuning` (one table, both
layers); the settings mirror ``trainables.autolrs.AutoLRSSettings`` and map onto the spec."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service import schemas
from service.api.main import create_app
from service.api.spec_checks import check_epoch_budget
from service.config import Settings
from service.errors import InvalidSpecError
from service.launch.runner import spec_from_study
from trainables import autolrs
from trainables.config import TrainConfig
from tuning.specs import StudySpec

VALID: dict[str, Any] = {"model": "mlp", "dataset": "digits", "budget": {"steps": 400},
                         "num_trials": 8, "eval_every": 50, "compare": ["autolrs"]}

# (autolrs settings, budget fields, the field both layers name; None: both accept)
CASES = [
    ({}, {}, None),  # defaults at 400 steps: stages 25, 50, 100, 200, 25
    ({}, {"steps": 100}, "tau_prime_fraction"),  # T/64 of 100: a 2-step window
    ({}, {"fractions": [0.25, 1.0]}, "tau_prime_fraction"),  # fits 400, not 100
    ({"tau_fraction": 0.5, "tau_prime_fraction": 0.25}, {}, "tau_fraction"),  # 200+4*100 > 400
    ({"tau_fraction": 0.1, "tau_prime_fraction": 0.2}, {}, "tau_prime_fraction"),
    ({"tau_fraction": 0}, {}, "tau_fraction"),
    ({"tau_prime_fraction": -0.1}, {}, "tau_prime_fraction"),
    ({"candidates": 0}, {}, "candidates"),
    ({"lr_min_factor": 2.0, "lr_max_factor": 1.0}, {}, "lr_max_factor"),
]


@pytest.fixture()
def client(tmp_path):
    settings = Settings(data_dir=tmp_path, max_trials=64, max_budget_steps=100_000,
                        ray_num_cpus=2)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        yield c


def _tuning_spec(settings: dict[str, Any], budget: dict[str, Any]) -> StudySpec:
    steps = budget.get("steps", 400)
    return StudySpec(study_id="s", train=TrainConfig(model="mlp", dataset="digits"),
                     total_steps=steps, num_trials=8,
                     budget_fractions=tuple(budget.get("fractions", [1.0])),
                     compare=("autolrs",), autolrs=autolrs.AutoLRSSettings(**settings))


@pytest.mark.parametrize(("settings", "budget", "field"), CASES)
def test_schema_and_tuning_refuse_the_same_stages_naming_the_field(client, settings, budget,
                                                                   field):
    body = {**VALID, "autolrs": settings, "budget": {**VALID["budget"], **budget}}
    if field is None:  # valid: not posted (it would queue a study)
        schemas.StudyCreate.model_validate(body)
        _tuning_spec(settings, budget)
        return
    resp = client.post("/v1/studies", json=body)
    assert resp.status_code == 422, resp.text
    assert field in resp.text and "autolrs" in resp.text
    with pytest.raises(ValueError, match=field):
        _tuning_spec(settings, budget)


def test_without_the_arm_its_settings_do_not_bind_the_budget(client):
    spec = schemas.StudyCreate.model_validate({**VALID, "compare": ["cosine"],
                                               "budget": {"steps": 100}})
    assert spec.autolrs_problem(100) is None


def test_the_settings_mirror_the_dataclass_and_map_onto_the_spec(tmp_path):
    mirror = schemas.AutoLRSSettingsSpec()
    original = autolrs.AutoLRSSettings()
    assert set(schemas.AutoLRSSettingsSpec.model_fields) == {f.name for f in dataclasses.fields(original)}
    assert mirror.model_dump() == dataclasses.asdict(original)  # same defaults
    assert schemas.AUTOLRS_MIN_TAU_PRIME == autolrs.MIN_TAU_PRIME
    spec = schemas.StudyCreate.model_validate(
        {**VALID, "autolrs": {"candidates": 2, "tau_fraction": 0.125}})
    out = spec_from_study("s", spec, Settings(data_dir=tmp_path), 400)
    assert out.autolrs == autolrs.AutoLRSSettings(candidates=2, tau_fraction=0.125)
    assert out.compare == ("autolrs",)


def test_a_budget_in_epochs_is_held_to_the_same_stage_bounds():
    # digits at batch 128: 11 steps an epoch; 10 epochs = 110 steps, T/64 of it a 2-step window
    spec = schemas.StudyCreate.model_validate(
        {**VALID, "budget": {"epochs": 10}, "batch_size": 128, "eval_every": 10})
    with pytest.raises(InvalidSpecError, match="tau_prime_fraction") as refused:
        check_epoch_budget(spec)
    assert refused.value.field == "autolrs.tau_prime_fraction"
    ok = spec.model_copy(update={"autolrs": schemas.AutoLRSSettingsSpec(
        tau_fraction=0.2, tau_prime_fraction=0.05, candidates=2)})
    check_epoch_budget(ok)
