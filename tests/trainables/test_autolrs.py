"""AutoLRS on real data: stages that double and sum to the budget, each stage's lr the best
forecast of its candidates, compute with the search counted, exact resume; the forecast's
exponential fit; settings that cannot fit the budget refused naming the field."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from trainables.autolrs import (
    MIN_TAU_PRIME,
    AutoLRSSettings,
    AutoLRSSettingsError,
    fit_exponential,
    forecast_loss,
    plan_stages,
    run_autolrs,
)
from trainables.config import TRAINED_STEPS, TrainConfig, trained_steps

from .test_loop import Recorder

#: T = 60: τ₀ = 6, τ′₀ = 4, k = 3; stages 6, 12, 24 and 18 (48 truncated), τ′ 4, 8, 16, 12.
SETTINGS = AutoLRSSettings(tau_fraction=0.1, tau_prime_fraction=4 / 60, candidates=3)


def config(**kw) -> TrainConfig:
    base = TrainConfig(model="mlp", model_kwargs={"hidden_sizes": [32]}, dataset="digits",
                       lr=0.1, batch_size=32, total_steps=60, device="cpu", seed=0)
    settings = kw.pop("settings", SETTINGS)
    return base.with_schedule("autolrs", **settings.to_params(), **kw)


def test_fit_recovers_a_b_c_of_an_exponential_and_forecasts_it():
    t = np.arange(1, 61, dtype=float)
    y = 2.0 * np.exp(-0.08 * t) + 0.3
    a, b, c = fit_exponential(t, y)
    assert (a, b, c) == pytest.approx((2.0, -0.08, 0.3), rel=1e-5)
    # noisy: the smoothed fit still forecasts the curve's value far past the window
    rng = np.random.default_rng(0)
    noisy = y[:30] + rng.normal(0, 0.02, 30)
    value, (a, b, c) = forecast_loss(noisy, 120)
    assert (a, b, c) == pytest.approx((2.0, -0.08, 0.3), rel=0.05)
    assert value == pytest.approx(2.0 * math.exp(-0.08 * 120) + 0.3, abs=0.02)
    # a rising loss is not forecast to fall; a NaN window forecasts inf
    assert forecast_loss(np.linspace(1.0, 2.0, 20), 80)[0] >= 1.9
    assert forecast_loss(np.array([1.0, 0.9, math.nan]), 10)[0] == math.inf


def test_a_straight_window_never_forecasts_a_negative_loss():
    value, (_, _, c) = forecast_loss(np.linspace(2.0, 1.0, 12), 200)
    assert c >= 0 and value >= 0


def test_default_stages_double_and_sum_to_the_budget():
    stages = plan_stages(400, AutoLRSSettings())
    assert [(s.start, s.tau, s.tau_prime) for s in stages] == [
        (0, 25, 6), (25, 50, 12), (75, 100, 24), (175, 200, 48), (375, 25, 6)]
    # the search trains about as much as the stages: k · Σ τ′ ≈ T (the paper's ratio)
    assert 4 * sum(s.tau_prime for s in stages) == 384
    # a truncated tail too short for a window keeps the incumbent lr (no search)
    tail = plan_stages(100, AutoLRSSettings(tau_fraction=0.3, tau_prime_fraction=0.05,
                                            candidates=1))
    assert [(s.tau, s.tau_prime) for s in tail] == [(30, 5), (60, 10), (10, 0)]


@pytest.mark.parametrize(("kw", "field"), [
    (dict(tau_fraction=0.0), "tau_fraction"),
    (dict(tau_fraction=-0.1), "tau_fraction"),
    (dict(tau_fraction=1.5), "tau_fraction"),
    (dict(tau_fraction=math.nan), "tau_fraction"),
    (dict(tau_prime_fraction=0.0), "tau_prime_fraction"),
    (dict(tau_fraction=0.05, tau_prime_fraction=0.1), "tau_prime_fraction"),
    (dict(candidates=0), "candidates"),
    (dict(candidates=2.5), "candidates"),
    (dict(lr_min_factor=0.0), "lr_min_factor"),
    (dict(lr_min_factor=2.0, lr_max_factor=1.0), "lr_max_factor"),
])
def test_out_of_range_settings_are_refused_naming_the_field(kw, field):
    with pytest.raises(AutoLRSSettingsError, match=field) as info:
        AutoLRSSettings(**kw)
    assert isinstance(info.value, ValueError) and info.value.field == field
    again = pickle.loads(pickle.dumps(info.value))  # survives Ray's pickling of the error
    assert again.field == field and str(again) == str(info.value)


@pytest.mark.parametrize(("total", "kw", "field"), [
    # the first stage and its search (τ₀ + k·τ′₀ = 50 + 4·25) exceed T = 100
    (100, dict(tau_fraction=0.5, tau_prime_fraction=0.25), "tau_fraction"),
    # T/64 of 100 steps is a 2-step window: no forecast
    (100, dict(), "tau_prime_fraction"),
])
def test_stages_that_do_not_fit_the_budget_are_refused_naming_the_field(total, kw, field):
    with pytest.raises(ValueError, match=field) as info:
        plan_stages(total, AutoLRSSettings(**kw))
    assert info.value.field == field
    assert MIN_TAU_PRIME == 4
    # and so is the trial itself, before it trains
    with pytest.raises(ValueError, match=field):
        run_autolrs(config(total_steps=total, settings=AutoLRSSettings(**kw)), Recorder())


def test_each_stage_trains_the_candidate_with_the_best_forecast():
    rec = Recorder()
    final = run_autolrs(config(), rec)
    stages = final["autolrs_stages"]
    planned = plan_stages(60, SETTINGS)
    # stage lengths double (the last truncated) and the chosen stages sum to exactly T
    assert [(s["start"], s["tau"], s["tau_prime"]) for s in stages] == [
        (p.start, p.tau, p.tau_prime) for p in planned] == [
        (0, 6, 4), (6, 12, 8), (18, 24, 16), (42, 18, 12)]
    assert sum(s["tau"] for s in stages) == 60
    incumbent = 0.1
    for s in stages:
        cands = s["candidates"]
        assert len(cands) == 3
        best = min(cands, key=lambda c: (math.inf if c["forecast"] is None else c["forecast"],
                                         c["lr"]))
        assert s["lr"] == best["lr"] and s["forecast"] == best["forecast"]
        # the first candidate is the incumbent, the rest from the GP inside [lr/4, 4·lr]
        assert cands[0]["lr"] == pytest.approx(incumbent)
        assert all(0.025 * (1 - 1e-9) <= c["lr"] <= 0.4 * (1 + 1e-9) for c in cands)
        assert all(1 <= c["steps"] <= s["tau_prime"] for c in cands)
        incumbent = s["lr"]
    # compute: everything trained, candidate windows included
    searched = sum(c["steps"] for s in stages for c in s["candidates"])
    assert final[TRAINED_STEPS] == 60 + searched == trained_steps(final)
    assert searched > 60  # the search cost about as much again as the training
    # reports at each stage end, like other trainables' metrics
    assert [m["step"] for m in rec.metrics] == [6, 18, 42, 60]
    assert [m["done"] for m in rec.metrics] == [False, False, False, True]
    assert [m["lr"] for m in rec.metrics] == [s["lr"] for s in stages]
    for key in ("val_loss", "val_accuracy", "train_loss", "samples_per_s", "epoch"):
        assert all(math.isfinite(m[key]) for m in rec.metrics), key
    assert final["val_accuracy"] > 0.8  # it learns


def test_resume_at_a_stage_boundary_continues_identically():
    whole = run_autolrs(config(), Recorder())
    broken = Recorder(stop_after=18)
    with pytest.raises(KeyboardInterrupt):
        run_autolrs(config(), broken)
    resumed = run_autolrs(config(), Recorder(), resume_state=broken.states[-1])
    assert resumed["autolrs_stages"] == whole["autolrs_stages"]
    assert resumed[TRAINED_STEPS] == whole[TRAINED_STEPS]
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-6)


def test_schedule_free_optimizer_is_refused():
    cfg = config().with_schedule("autolrs", **SETTINGS.to_params())
    bad = {**cfg.to_dict(), "optimizer": "sgd_schedulefree"}
    with pytest.raises(ValueError, match="optimizer"):
        run_autolrs(bad, Recorder())


def test_a_stage_that_diverges_retrains_from_its_checkpoint_at_the_next_best_forecast(
        monkeypatch):
    """The forecast's window can be too short to show a divergence; the stage then restarts
    from its checkpoint at the next-best candidate instead of losing the run. The divergence
    is declared by wrapping the real check (the first choice of stage 1 only), so every
    other step is the real run."""
    import trainables.autolrs as mod

    real = mod._stage_divergence
    hit: list[float] = []

    def once(p, cfg, stage, lr, losses, start_loss):
        if stage.index == 1 and not hit:
            hit.append(lr)
            return mod.DivergedError(stage.start + stage.tau, math.inf, lr), {}
        return real(p, cfg, stage, lr, losses, start_loss)

    monkeypatch.setattr(mod, "_stage_divergence", once)
    final = run_autolrs(config(), Recorder())
    stage = final["autolrs_stages"][1]
    ranked = sorted((c for c in stage["candidates"] if c["forecast"] is not None),
                    key=lambda c: (c["forecast"], c["lr"]))
    assert hit == [ranked[0]["lr"]]
    assert stage["diverged"] == [{"lr": ranked[0]["lr"], "at_step": 18, "steps": 12}]
    assert stage["lr"] == ranked[1]["lr"] and stage["forecast"] == ranked[1]["forecast"]
    assert all(not s["diverged"] for i, s in enumerate(final["autolrs_stages"]) if i != 1)
    # the retried stage's steps are compute too
    searched = sum(c["steps"] for s in final["autolrs_stages"] for c in s["candidates"])
    assert final[TRAINED_STEPS] == 60 + searched + 12


def test_a_stage_that_diverges_at_every_candidate_stops_the_run(monkeypatch):
    import trainables.autolrs as mod

    tried: list[float] = []

    def always(p, cfg, stage, lr, losses, start_loss):
        tried.append(lr)
        return mod.DivergedError(stage.start + stage.tau, math.inf, lr), {}

    monkeypatch.setattr(mod, "_stage_divergence", always)
    with pytest.raises(mod.DivergedError):
        run_autolrs(config(), Recorder())
    assert len(tried) == len(set(tried)) == SETTINGS.candidates  # each candidate once
