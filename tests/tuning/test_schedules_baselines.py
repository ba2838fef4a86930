"""Each baseline against the torch scheduler it corresponds to, or its published formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim import lr_scheduler as L

from tuning.schedules import ScheduleLR, ScheduleParamError, create_schedule

torch.set_num_threads(1)


def _opt(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _torch_values(make, lr: float, n: int) -> list[float]:
    """LRs a torch scheduler gives to updates 0..n-1 (value read before each step)."""
    opt = _opt(lr)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _ours(name: str, T: int, **kw) -> list[float]:
    """Same, through our ScheduleLR adapter (checks the adapter, not only Schedule.lr)."""
    s = create_schedule(name, T, **kw)
    opt = _opt(kw.get("eta_max", 1.0))
    sched = ScheduleLR(opt, s)
    out = []
    for _ in range(T):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert out == pytest.approx(s.values(), rel=1e-15)
    return out


@pytest.mark.parametrize("T", [1, 10, 333])
def test_cosine_matches_cosine_annealing(T: int) -> None:
    want = _torch_values(lambda o: L.CosineAnnealingLR(o, T_max=T, eta_min=0.01), 0.5, T)
    assert _ours("cosine", T, eta_max=0.5, eta_min=0.01) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("T", [4, 10, 101])
def test_step_matches_multistep(T: int) -> None:
    ms = [math.floor(0.5 * T + 0.5), math.floor(0.75 * T + 0.5)]
    want = _torch_values(lambda o: L.MultiStepLR(o, milestones=ms, gamma=0.1), 0.2, T)
    got = _ours("step", T, eta_max=0.2)
    assert got == pytest.approx(want, rel=1e-12)
    assert got[0] == 0.2 and got[-1] == pytest.approx(0.002)  # x0.01 at the end
    want = _torch_values(lambda o: L.MultiStepLR(o, milestones=[T // 3], gamma=0.5), 0.2, T)
    frac = (T // 3) / T
    assert _ours("step", T, eta_max=0.2, milestones=[frac], gamma=0.5) == pytest.approx(want)


def test_step_size_matches_steplr() -> None:
    want = _torch_values(lambda o: L.StepLR(o, step_size=7, gamma=0.3), 0.1, 50)
    assert _ours("step", 50, eta_max=0.1, step_size=7, gamma=0.3) == pytest.approx(want)
    with pytest.raises(ScheduleParamError, match="step_size"):
        create_schedule("step", 50, step_size=7, milestones=[0.5])


@pytest.mark.parametrize("kw", [
    {}, {"anneal_strategy": "linear"}, {"three_phase": True},
    {"pct_start": 0.15, "div_factor": 10.0, "final_div_factor": 100.0},
])
@pytest.mark.parametrize("T", [10, 257])
def test_onecycle_matches_torch(T: int, kw: dict) -> None:
    tkw = {("max_lr" if k == "eta_max" else k): v for k, v in kw.items()}
    want = _torch_values(
        lambda o: L.OneCycleLR(o, max_lr=0.3, total_steps=T, cycle_momentum=False, **tkw),
        0.3, T)
    assert _ours("onecycle", T, eta_max=0.3, **kw) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("kw", [
    {"step_size_up": 5},
    {"step_size_up": 4, "step_size_down": 9},
    {"step_size_up": 6, "mode": "triangular2"},
    {"step_size_up": 6, "mode": "exp_range", "gamma": 0.97},
])
def test_triangular_matches_cycliclr(kw: dict) -> None:
    want = _torch_values(
        lambda o: L.CyclicLR(o, base_lr=0.01, max_lr=0.2, cycle_momentum=False, **kw), 0.2, 60)
    assert _ours("triangular", 60, eta_max=0.2, eta_min=0.01, **kw) == pytest.approx(
        want, rel=1e-9)


def test_exponential_matches_exponentiallr() -> None:
    T = 200
    want = _torch_values(lambda o: L.ExponentialLR(o, gamma=0.01 ** (1 / T)), 0.1, T)
    got = _ours("exponential", T, eta_max=0.1, final_ratio=0.01)
    assert got == pytest.approx(want, rel=1e-9)  # torch chains products; ours is exact


def test_linear_matches_linearlr_and_formula() -> None:
    T = 40
    want = _torch_values(lambda o: L.LinearLR(o, 1.0, 0.0, total_iters=T), 0.1, T)
    assert _ours("linear", T, eta_max=0.1) == pytest.approx(want, rel=1e-9, abs=1e-15)
    got = _ours("linear", T, eta_max=0.1, eta_min=0.02)
    assert got == pytest.approx([0.02 + 0.08 * (1 - i / T) for i in range(T)])


def test_rex_published_formula() -> None:
    # Chen, Wolfe & Kyrillidis (MLSys 2022): eta(z) = eta0 (1 - z) / (1/2 + (1 - z)/2).
    T = 64
    got = _ours("rex", T, eta_max=0.4)
    assert got == pytest.approx([0.4 * (1 - i / T) / (0.5 + 0.5 * (1 - i / T)) for i in range(T)])
    got = _ours("rex", T, eta_max=0.4, beta=0.9)
    assert got == pytest.approx(
        [0.4 * (1 - i / T) / (0.5 + 0.5 * (1 - 0.9 * i / T)) for i in range(T)])


def test_constant_and_wsd() -> None:
    assert _ours("constant", 5, eta_max=0.3) == [0.3] * 5
    got = _ours("wsd", 20, eta_max=1.0, warmup_steps=4, decay_frac=0.25, eta_min=0.1)
    assert got[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert got[4:16] == [1.0] * 12  # body has 16 steps, the last 4 decay linearly
    assert got[16:] == pytest.approx([0.1 + 0.9 * (1 - j / 4) for j in range(4)])
    sq = create_schedule("wsd", 10, decay_frac=0.5, decay_shape="sqrt").values()
    assert sq[5:] == pytest.approx([1 - math.sqrt(j / 5) for j in range(5)])


@pytest.mark.parametrize("name", ["constant", "step", "cosine", "linear", "rex",
                                  "exponential", "onecycle", "triangular", "wsd"])
def test_every_baseline_relative_mode_and_registry_defaults(name: str) -> None:
    s = create_schedule(name, 50)
    assert s.relative and s.eta_max == 1.0
    assert max(s.values()) <= 1.0 + 1e-12 and min(s.values()) >= 0.0
    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.2},
                           {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.02}], lr=0.2)
    sched = s.scheduler(opt)
    for i in range(50):
        a, b = (g["lr"] for g in opt.param_groups)
        assert a == pytest.approx(0.2 * s.lr(i)) and b == pytest.approx(0.02 * s.lr(i))
        opt.step()
        sched.step()
