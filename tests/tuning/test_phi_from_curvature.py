"""Curvature of registered models on real data, and suggestion gaps (pure logic)."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.config import TrainConfig
from tuning.phi_from_curvature import CurvatureSpec, measure_curvature, suggestion_gaps


def test_measure_curvature_of_the_registered_mlp_on_digits():
    torch.set_num_threads(1)
    report = measure_curvature(TrainConfig(model="mlp", dataset="digits"),
                               CurvatureSpec(num_batches=2, batch_size=64, lanczos_steps=10,
                                             num_probes=2))
    assert report.lambda_max > 0 and math.isfinite(report.trace)
    assert report.num_params > 1000
    assert {k.definition for k in report.kappas}


def test_bad_curvature_spec():
    with pytest.raises(ValueError, match="num_batches"):
        CurvatureSpec(num_batches=0)


def test_gaps_are_measured_only_for_trials_that_ran_the_whole_budget():
    suggestions = [{"source": "theory", "phi": 500.0}, {"source": "paper_default", "phi": 5.0},
                   {"source": "calibrated", "phi": 1.0}, {"source": "history", "phi": 2.0}]
    trials = [{"phi": 50.0, "step": 100, "value": 0.80},   # theory clipped to phi_max = 50
              {"phi": 5.0, "step": 100, "value": 0.90},
              {"phi": 1.0, "step": 25, "value": 0.60}]
    gaps = suggestion_gaps(suggestions, 100, trials, 0.92, "max", (0.1, 50.0))
    assert [g["status"] for g in gaps] == [
        "evaluated", "evaluated", "stopped early by ASHA at step 25", "not evaluated"]
    assert gaps[0]["phi_evaluated"] == 50.0
    assert gaps[0]["gap"] == pytest.approx(0.12) and gaps[1]["gap"] == pytest.approx(0.02)


def test_curvature_at_phase_boundaries_of_a_real_run():
    from tuning.phi_from_curvature import measure_curvature_during_training

    torch.set_num_threads(1)
    train = TrainConfig(model="mlp", dataset="digits", lr=0.2, batch_size=64)
    points = measure_curvature_during_training(
        train, 40, [0, 20, 40], phi=5.0, phases=2,
        curv=CurvatureSpec(num_batches=1, batch_size=64, lanczos_steps=8, num_probes=1))
    assert [p["step"] for p in points] == [0, 20, 40]
    assert [p["phase"] for p in points] == [1, 2, 2]
    lams = [p["report"].lambda_max for p in points]
    assert all(math.isfinite(v) and v > 0 for v in lams)
    assert lams[0] != lams[1], "training changed the curvature"
    with pytest.raises(ValueError, match="at_steps"):
        measure_curvature_during_training(train, 40, [50], phi=5.0)
