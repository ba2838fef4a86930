"""The ``refined`` schedule (Defazio et al. 2023) against the formula written out here, and
through every adapter (torch scheduler, HF LambdaLR, timm, Lightning, a tuned result)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tuning.schedules import (
    Schedule,
    ScheduleParamError,
    StepUpdateScheduler,
    create_schedule,
    get_refined_schedule,
    lightning_scheduler_config,
    median_smooth,
    scheduler_from_best,
)

from .schedule_driving import drive, drive_with_resume


def reference(norms: list[float], power: int, frac: float = 0.1) -> list[float]:
    """The paper's procedure, step by step with plain loops (an independent implementation)."""
    T = len(norms)
    width = max(1, math.floor(frac * T + 0.5))
    width += 1 - width % 2  # odd
    h = width // 2
    # numpy-style reflect padding (edge not repeated): x[h], ..., x[1], x[0], ..., x[T-1],
    # x[T-2], ..., x[T-1-h]
    padded = [norms[h - j] for j in range(h)] + list(norms) + [norms[T - 2 - j] for j in range(h)]
    smooth = [sorted(padded[t:t + width])[h] for t in range(T)]
    w = [g ** -power for g in smooth]
    total = math.fsum(w)
    eta = [w[t] * math.fsum(w[t + 1:]) / total for t in range(T)]
    top = max(eta)
    return [e / top for e in eta]


def _norm_seq(T: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    return list(5.0 * np.exp(-t / (0.05 * T)) + 1.0 + 0.3 * rng.random(T))


def test_constant_norms_give_linear_decay_exactly() -> None:
    for T in (2, 3, 10, 1000):
        for opt in ("sgd", "adam"):
            s = create_schedule("refined", T, norms=[3.7] * T, optimizer=opt, eta_max=0.2)
            want = [0.2 * (1 - i / (T - 1)) for i in range(T)]
            assert max(abs(a - b) for a, b in zip(s.values(), want, strict=True)) <= 1e-12
    # = the registry's linear decay over T - 1 steps, then the paper's η_T = 0
    lin = create_schedule("linear", 99, eta_max=0.1).values()
    got = create_schedule("refined", 100, norms=[0.5] * 100, eta_max=0.1).values()
    assert got[-1] == 0.0 and np.allclose(got[:-1], lin, rtol=0, atol=1e-15)
    # norms=None is the constant-norm (linear-decay) run
    assert create_schedule("refined", 100, eta_max=0.1).values() == got


@pytest.mark.parametrize(("opt", "power"), [("sgd", 2), ("adam", 1), ("adamw", 1)])
def test_matches_the_formula_on_a_measured_looking_sequence(opt: str, power: int) -> None:
    norms = _norm_seq(400)
    s = create_schedule("refined", 400, norms=norms, optimizer=opt, eta_max=0.05)
    assert np.allclose(s.values(), 0.05 * np.array(reference(norms, power)), rtol=1e-12,
                       atol=1e-15)
    assert s.eta_max == 0.05 and max(s.values()) == pytest.approx(0.05, rel=1e-15)


def test_large_early_norms_produce_a_warmup_and_the_end_anneals_to_zero() -> None:
    T = 500
    norms = list(5.0 * np.exp(-np.arange(T) / (0.05 * T)) + 1.0)  # large start, then flat
    v = create_schedule("refined", T, norms=norms, eta_max=1.0).values()
    peak = int(np.argmax(v))
    assert peak > 0.05 * T  # η rises first
    assert v[0] < 0.5 * v[peak]
    # near the start the reflected median is flat (η then falls by Σ_{p>t} alone); from half
    # a window (25 steps) on it rises to the peak
    assert all(a <= b for a, b in zip(v[25:peak], v[26:peak + 1], strict=True))
    assert v[-1] == 0.0 and v[-2] < 0.02


def test_adam_l1_weights_differ_from_sgd_and_are_sgd_on_sqrt_norms() -> None:
    norms = _norm_seq(300, seed=2)
    sgd = create_schedule("refined", 300, norms=norms, optimizer="sgd").values()
    adam = create_schedule("refined", 300, norms=norms, optimizer="adam").values()
    assert max(abs(a - b) for a, b in zip(sgd, adam, strict=True)) > 0.05
    # w = Ĝ^-1 = (√Ĝ)^-2, and the median commutes with √: Adam on G is SGD on √G
    sqrt = create_schedule("refined", 300, norms=list(np.sqrt(norms)), optimizer="sgd").values()
    assert np.allclose(adam, sqrt, rtol=1e-12, atol=1e-15)


def test_median_filter_is_reflect_padded_and_window_frac_zero_is_raw() -> None:
    x = [5.0, 1.0, 4.0, 2.0, 8.0, 3.0]
    # width 3: windows over [1, 5, 1, 4, 2, 8, 3, 8]
    assert median_smooth(x, 3).tolist() == [1.0, 4.0, 2.0, 4.0, 3.0, 8.0]
    rng = np.random.default_rng(3)
    y = rng.random(101)
    padded = np.pad(y, 10, mode="reflect")
    want = [np.median(padded[i:i + 21]) for i in range(101)]
    assert median_smooth(y, 21).tolist() == want
    norms = _norm_seq(50)
    raw = create_schedule("refined", 50, norms=norms, window_frac=0.0).values()
    assert np.allclose(raw, reference(norms, 2, frac=0.0), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"norms": [1.0, float("nan"), 1.0]}, "norms"),
    ({"norms": [1.0, float("inf"), 1.0]}, "norms"),
    ({"norms": [1.0, -1.0, 1.0]}, "norms"),
    ({"norms": [1.0, 0.0, 1.0]}, "norms"),
    ({"norms": [1.0, 2.0]}, "norms"),  # wrong length for total_steps=3
    ({"norms": [1.0] * 4}, "norms"),
    ({"norms": []}, "norms"),
    ({"norms": "1,2,3"}, "norms"),
    ({"norms": [1.0, 1.0, 1.0], "optimizer": "lion"}, "optimizer"),
    ({"window_frac": 1.5}, "window_frac"),
])
def test_bad_input_is_refused_naming_the_field(kwargs: dict, param: str) -> None:
    with pytest.raises(ScheduleParamError, match=f"'{param}'") as info:
        create_schedule("refined", 3, **kwargs)
    assert info.value.param == param and isinstance(info.value, ValueError)


def test_one_step_run_uses_eta_max_and_repr_is_short() -> None:
    assert create_schedule("refined", 1, norms=[2.0], eta_max=0.3).values() == [0.3]
    s = create_schedule("refined", 1000, norms=_norm_seq(1000))
    assert len(repr(s)) < 300 and "(1000 values)" in repr(s)


def test_every_adapter_follows_the_curve_and_resumes_exactly() -> None:
    T = 120
    norms = _norm_seq(T, seed=4)
    s = create_schedule("refined", T, norms=norms, optimizer="adam", eta_max=0.01)
    want = s.values()

    def opt(cls=torch.optim.AdamW, lr: float = 0.01) -> torch.optim.Optimizer:
        return cls([torch.nn.Parameter(torch.zeros(2))], lr=lr)

    o = opt()
    assert drive(s.scheduler(o), o, T) == want  # ScheduleLR (absolute)
    o = opt(lr=0.02)  # HF-style LambdaLR: relative to the group's LR, family from the class
    hf = get_refined_schedule(o, T, norms)
    assert np.allclose(drive(hf, o, T), 2 * np.array(want), rtol=1e-15, atol=0)
    o = opt()
    assert drive(StepUpdateScheduler(o, s), o, T, timm=True) == want
    o = opt()
    cfg = lightning_scheduler_config(s.scheduler(o))
    assert cfg["interval"] == "step" and drive(cfg["scheduler"], o, T) == want
    o = opt()
    best = {"schedule": "refined", "total_steps": T, "eta_max": 0.01, "norms": norms,
            "optimizer": "adam", "value": 0.9}
    assert drive(scheduler_from_best(best, o), o, T) == want

    # state dicts are plain data: a resumed scheduler continues exactly
    assert drive_with_resume(s, opt, 50, T) == want
    assert Schedule.from_dict(s.to_dict()) == s


def test_hf_helper_infers_the_family_or_asks_for_it() -> None:
    norms = _norm_seq(60)
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    got = [get_refined_schedule(sgd, 60, norms).lr_lambdas[0](i) for i in range(60)]
    assert got == create_schedule("refined", 60, norms=norms, optimizer="sgd").values()
    rms = torch.optim.RMSprop([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="optimizer_kind"):
        get_refined_schedule(rms, 60, norms)
    got = [get_refined_schedule(rms, 60, norms, optimizer_kind="adam").lr_lambdas[0](i)
           for i in range(60)]
    assert got == create_schedule("refined", 60, norms=norms, optimizer="adam").values()
