"""Core tests of the UBA schedule (Eq. 5) and its torch adapters.

The reference below is an independent, literal transcription of Eq. (5): 1-based update
``t``, the paper's boundaries ``T_1 = 0 < ... < T_K``, and ``(k - 1) pi`` added as written.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from tuning.schedules import (
    SCHEDULES,
    UBALR,
    Schedule,
    ScheduleLR,
    ScheduleParamError,
    UnknownScheduleError,
    create_schedule,
    schedule_names,
    uba_lr,
)

torch.set_num_threads(1)


def eq5(t: int, bounds: list[int], phi: float, eta_max: float, eta_min: float,
        restart: bool = False) -> float:
    """Eq. (5) for 1-based update t; bounds = [T_1=0, ..., T_K]."""
    k = next(j for j in range(1, len(bounds)) if bounds[j - 1] < t <= bounds[j])  # 1-based
    t_k, t_k1 = bounds[k - 1], bounds[k]
    c = (2 * (t - t_k) - 1) * math.pi / (2 * (t_k1 - t_k)) + (0 if restart else (k - 1) * math.pi)
    q = 1 + math.cos(c)
    return (eta_max - eta_min) * 2 * q / (2 * phi + (2 - phi) * q) + eta_min


@pytest.mark.parametrize("T", [1, 2, 7, 100, 1001])
@pytest.mark.parametrize("phi", [0.25, 0.8, 2.0, 5.0, 30.0, 200.0])
def test_uba_lr_matches_eq5_first_middle_last(T: int, phi: float) -> None:
    for step in sorted({0, T // 2, T - 1}):
        got = uba_lr(step, T, phi=phi, eta_max=0.1, eta_min=0.001)
        want = eq5(step + 1, [0, T], phi, 0.1, 0.001)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_uba_hand_computed_value() -> None:
    # T=4, phi=5, t=1: c = pi/8, q = 1 + cos(pi/8); 2q / (10 - 3q) * 0.1.
    q = 1 + math.cos(math.pi / 8)
    assert uba_lr(0, 4, phi=5.0, eta_max=0.1) == pytest.approx(0.1 * 2 * q / (10 - 3 * q))
    assert uba_lr(0, 4, phi=5.0, eta_max=0.1) == pytest.approx(0.0909988, abs=1e-7)


def test_phi_two_is_cosine_half_step_later() -> None:
    T = 50
    for i in range(T):
        assert uba_lr(i, T, phi=2.0, eta_max=1.0) == pytest.approx(
            (1 + math.cos(math.pi * (i + 0.5) / T)) / 2, rel=1e-12)


def test_phi_zero_is_constant_and_negative_refused() -> None:
    assert create_schedule("uba", 10, phi=0.0, eta_max=0.3).values() == [0.3] * 10
    with pytest.raises(ValueError, match="phi"):
        uba_lr(0, 10, phi=-0.5, eta_max=1.0)
    with pytest.raises(ScheduleParamError, match="'phi'"):
        create_schedule("uba", 10, phi=-0.5)


def test_multiphase_cyclic_even_phase_rises_and_matches_eq5() -> None:
    s = create_schedule("uba", 90, phi=5.0, phases=3, eta_max=1.0, eta_min=0.1,
                        variant="cyclic")
    v = s.values()
    bounds = [0, 30, 60, 90]
    for i in range(90):
        assert v[i] == pytest.approx(eq5(i + 1, bounds, 5.0, 1.0, 0.1), rel=1e-12)
    assert v[0] > v[29] and v[30] < v[59] and v[60] > v[89]  # down, up, down


def test_restart_variant_every_phase_decays() -> None:
    s = create_schedule("uba", 90, phi=5.0, phases=3, eta_max=1.0, variant="restart")
    v = s.values()
    for lo, hi in [(0, 30), (30, 60), (60, 90)]:
        seg = v[lo:hi]
        assert all(a > b for a, b in zip(seg, seg[1:], strict=False))
        for i in range(lo, hi):
            assert v[i] == pytest.approx(eq5(i + 1, [0, 30, 60, 90], 5.0, 1.0, 0.0, True))


def test_boundaries_per_phase_phi_and_eta_max() -> None:
    s = create_schedule("uba", 100, phi=[0.0, 0.0, 0.0], boundaries=[50, 75],
                        eta_max=[1.0, 0.5, 0.25])  # Table 1: the step schedule
    v = s.values()
    assert v[:50] == [1.0] * 50 and v[50:75] == [0.5] * 25 and v[75:] == [0.25] * 25
    assert s.params["phases"] == 3
    s2 = create_schedule("uba", 100, phi=[2.0, 10.0], boundaries=[40], variant="restart",
                         eta_max=0.1)
    for i in range(100):
        want = eq5(i + 1 if i < 40 else i + 1 - 40, [0, 40] if i < 40 else [0, 60],
                   2.0 if i < 40 else 10.0, 0.1, 0.0)
        assert s2.lr(i) == pytest.approx(want, rel=1e-12)


def test_peak_decay_lowers_each_restart_peak_geometrically() -> None:
    """Phase k peaks at η_max · peak_decay^(k−1): the same curve as one η_max per phase, in
    the function, the torch scheduler and the trainer's config alike."""
    s = create_schedule("uba", 90, phi=2.0, phases=3, eta_max=0.2, peak_decay=0.5)
    ref = create_schedule("uba", 90, phi=2.0, phases=3, eta_max=[0.2, 0.1, 0.05])
    assert s.values() == ref.values()
    assert max(s.values()[30:60]) == pytest.approx(0.1, rel=1e-3)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = UBALR(opt, total_steps=90, phi=2.0, phases=3, eta_max=0.2, peak_decay=0.5)
    got = []
    for _ in range(90):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert got == pytest.approx(ref.values(), rel=1e-12)
    with pytest.raises(ValueError, match="peak_decay"):
        create_schedule("uba", 90, phi=2.0, phases=3, peak_decay=1.5)


def test_warmup_is_linear_and_separate() -> None:
    s = create_schedule("uba", 110, phi=5.0, eta_max=0.2, warmup_steps=10)
    assert [s.lr(i) for i in range(10)] == pytest.approx([0.2 * (i + 1) / 10 for i in range(10)])
    for i in range(10, 110):
        assert s.lr(i) == pytest.approx(eq5(i - 9, [0, 100], 5.0, 0.2, 0.0), rel=1e-12)


def test_past_end_holds_last_value_and_negative_refused() -> None:
    s = create_schedule("uba", 10, phi=5.0)
    assert s.lr(10) == s.lr(1000) == s.lr(9)
    with pytest.raises(ValueError):
        s.lr(-1)


def test_factory_errors_name_valid_choices() -> None:
    with pytest.raises(UnknownScheduleError, match="valid schedules: uba, constant"):
        create_schedule("cosin", 10)
    with pytest.raises(ScheduleParamError, match="'ph'.*valid parameters: phi, phases"):
        create_schedule("uba", 10, ph=1.0)
    with pytest.raises(ScheduleParamError, match="'phases'"):
        create_schedule("uba", 10, phases=0)
    with pytest.raises(ScheduleParamError, match="'phases'"):
        create_schedule("uba", 3, phases=4)
    with pytest.raises(ScheduleParamError, match="'eta_min'"):
        create_schedule("uba", 10, eta_max=0.1, eta_min=0.2)
    with pytest.raises(ScheduleParamError, match="'phi'.*2 values given for 3 phases"):
        create_schedule("uba", 10, phases=3, phi=[1.0, 2.0])
    with pytest.raises(ScheduleParamError, match="'total_steps'"):
        create_schedule("uba", 0)
    assert set(schedule_names()) == set(SCHEDULES) >= {
        "uba", "constant", "step", "cosine", "linear", "rex", "exponential", "onecycle",
        "triangular", "wsd", "refined", "piecewise"}


def test_schedule_is_frozen_serialisable_and_picklable() -> None:
    import json
    import pickle

    s = create_schedule("uba", 100, phi=[1.0, 3.0], phases=2, eta_max=0.1)
    d = json.loads(json.dumps(s.to_dict()))
    assert Schedule.from_dict(d) == s and Schedule.from_dict(d).values() == s.values()
    s2 = pickle.loads(pickle.dumps(s))
    assert s2 == s and hash(s2) == hash(s) and s2.values() == s.values()
    with pytest.raises(AttributeError):
        s.total_steps = 5  # type: ignore[misc]


def _model_opt(lrs: list[float]) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


def _run(opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
         n: int) -> list[list[float]]:
    used = []
    for _ in range(n):
        used.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return used


def test_ubalr_groups_use_own_lr_as_eta_max() -> None:
    opt = _model_opt([0.1, 0.01])
    sched = UBALR(opt, total_steps=20, phi=5.0, eta_min=0.001)
    used = _run(opt, sched, 20)
    for i, (a, b) in enumerate(used):
        assert a == pytest.approx(eq5(i + 1, [0, 20], 5.0, 0.1, 0.001), rel=1e-12)
        assert b == pytest.approx(eq5(i + 1, [0, 20], 5.0, 0.01, 0.001), rel=1e-12)
    assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]


def test_ubalr_explicit_eta_max_applies_to_all_groups() -> None:
    opt = _model_opt([0.1, 0.01])
    sched = UBALR(opt, total_steps=10, phi=1.0, eta_max=0.05)
    used = _run(opt, sched, 10)
    assert all(a == b for a, b in used)
    assert used[3][0] == pytest.approx(eq5(4, [0, 10], 1.0, 0.05, 0.0))


def test_schedule_lr_relative_and_absolute() -> None:
    rel = create_schedule("uba", 10, phi=5.0)  # no eta_max: relative
    opt = _model_opt([0.1, 0.02])
    used = _run(opt, rel.scheduler(opt), 10)
    for i, (a, b) in enumerate(used):
        assert a == pytest.approx(0.1 * rel.lr(i)) and b == pytest.approx(0.02 * rel.lr(i))
    ab = create_schedule("uba", 10, phi=5.0, eta_max=0.3)
    opt = _model_opt([0.1, 0.02])
    used = _run(opt, ScheduleLR(opt, ab), 10)
    assert [u[1] for u in used] == pytest.approx(ab.values())


@pytest.mark.parametrize("split", [1, 7, 13])
def test_scheduler_resume_gives_identical_values(split: int) -> None:
    kw = dict(total_steps=25, phi=[5.0, 1.0], phases=2, eta_min=0.001, warmup_steps=3)
    opt = _model_opt([0.1, 0.05])
    ref = _run(opt, UBALR(opt, **kw), 25)

    opt1 = _model_opt([0.1, 0.05])
    s1 = UBALR(opt1, **kw)
    first = _run(opt1, s1, split)
    buf = io.BytesIO()
    torch.save({"opt": opt1.state_dict(), "sched": s1.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)  # plain data only

    opt2 = _model_opt([0.1, 0.05])
    s2 = UBALR(opt2, **kw)
    opt2.load_state_dict(ckpt["opt"])
    s2.load_state_dict(ckpt["sched"])
    rest = _run(opt2, s2, 25 - split)
    assert first + rest == ref


def test_ubalr_works_with_adamw_and_step_epoch() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = UBALR(opt, total_steps=8, phi=0.5)
    for _ in range(8):
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(eq5(8, [0, 8], 0.5, 1e-3, 0.0))
    with pytest.warns(UserWarning):
        sched.step(3)  # deprecated epoch argument uses the closed form
    assert opt.param_groups[0]["lr"] == pytest.approx(eq5(4, [0, 8], 0.5, 1e-3, 0.0))
