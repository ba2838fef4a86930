"""AutoLRS as a compare arm: a real study (Ray, Optuna, digits) with ``compare: [autolrs]``
trains it on the same evaluation seeds as UBA, counts its search in its row and in the
study's compute, and lets it compete for the winner; stages that cannot fit a budget are
refused when the spec is built."""

from __future__ import annotations

import math

import pytest
import ray

from trainables.autolrs import AutoLRSSettings
from trainables.config import TrainConfig
from tuning.arms import SELF_TUNING, arm_config, resolve_arm
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
    compare = [t for t in sink.trials.values() if t.params.get("arm") == "autolrs"]
    assert len(compare) == 2 and all(t.params["kind"] == "compare"
                                     and t.params["schedule"] == "autolrs"
                                     and t.status == "terminated" for t in compare)
