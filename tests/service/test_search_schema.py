"""Search settings: the schema (422 naming the field) and `tuning` (ValueError naming it) refuse
the same ladders; the result schemas mirror `tuning.results` field for field; the spec maps
onto `tuning.specs` once."""

from __future__ import annotations

import copy
import dataclasses
import typing
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service import schemas
from service.api.main import create_app
from service.config import Settings
from service.errors import InvalidSpecError
from service.launch.runner import spec_from_study
from trainables.config import TrainConfig
from tuning import results
from tuning.specs import LadderSpec, StudySpec

VALID: dict[str, Any] = {"model": "mlp", "dataset": "digits", "budget": {"steps": 400},
                         "num_trials": 8, "eval_every": 50}
LOOPBACK = "http://127.0.0.1"


@pytest.fixture()
def client(tmp_path):
    settings = Settings(data_dir=tmp_path, max_trials=64, max_budget_steps=100_000, ray_num_cpus=2)
    with TestClient(create_app(settings), base_url=LOOPBACK) as c:
        yield c


# One table, both layers: (ladder settings, other spec fields, the field the error names).
BAD_LADDERS = [
    ({"eta": 1}, {}, "eta"),
    ({"min_fraction": 0.1}, {}, "min_fraction"),  # 40 steps < one eval interval of 50
    ({"rungs": 3}, {}, "rungs"),  # 8 candidates cannot fill 3 rungs at eta 3 (needs 9)
    ({"rungs": 3, "eta": 2}, {"eval_every": 150}, "rungs"),  # lowest rung 100 < 150
    ({"rungs": 2, "brackets": 3}, {}, "brackets"),
    ({"iterations": 9}, {}, "iterations"),
]


@pytest.mark.parametrize(("ladder", "other", "field"), BAD_LADDERS)
def test_bad_ladders_are_refused_by_schema_and_tuning_naming_the_field(client, ladder, other,
                                                                       field):
    with pytest.raises(ValueError, match=field):
        StudySpec(study_id="s", total_steps=400, num_trials=8,
                  train=TrainConfig(model="mlp", dataset="digits",
                                    eval_every=other.get("eval_every", 50)),
                  ladder=LadderSpec(**ladder))
    spec = {**copy.deepcopy(VALID), **other, "ladder": ladder}
    response = client.post("/v1/studies", json=spec)
    assert response.status_code == 422, response.text
    assert field in response.text


#: The same 400 steps as ``VALID``, given in epochs: digits capped at 400 training examples,
#: 4 batches of 100 per epoch, 100 epochs (the registry knows the size without loading).
IN_EPOCHS: dict[str, Any] = {**VALID, "budget": {"epochs": 100}, "batch_size": 100,
                             "dataset_kwargs": {"subset": 400}}


@pytest.mark.parametrize(("ladder", "other", "field"),
                         [c for c in BAD_LADDERS if c[0] != {"eta": 1}])
def test_a_budget_in_epochs_is_held_to_the_same_ladder_bounds_at_submit(client, ladder, other,
                                                                        field):
    """A built-in dataset's size is known at POST, so a ladder that cannot fit an epoch
    budget is a 422 naming ``ladder.*`` instead of a study that fails in its driver."""
    spec = {**copy.deepcopy(IN_EPOCHS), **other, "ladder": ladder}
    response = client.post("/v1/studies", json=spec)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "ladder", field]
    assert "budget.epochs=100 is 400 steps" in error["msg"]
    assert client.get("/v1/studies").json()["count"] == 0, "nothing stored"


def test_the_submit_check_converts_epochs_like_the_driver(tmp_path):
    """No false 422: the steps the POST check derives from the registry's known size are the
    steps the driver gets from the loaded dataset."""
    from service.api.spec_checks import check_epoch_budget
    from service.launch.study_driver import total_steps_of

    settings = Settings(data_dir=tmp_path)
    for kwargs, batch, epochs in (({"subset": 400}, 100, 100), ({}, 64, 3.5),
                                  ({"val_fraction": 0.5}, 32, 2)):
        spec = schemas.StudyCreate.model_validate(
            {**VALID, "budget": {"epochs": epochs}, "batch_size": batch, "eval_every": 10,
             "dataset_kwargs": kwargs, "ladder": {"rungs": 2}})
        steps = total_steps_of(spec, settings)  # loads digits
        assert spec.ladder_problem(steps) is None
        check_epoch_budget(spec)  # fits: no error
        # one step more per eval interval than the lowest rung has: refused at submit
        tight = spec.model_copy(update={"eval_every": round(steps / 3) + 1})
        with pytest.raises(InvalidSpecError, match=f"is {steps} steps") as refused:
            check_epoch_budget(tight)
        assert refused.value.field == "ladder.rungs"


# Every pydantic mirror and the dataclass it mirrors.
MIRRORS = [
    (schemas.BestSchedule, results.BestSchedule),
    (schemas.BudgetPublic, results.BudgetResult),
    (schemas.RungResult, results.RungResult),
    (schemas.FinalistRow, results.FinalistRow),
    (schemas.BaselineRow, results.BaselineRow),
    (schemas.BudgetRow, results.BudgetRow),
    (schemas.TargetEstimate, results.TargetEstimate),
    (schemas.ComputeSpent, results.ComputeSpent),
    (schemas.Winner, results.Winner),
    (schemas.StudyResultPublic, results.StudyResult),
]


@pytest.mark.parametrize(("mirror", "original"), MIRRORS, ids=lambda c: c.__name__)
def test_each_result_mirror_has_the_fields_of_its_dataclass(mirror, original):
    fields = {f.name for f in dataclasses.fields(original)}
    if original is results.StudyResult:
        fields |= {"best", "winner"}  # properties of the dataclass, serialised by to_dict
    assert set(mirror.model_fields) == fields
    hints = typing.get_type_hints(original)
    for name in fields - {"best", "winner"}:
        dc_default = next(f for f in dataclasses.fields(original) if f.name == name)
        has_default = (dc_default.default is not dataclasses.MISSING
                       or dc_default.default_factory is not dataclasses.MISSING)
        assert mirror.model_fields[name].is_required() == (not has_default), name
        assert name in hints


def test_a_stored_result_validates_against_the_public_schema():
    best = results.BestSchedule(schedule="uba", phi=0.3, phases=1, eta_max=0.1, eta_min=0.0,
                                variant="restart", total_steps=10, metric="val_accuracy",
                                value=0.8, trial_id="t", lr_curve=[0.1] * 10, value_std=0.01,
                                n_seeds=3, seeds=[0, 1, 2])
    result = results.StudyResult(
        metric="val_accuracy", mode="max",
        budgets=[results.BudgetResult(10, 1.0, 4, 0, best)],
        rungs=[results.RungResult(10, 1.0, True, 4, 4, 0, 0.8)],
        compute=results.ComputeSpent(steps=40, units=4.0, full_budget_steps=10, search_steps=40),
        target=results.TargetEstimate(target=0.5, steps=10, kind="measured"))
    public = schemas.StudyResultPublic.model_validate(result.to_dict())
    assert public.best is not None and public.best.n_seeds == 3
    assert public.compute is not None and public.compute.units == 4.0


def test_spec_maps_search_settings_and_eta_max_scale(tmp_path):
    spec = schemas.StudyCreate.model_validate({
        **VALID, "optimizer": {"lr": 0.2},
        "search": {"sampler": "gp", "eta_max_scale": {"min": 0.5, "max": 2.0}},
        "ladder": {"eta": 2}, "finalists": 1, "finalist_seeds": 3})
    out = spec_from_study("s1", spec, Settings(data_dir=tmp_path), 400)
    assert out.method == "ladder" and out.ladder == LadderSpec(eta=2)
    assert out.search.sampler == "gp"
    assert out.search.eta_max_factors == (0.5, 2.0)
    assert out.eta_range == pytest.approx((0.1, 0.4))
    assert (out.num_finalists, out.finalist_seeds) == (1, 3)
    legacy = schemas.StudyCreate.model_validate({**VALID, "early_stopping": True})
    assert spec_from_study("s2", legacy, Settings(data_dir=tmp_path), 400).method == "asha"
    with pytest.raises(ValueError, match="eta_max_scale"):
        schemas.StudyCreate.model_validate({**VALID, "search": {
            "eta_max": {"min": 0.01, "max": 1}, "eta_max_scale": {"min": 0.5, "max": 2}}})


# η_max is searched by default (issue 20); each way of opting out maps onto tuning's spec.
@pytest.mark.parametrize(("eta", "factors", "lr"), [
    (None, (0.25, 4.0), 0.1), ("fixed", None, 0.1), (0.3, None, 0.3)])
def test_eta_max_default_fixed_or_a_number(tmp_path, eta, factors, lr):
    search = {} if eta is None else {"eta_max": eta}
    spec = schemas.StudyCreate.model_validate({**VALID, "optimizer": {"lr": 0.1},
                                               "search": search})
    out = spec_from_study("e", spec, Settings(data_dir=tmp_path), 400)
    assert out.search.eta_max_factors == factors and out.train.lr == pytest.approx(lr)
    want = None if factors is None else (lr * factors[0], lr * factors[1])
    assert out.eta_range == (pytest.approx(want) if want else None)


@pytest.mark.parametrize(("change", "field"), [
    ({"search": {"eta_max": {"min": 0.2, "max": 0.2}}}, "search.eta_max"),
    ({"search": {"eta_max": {"min": 0.0, "max": 0.2}}}, "search.eta_max"),
    ({"search": {"eta_max": {"min": 0.3, "max": 0.2}}}, "search.eta_max"),
    ({"search": {"eta_max": -0.1}}, "search.eta_max"),
    ({"search": {"eta_max": 0}}, "search.eta_max"),
    ({"search": {"eta_max_scale": {"min": 1.0, "max": 1.0}}}, "search.eta_max_scale"),
    ({"compare": ["cosine"], "num_trials": 1}, "compare"),
    ({"compare": ["cosine"], "compare_eta_max": [0.1]}, "compare_eta_max"),
    ({"compare_tuning": "grid"}, "compare_tuning"),
])
def test_bad_eta_max_and_untunable_compare_arms_are_422_naming_the_field(client, change, field):
    body = {**VALID, **change}
    resp = client.post("/v1/studies", json=body)
    assert resp.status_code == 422, resp.text
    # named as a dotted field in the message, or as the error's location
    assert field in resp.text or all(f'"{part}"' in resp.text for part in field.split("."))
