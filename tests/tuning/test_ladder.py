"""The horizon ladder's plan, promotion and compute accounting (pure; no Ray)."""

from __future__ import annotations

import math

import pytest

from tuning.ladder import compute_units, plan_brackets, plan_ladder, promote, spent_units


def horizons(ladder):
    return [r.steps for r in ladder.rungs]


def test_default_ladder_is_a_third_then_the_full_budget():
    ladder = plan_ladder(400, 8)
    assert horizons(ladder) == [133, 400]
    assert [r.candidates for r in ladder.rungs] == [8, 2]
    assert [r.promote for r in ladder.rungs] == [2, 0]
    assert ladder.top.steps == 400 and ladder.top.requested
    assert not ladder.rungs[0].requested
    assert ladder.planned_steps == 8 * 133 + 2 * 400
    assert ladder.planned_units == pytest.approx((8 * 133 + 800) / 400)


def test_eta_two_is_the_papers_budget_ladder_and_shares_the_requested_budgets():
    ladder = plan_ladder(400, 8, eta=2, budget_fractions=(0.25, 0.5, 1.0))
    assert horizons(ladder) == [100, 200, 400]
    assert [r.candidates for r in ladder.rungs] == [8, 4, 2]
    assert all(r.requested for r in ladder.rungs)


def test_requested_budgets_replace_internal_rungs_they_coincide_with():
    # eta=3 would put a rung at T/3; the requested 25 % and 50 % lie within sqrt(3) of it
    ladder = plan_ladder(400, 9, budget_fractions=(0.25, 0.5, 1.0))
    assert horizons(ladder) == [100, 200, 400]
    assert [r.candidates for r in ladder.rungs] == [9, 3, 1]
    # a requested budget far from every internal rung is added as its own rung
    ladder = plan_ladder(400, 9, eta=3, budget_fractions=(0.75, 1.0))
    assert horizons(ladder) == [133, 300, 400]
    assert [r.requested for r in ladder.rungs] == [False, True, True]


def test_min_top_keeps_enough_full_budget_candidates_for_the_finalists():
    ladder = plan_ladder(400, 9, eta=3, budget_fractions=(0.25, 0.5, 1.0), min_top=2)
    assert [r.candidates for r in ladder.rungs] == [9, 3, 2]


def test_soft_defaults_shrink_the_ladder_to_what_fits():
    # the trial budget cannot fill two rungs at eta=3: one rung, the full budget
    assert horizons(plan_ladder(400, 2)) == [400]
    # T/3 would be under one eval interval: only the full budget
    assert horizons(plan_ladder(60, 8, eval_every=30)) == [60]
    assert plan_ladder(60, 8, eval_every=30).rungs[0].eval_every == 30


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"eta": 1}, "eta"),
        ({"eta": 2.5}, "eta"),
        ({"min_fraction": 0.1, "eval_every": 50}, "min_fraction"),
        ({"min_fraction": 0.0}, "min_fraction"),
        ({"rungs": 3, "eta": 3}, "rungs"),  # 8 trials cannot fill 3 rungs at eta=3 (needs 9)
        ({"rungs": 3, "eta": 2, "eval_every": 150}, "rungs"),  # lowest rung 100 < 150
        ({"rungs": 0}, "rungs"),
        ({"budget_fractions": (0.0, 1.0)}, "budget_fractions"),
    ],
)
def test_bad_ladder_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        plan_ladder(400, 8, **kwargs)


def test_explicit_rungs_plan_exactly_that_many():
    ladder = plan_ladder(800, 16, eta=2, rungs=4)
    assert horizons(ladder) == [100, 200, 400, 800]
    assert [r.candidates for r in ladder.rungs] == [16, 8, 4, 2]


def test_brackets_start_later_with_fewer_candidates():
    b = plan_brackets(400, 9, 2, eta=3)
    assert len(b) == 2
    assert horizons(b[0]) == [133, 400] and [r.candidates for r in b[0].rungs] == [9, 3]
    assert horizons(b[1]) == [400]
    assert b[1].rungs[0].candidates == math.ceil(9 * 1 / (3 / 2))
    with pytest.raises(ValueError, match="brackets"):
        plan_brackets(400, 9, 3, eta=3)


def test_promote_is_deterministic_and_skips_diverged_runs():
    results = {3: 0.9, 1: 0.8, 2: 0.9, 0: float("nan"), 4: None, 5: 0.95}
    assert promote(results, 3, "max") == [5, 2, 3]  # tie 0.9: key order, not dict order
    assert promote(dict(reversed(list(results.items()))), 3, "max") == [5, 2, 3]
    assert promote(results, 10, "max") == [5, 2, 3, 1]
    assert promote({"a": 1.0, "b": 0.5, "c": float("inf")}, 1, "min") == ["b"]
    with pytest.raises(ValueError, match="mode"):
        promote(results, 1, "up")  # type: ignore[arg-type]


def test_compute_units_count_optimizer_steps_in_full_runs():
    assert compute_units(800, 400) == 2.0
    assert spent_units([100, 100, 400], 400) == 1.5
    with pytest.raises(ValueError, match="total_steps"):
        compute_units(1, 0)


def test_a_study_splits_its_trials_over_iterations_cycling_through_brackets():
    from trainables.config import TrainConfig
    from tuning.specs import LadderSpec, StudySpec

    def study(**kw):
        return StudySpec(study_id="s", total_steps=400, num_trials=16,
                         train=TrainConfig(model="mlp", dataset="digits", eval_every=50), **kw)

    default = study()
    assert default.num_iterations == 2 and default.num_finalists == 2
    assert [[(r.steps, r.candidates) for r in lad.rungs] for lad in default.ladders()] == [
        [(133, 8), (400, 2)], [(133, 8), (400, 2)]]
    hyper = study(ladder=LadderSpec(brackets=2))
    assert [[(r.steps, r.candidates) for r in lad.rungs] for lad in hyper.ladders()] == [
        [(133, 8), (400, 2)], [(400, 6)]]
    assert study(finalist_seeds=0).num_finalists == 0
