"""The one trial config: built once, specialised per budget/arm, a dict only at the Ray boundary."""

from __future__ import annotations

import pytest

from trainables import ConfigError, DivergedError, run_training
from trainables.config import DEFAULT_VARIANT, PAPER_DEFAULT_PHI, TrainConfig, metric_mode

TEMPLATE = TrainConfig(model="mlp", dataset="digits", lr=0.2, batch_size=32, eval_every=50,
                       model_kwargs={"hidden_sizes": [16]}, device="cpu")


def test_round_trip_through_the_ray_boundary_is_exact():
    cfg = TEMPLATE.for_budget(120, seed=3).with_schedule("uba", phi=0.3, phases=2)
    assert TrainConfig.from_mapping(cfg.to_dict()) == cfg
    assert cfg.variant == DEFAULT_VARIANT == "restart"
    assert cfg.schedule_kwargs() == {"phi": 0.3, "phases": 2, "variant": "restart",
                                     "eta_min": 0.0}


def test_budget_sets_steps_seed_and_clips_the_eval_interval():
    cfg = TEMPLATE.for_budget(30)
    assert (cfg.total_steps, cfg.eval_every, cfg.seed) == (30, 30, 0)
    with pytest.raises(ConfigError, match="total_steps"):
        TEMPLATE.check()  # a template without a budget is not a runnable trial


def test_baseline_arms_drop_the_uba_parameters():
    uba = TEMPLATE.for_budget(60).with_schedule("uba", phi=2.0, phases=1)
    cosine = uba.with_schedule("cosine")
    assert cosine.phi is None and cosine.phases is None
    assert cosine.schedule_kwargs() == {"eta_min": 0.0}
    default = TEMPLATE.for_budget(60)
    assert default.schedule_kwargs()["phi"] == PAPER_DEFAULT_PHI["sgd"]


def test_legacy_schedule_params_are_lifted_to_fields():
    cfg = TrainConfig.from_mapping({
        "model": "mlp", "dataset": "digits", "lr": 0.1, "total_steps": 10, "phi": 3.0,
        "schedule_params": {"phi": 9.0, "phases": 2, "variant": "cyclic", "eta_min": 0.01},
        "kind": "bookkeeping key, ignored"})
    assert (cfg.phi, cfg.phases, cfg.variant, cfg.eta_min) == (3.0, 2, "cyclic", 0.01)
    assert cfg.schedule_params == {}


@pytest.mark.parametrize(("field", "value"), [("phi", -1.0), ("phases", 0),
                                              ("variant", "zigzag"), ("divergence_factor", 0.5)])
def test_bad_schedule_fields_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig.from_mapping({**TEMPLATE.for_budget(10).to_dict(), field: value})


def test_a_run_whose_loss_rises_above_its_start_is_stopped_as_diverged():
    cfg = TEMPLATE.for_budget(40).with_schedule("constant", lr=4.0)
    cfg = TrainConfig.from_mapping({**cfg.to_dict(), "eval_every": 5, "divergence_factor": 1.0,
                                    "momentum": 0.99})
    with pytest.raises(DivergedError, match="diverged"):
        run_training(cfg, lambda m, s: None)


def test_metric_direction():
    assert metric_mode("val_accuracy") == "max"
    assert metric_mode("val_loss") == "min" and metric_mode("val_perplexity") == "min"
