"""AutoLRS as a compare arm: a real study (Ray, Optuna, digits) with ``compare: [autolrs]``
trains it on the same evaluation seeds as UBA, counts its search in its row and in the
study's compute, and lets it compete for the winner; stages that cannot fit a budget are
refused when the spec is built."""

from __future__ import annotations

import dataclasses
import math

import pytest
import ray
import torch

from service import schemas
from trainables.autolrs import AutoLRSSettings
from trainables.config import TrainConfig
from tuning.arms import SELF_TUNING, arm_config, resolve_arm
from tuning.compare import autolrs_schedule
from tuning.results import RecordingSink
from tuning.specs import SearchSpace, StudySpec
from tuning.study import run_study

#: τ₀ = 6, τ′₀ = 4 at T = 60 (stages 6, 12, 24, 18), two candidates per stage.
SETTINGS = AutoLRSSettings(tau_fraction=0.1, tau_prime_fraction=4 / 60, candidates=2)


def spec(tmp_path, **kw) -> StudySpec:
    base = dict(
        study_id="autolrs-test",
        train=TrainConfig(model="mlp", dataset="digits", lr=0.2, batch_size=64, eval_every=20,
                          model_kwargs={"hidden_sizes": [32]}),
        total_steps=60,
        search=SearchSpace(phi_min=0.3, phi_max=30, phases_min=1, phases_max=1),
        num_trials=2,
        max_concurrent_trials=2,
        storage_path=str(tmp_path / "ray"),
        compare=("autolrs",),
        seeds=2,
        autolrs=SETTINGS,
    )
    return StudySpec(**{**base, **kw})


def test_autolrs_is_an_arm_that_tunes_itself():
    assert resolve_arm("autolrs") == "autolrs" and "autolrs" in SELF_TUNING
    base = TrainConfig(model="mlp", dataset="digits", lr=0.2, total_steps=60)
    cfg = arm_config("autolrs", base, {"lr": 0.3, "autolrs": SETTINGS})
    assert cfg.schedule == "autolrs" and cfg.lr == 0.3
    assert AutoLRSSettings.from_params(cfg.schedule_params) == SETTINGS
    with pytest.raises(ValueError, match="autolrs"):  # the valid list names it
        resolve_arm("autolr")


@pytest.mark.parametrize(("kw", "field"), [
    (dict(autolrs=AutoLRSSettings()), "tau_prime_fraction"),  # T/64 of 60 steps: 1 step
    # fits T = 60, but at the 50 % budget (30 steps) a candidate window is 2 steps
    (dict(autolrs=SETTINGS, budget_fractions=(1.0, 0.5)), "tau_prime_fraction"),
    # the first stage and its search: 30 + 3 x 15 steps > 60
    (dict(autolrs=AutoLRSSettings(tau_fraction=0.5, tau_prime_fraction=0.25, candidates=3)),
     "tau_fraction"),
])
def test_stages_that_do_not_fit_a_budget_are_refused_naming_the_field(tmp_path, kw, field):
    with pytest.raises(ValueError, match=field):
        spec(tmp_path, **kw)
    # without the arm in compare, the settings are not the spec's concern
    spec(tmp_path, compare=(), **kw)


def _stage(start: int, tau: int, lr: float) -> dict:
    return {"stage": 0, "start": start, "tau": tau, "tau_prime": 2, "lr": lr, "forecast": 1.0,
            "candidates": []}


def test_autolrs_schedule_replays_the_median_seed_with_repeated_lrs_merged():
    runs = {0: {"stages": [_stage(0, 6, 0.1), _stage(6, 12, 0.4), _stage(18, 24, 0.2)]},
            1: {"stages": [_stage(0, 6, 0.2), _stage(6, 12, 0.2), _stage(18, 24, 0.05)]},
            2: {"stages": [_stage(0, 6, 0.3), _stage(6, 12, 0.3), _stage(18, 24, 0.3)]}}
    got = autolrs_schedule(42, {0: 0.9, 1: 0.5, 2: 0.7}, runs)  # median value 0.7: seed 2
    assert got == {"schedule": "piecewise", "total_steps": 42, "eta_max": 0.3,
                   "boundaries": None, "factors": [1.0], "from_seed": 2}  # one segment
    # two seeds: the lower median (seed 1, 0.5); its repeated 0.2 is one segment
    got = autolrs_schedule(42, {0: 0.9, 1: 0.5}, runs)
    assert got["from_seed"] == 1 and got["boundaries"] == [18]
    assert got["eta_max"] == 0.2 and got["factors"] == [1.0, 0.05 / 0.2]
    assert autolrs_schedule(42, {0: 0.9}, {0: {"stages": []}}) == {}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_compare_autolrs_runs_on_the_evaluation_seeds_with_its_compute(local_ray, tmp_path):
    sink = RecordingSink()
    result = run_study(spec(tmp_path), sink)

    rows = {r.schedule: r for r in result.baselines if r.budget_steps == 60}
    assert set(rows) == {"uba", "autolrs"}
    auto = rows["autolrs"]
    assert auto.seeds == rows["uba"].seeds == [0, 1] and auto.n == 2 and not auto.errors
    assert auto.tuned and auto.eta_max == pytest.approx(0.2)  # the centre of its lr search
    runs = auto.params["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    for run in runs:
        stages = run["stages"]
        assert [(s["start"], s["tau"]) for s in stages] == [(0, 6), (6, 12), (18, 24), (42, 18)]
        for s in stages:  # each stage trained the candidate with the best forecast
            best = min(s["candidates"], key=lambda c: (
                math.inf if c["forecast"] is None else c["forecast"], c["lr"]))
            assert s["lr"] == best["lr"]
        searched = sum(c["steps"] for s in stages for c in s["candidates"])
        assert run["trained_steps_total"] == 60 + searched
    # its row's compute is its search per run (candidate steps beyond the budget), and the
    # study's comparison compute counts everything it trained
    mean_search = sum(r["trained_steps_total"] - 60 for r in runs) / 2
    assert auto.tuning_units == pytest.approx(mean_search / 60) and auto.tuning_units > 1
    assert result.compute.compare_tuning_steps == 0  # no ladder for a self-tuning arm
    assert result.compute.compare_steps == 2 * 60 + sum(r["trained_steps_total"] for r in runs)
    # it competes for the winner on the paired seeds
    (winner,) = result.winners
    assert winner.arm == max(rows.values(), key=lambda r: r.mean).schedule
    assert winner.n == 2
    # its row is a schedule for a user's loop: the median seed's stage lrs, piecewise
    # (two seeds: the lower median by value), from the row and its JSON copy alike
    values = dict(zip(auto.seeds, auto.values, strict=True))
    seed = min(values, key=lambda s: (values[s], s))
    assert auto.params["from_seed"] == seed and auto.params["schedule"] == "piecewise"
    assert auto.params["total_steps"] == 60
    (chosen,) = [r for r in runs if r["seed"] == seed]
    assert auto.params["eta_max"] == max(s["lr"] for s in chosen["stages"])
    client_row = schemas.BaselineRow.model_validate_json(
        schemas.BaselineRow.model_validate(dataclasses.asdict(auto)).model_dump_json())
    for row in (auto, client_row):
        opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=123.0)
        sched = row.to_scheduler(opt)
        lrs = [sched.schedule.lr(i) for i in range(60)]
        for s in chosen["stages"]:  # each stage trained at its lr, from its start to its end
            assert lrs[s["start"]] == pytest.approx(s["lr"], rel=1e-12)
            assert lrs[s["start"]:s["start"] + s["tau"]] == pytest.approx(
                [s["lr"]] * s["tau"], rel=1e-12)
        assert opt.param_groups[0]["lr"] == pytest.approx(chosen["stages"][0]["lr"], rel=1e-12)
    if winner.arm == "autolrs":
        assert winner.params == auto.params
        winner.to_scheduler(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0))
    compare = [t for t in sink.trials.values() if t.params.get("arm") == "autolrs"]
    assert len(compare) == 2 and all(t.params["kind"] == "compare"
                                     and t.params["schedule"] == "autolrs"
                                     and t.status == "terminated" for t in compare)
