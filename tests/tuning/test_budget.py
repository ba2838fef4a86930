"""Budget curve and smallest-budget-to-target (pure logic)."""

from __future__ import annotations

import math

import pytest

from tuning.budget import smallest_budget_reaching
from tuning.compare import resolve_baseline


def test_target_reached_between_measured_points_is_interpolated_in_log_steps():
    out = smallest_budget_reaching([(100, 0.80), (400, 0.90)], 0.85, "max")
    assert out.kind == "interpolated" and out.between == [100, 400]
    assert out.steps == round(math.exp((math.log(100) + math.log(400)) / 2))  # = 200


def test_target_reached_at_smallest_budget_is_measured_with_caveat():
    out = smallest_budget_reaching([(100, 0.95), (400, 0.97)], 0.9, "max")
    assert out.kind == "measured" and out.steps == 100 and "smaller" in out.note


def test_target_not_reached():
    out = smallest_budget_reaching([(100, 0.5), (200, 0.6)], 0.9, "max")
    assert out.kind == "not_reached" and out.steps is None


def test_loss_targets_are_reached_from_above():
    out = smallest_budget_reaching([(100, 1.0), (200, 0.5)], 0.75, "min")
    assert out.kind == "interpolated" and 100 < out.steps < 200


@pytest.mark.parametrize(("name", "want"), [("clr", "triangular"), ("cosine", "cosine"),
                                            ("onecycle", "onecycle"),
                                            ("uba_default", "uba_default"),
                                            ("schedule-free", "schedulefree")])
def test_baseline_names(name, want):
    assert resolve_baseline(name) == want


@pytest.mark.parametrize("name", ["uba", "cosinus", ""])
def test_unknown_baseline_lists_valid(name):
    with pytest.raises(ValueError, match="valid: .*cosine"):
        resolve_baseline(name)
