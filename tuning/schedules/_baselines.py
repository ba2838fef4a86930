"""Curves of the baseline schedules the paper compares UBA against (Sec. 4, Table 1).

Each builder takes the number of steps ``T`` of the body (after any warmup) and validated
parameters and returns a :data:`~tuning.schedules._base.Curve`. Convention for the decaying
ones: progress ``z = i / T`` for 0-based step ``i``, exactly what PyTorch's closed forms use
(``CosineAnnealingLR(T_max=T)``, ``LinearLR(total_iters=T)``, ``ExponentialLR``), so the
value at ``i = T`` (one past the budget) would be the end point.

``eta_max=None`` means relative mode: the curve peaks at 1.0 and is a multiplier of each
param group's own LR (see :class:`~tuning.schedules.ScheduleLR`); ``eta_min`` is then a
fraction of that LR too.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

from ._base import Curve, ScheduleParamError

__all__ = [
    "peak_of",
    "check_eta_min",
    "build_constant",
    "build_step",
    "build_cosine",
    "build_linear",
    "build_rex",
    "build_exponential",
    "build_onecycle",
    "build_triangular",
    "build_wsd",
]


def peak_of(p: Mapping[str, Any]) -> float:
    """Peak LR of a schedule: ``eta_max`` (the largest per-phase one) or 1.0 when relative."""
    eta_max = p.get("eta_max")
    if eta_max is None:
        return 1.0
    if isinstance(eta_max, tuple):
        return max(eta_max)
    return float(eta_max)


def check_eta_min(name: str, p: Mapping[str, Any], top: float) -> float:
    """Refuse ``eta_min > top``: the schedule's range would be empty or inverted."""
    eta_min = float(p["eta_min"])
    if eta_min > top:
        raise ScheduleParamError(
            name, "eta_min", f"{eta_min!r} must be <= eta_max ({top!r}); allowed: [0, {top!r}]")
    return eta_min


def build_constant(T: int, p: Mapping[str, Any]) -> Curve:
    """``eta_t = eta_max``."""
    peak = peak_of(p)
    return (lambda i: peak), peak


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def step_milestones(T: int, p: Mapping[str, Any]) -> list[int]:
    """Steps at which the step schedule multiplies by ``gamma`` (MultiStepLR milestones).

    ``milestones`` are fractions of ``T`` rounded to the nearest step (halves up);
    ``step_size`` (StepLR) gives every multiple of it instead. Default: 50 % and 75 %.
    """
    if p["step_size"] is not None:
        if p["milestones"] is not None:
            raise ScheduleParamError("step", "step_size",
                                     "give either milestones or step_size, not both")
        return list(range(p["step_size"], T, p["step_size"]))
    fracs = p["milestones"] if p["milestones"] is not None else (0.5, 0.75)
    if any(b <= a for a, b in zip(fracs, fracs[1:], strict=False)):
        raise ScheduleParamError("step", "milestones",
                                 f"{list(fracs)!r} must be strictly increasing fractions")
    # Short runs may round two milestones onto one step: both apply there (gamma**2), as
    # MultiStepLR does with a repeated milestone.
    return [_round_half_up(f * T) for f in fracs]


def build_step(T: int, p: Mapping[str, Any]) -> Curve:
    """``eta_t = eta_max * gamma ** (number of milestones <= i)`` (MultiStepLR / StepLR)."""
    peak = peak_of(p)
    gamma = float(p["gamma"])
    ms = step_milestones(T, p)
    if p["step_size"] is not None:
        size = p["step_size"]
        return (lambda i: peak * gamma ** (i // size)), peak
    return (lambda i: peak * gamma ** bisect_right(ms, i)), peak


def build_cosine(T: int, p: Mapping[str, Any]) -> Curve:
    """``eta_min + (eta_max - eta_min) (1 + cos(pi i / T)) / 2`` (CosineAnnealingLR, T_max=T)."""
    peak = peak_of(p)
    lo = check_eta_min("cosine", p, peak)
    a = peak - lo
    return (lambda i: lo + a * (1.0 + math.cos(math.pi * i / T)) / 2.0), peak


def build_linear(T: int, p: Mapping[str, Any]) -> Curve:
    """``eta_min + (eta_max - eta_min) (1 - i / T)`` (budgeted-training linear decay)."""
    peak = peak_of(p)
    lo = check_eta_min("linear", p, peak)
    a = peak - lo
    return (lambda i: lo + a * (1.0 - i / T)), peak


def build_rex(T: int, p: Mapping[str, Any]) -> Curve:
    """REX (Chen et al., MLSys 2022): ``(1 - z) / ((1 - beta z) / 2 + 1 / 2)``, ``z = i / T``.

    ``beta = 1`` is the paper's profile ``(1 - z) / (1 - z / 2)``; their code uses 0.9.
    """
    peak = peak_of(p)
    lo = check_eta_min("rex", p, peak)
    a = peak - lo
    beta = float(p["beta"])

    def lr(i: int) -> float:
        z = i / T
        return lo + a * (1.0 - z) / ((1.0 - beta * z) / 2.0 + 0.5)

    return lr, peak


def build_exponential(T: int, p: Mapping[str, Any]) -> Curve:
    """``eta_max * final_ratio ** (i / T)`` = ExponentialLR with ``gamma = final_ratio**(1/T)``.

    Computed as ``exp(i log(r) / T)`` per step, without the chained multiplication's drift.
    """
    peak = peak_of(p)
    rate = math.log(float(p["final_ratio"])) / T
    return (lambda i: peak * math.exp(rate * i)), peak


def build_onecycle(T: int, p: Mapping[str, Any]) -> Curve:
    """1cycle (Smith & Topin 2017), the exact closed form of ``torch.optim.OneCycleLR``.

    Starts at ``eta_max / div_factor``, rises until step ``pct_start*T - 1``, then anneals to
    ``initial / final_div_factor`` at step ``T - 1`` (three_phase: down to initial first).
    """
    peak = peak_of(p)
    pct = float(p["pct_start"])
    initial = peak / float(p["div_factor"])
    final = initial / float(p["final_div_factor"])
    if p["three_phase"]:
        phases = [(pct * T - 1.0, initial, peak), (2.0 * pct * T - 2.0, peak, initial),
                  (float(T - 1), initial, final)]
    else:
        phases = [(pct * T - 1.0, initial, peak), (float(T - 1), peak, final)]
    cos = p["anneal_strategy"] == "cos"
    last = len(phases) - 1

    def lr(i: int) -> float:
        start_step = 0.0
        for j, (end_step, a, b) in enumerate(phases):
            if i <= end_step or j == last:
                span = end_step - start_step
                f = (i - start_step) / span if span != 0 else 1.0
                if cos:
                    return b + (a - b) / 2.0 * (math.cos(math.pi * f) + 1.0)
                return (b - a) * f + a
            start_step = end_step
        raise AssertionError("unreachable")

    return lr, peak


def build_triangular(T: int, p: Mapping[str, Any]) -> Curve:
    """Cyclical LR (Smith 2017), the closed form of ``torch.optim.lr_scheduler.CyclicLR``.

    Between ``eta_min`` (CyclicLR's base_lr) and ``eta_max``; ``step_size_up`` defaults to
    half the run (one triangle), ``step_size_down`` to ``step_size_up``.
    """
    peak = peak_of(p)
    lo = check_eta_min("triangular", p, peak)
    up = p["step_size_up"] if p["step_size_up"] is not None else max(1, T // 2)
    down = p["step_size_down"] if p["step_size_down"] is not None else up
    total = float(up + down)
    ratio = up / total
    mode = p["mode"]
    gamma = float(p["gamma"])
    height = peak - lo

    def lr(i: int) -> float:
        cycle = math.floor(1 + i / total)
        x = 1.0 + i / total - cycle
        scale = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        if mode == "triangular":
            amp = 1.0
        elif mode == "triangular2":
            amp = 1 / (2.0 ** (cycle - 1))
        else:  # exp_range, scaled per iteration as in torch
            amp = gamma**i
        return lo + height * scale * amp

    return lr, peak


def build_wsd(T: int, p: Mapping[str, Any]) -> Curve:
    """Warmup-stable-decay: ``eta_max`` until the last ``decay_frac`` of the body, then decay.

    Decay over ``n = max(1, round(decay_frac T))`` steps from ``S = T - n`` with ``z = (i-S)/n``:
    linear ``1 - z``, cosine ``(1 + cos pi z) / 2`` or sqrt ``1 - sqrt z`` between the bounds.
    The warmup is the shared ``warmup_steps`` parameter.
    """
    peak = peak_of(p)
    lo = check_eta_min("wsd", p, peak)
    a = peak - lo
    n = max(1, min(T, _round_half_up(float(p["decay_frac"]) * T)))
    start = T - n
    shape = p["decay_shape"]

    def lr(i: int) -> float:
        if i < start:
            return peak
        z = (i - start) / n
        if shape == "linear":
            f = 1.0 - z
        elif shape == "cosine":
            f = (1.0 + math.cos(math.pi * z)) / 2.0
        else:
            f = 1.0 - math.sqrt(z)
        return lo + a * f

    return lr, peak
