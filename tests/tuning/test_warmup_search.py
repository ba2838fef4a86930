"""Warmup in the search: a fixed or searched fraction of each run, so every horizon of the
ladder warms up alike; the trial config, the Optuna space and the best schedule's LR curve
agree on it."""

from __future__ import annotations

import optuna
import pytest
import torch

from trainables.config import TrainConfig
from trainables.loop import build_scheduler
from tuning.executor import candidate_config
from tuning.ladder import Candidate
from tuning.proposer import WARMUP, optuna_space, warmup_steps
from tuning.schedules import create_schedule
from tuning.specs import SearchSpace, StudySpec
from tuning.study import best_schedule


def _spec(**search) -> StudySpec:
    return StudySpec(study_id="w", train=TrainConfig(model="mlp", dataset="digits", lr=0.1),
                     total_steps=200, method="asha", search=SearchSpace(**search))


def test_fixed_warmup_scales_with_the_horizon_and_reaches_the_trial_scheduler() -> None:
    spec = _spec(warmup_min=0.1, warmup_max=0.1)
    assert WARMUP not in optuna_space(spec)  # fixed: not a search dimension
    for steps in (50, 100, 200):
        cfg = candidate_config(spec, Candidate(0, {"phi": 2.0, "phases": 1}), steps, seed=0)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        sched = build_scheduler(cfg, opt)  # what the trial runs
        assert sched.schedule.warmup_steps == steps // 10
        want = create_schedule("uba", steps, phi=2.0, eta_max=0.1, warmup_steps=steps // 10)
        assert sched.schedule == want


def test_searched_warmup_is_an_optuna_dimension_and_lands_in_the_best_curve() -> None:
    spec = _spec(warmup_min=0.0, warmup_max=0.25)
    dist = optuna_space(spec)[WARMUP]
    assert isinstance(dist, optuna.distributions.FloatDistribution)
    assert (dist.low, dist.high) == (0.0, 0.25)
    params = {"phi": 3.0, "phases": 2, WARMUP: 0.2}
    assert warmup_steps(spec, params, 200) == 40
    best = best_schedule(spec, 200, params, value=0.9, trial_id="t")
    assert best.warmup_steps == 40
    assert best.lr_curve == pytest.approx(create_schedule(
        "uba", 200, phi=3.0, phases=2, eta_max=0.1, warmup_steps=40).values(), rel=1e-12)
    assert best.lr_curve[:3] == pytest.approx([0.1 / 40, 0.2 / 40, 0.3 / 40])
    # the result rebuilds the same curve, warmup included
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert best.to_scheduler(opt).schedule.values() == pytest.approx(best.lr_curve, rel=1e-12)


def test_warmup_never_eats_the_whole_run_and_bad_ranges_are_refused() -> None:
    spec = _spec(warmup_min=0.9, warmup_max=0.9)
    assert warmup_steps(spec, {}, 1) == 0 and warmup_steps(spec, {}, 10) == 9
    for bad in ({"warmup_min": 0.3, "warmup_max": 0.2}, {"warmup_min": -0.1},
                {"warmup_max": 1.0}):
        with pytest.raises(ValueError, match="warmup"):
            SearchSpace(**bad)
