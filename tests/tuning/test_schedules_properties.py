"""Property tests (hypothesis) of UBA over random T, phi, eta range, phases, boundaries."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tuning.schedules import SCHEDULES, UBALR, Schedule, create_schedule

torch.set_num_threads(1)

phis = st.one_of(st.just(0.0), st.floats(0.01, 200.0), st.sampled_from([0.5, 2.0, 5.0, 30.0]))


def eq5_ref(t: int, bounds: list[int], phi: float, eta_max: float, eta_min: float,
            restart: bool) -> float:
    """Literal Eq. (5), independent of the library (1-based t, bounds = [0, ..., T])."""
    k = 1
    while not bounds[k - 1] < t <= bounds[k]:
        k += 1
    c = (2 * (t - bounds[k - 1]) - 1) * math.pi / (2 * (bounds[k] - bounds[k - 1]))
    if not restart:
        c += (k - 1) * math.pi
    q = 1 + math.cos(c)
    if phi == 0.0:
        return eta_max
    return (eta_max - eta_min) * 2 * q / (2 * phi + (2 - phi) * q) + eta_min


@st.composite
def uba_cases(draw: st.DrawFn) -> dict:
    T = draw(st.integers(1, 300))
    n = draw(st.integers(1, min(T, 6)))
    if n > 1 and draw(st.booleans()):
        inner = sorted(draw(st.sets(st.integers(1, T - 1), min_size=n - 1, max_size=n - 1)))
        shape = {"boundaries": inner}
    else:
        shape = {"phases": n}
    eta_max = draw(st.floats(1e-6, 10.0))
    eta_min = draw(st.floats(0.0, 1.0)) * eta_max
    per_phase = draw(st.booleans())
    phi = [draw(phis) for _ in range(n)] if per_phase else draw(phis)
    return {"total_steps": T, "phi": phi, "eta_max": eta_max, "eta_min": eta_min,
            "variant": draw(st.sampled_from(["cyclic", "restart"])), **shape}


def _bounds(s: Schedule) -> list[int]:
    T, p = s.total_steps, s.params
    if p["boundaries"] is not None:
        return [0, *p["boundaries"], T]
    return [(k * T) // p["phases"] for k in range(p["phases"] + 1)]


def _phase_phis(s: Schedule) -> list[float]:
    phi = s.params["phi"]
    return list(phi) if isinstance(phi, tuple) else [phi] * s.params["phases"]


@settings(max_examples=150, deadline=None)
@given(uba_cases())
def test_uba_matches_eq5_and_stays_in_range(case: dict) -> None:
    T = case.pop("total_steps")
    s = create_schedule("uba", T, **case)
    bounds, ps = _bounds(s), _phase_phis(s)
    lo, hi = s.params["eta_min"], s.params["eta_max"]
    v = s.values()
    assert len(v) == T
    for i, x in enumerate(v):
        assert lo <= x <= hi
        k = next(j for j in range(1, len(bounds)) if bounds[j - 1] <= i < bounds[j])
        want = eq5_ref(i + 1, bounds, ps[k - 1], hi, lo, case["variant"] == "restart")
        assert math.isclose(x, want, rel_tol=1e-9, abs_tol=1e-12 * hi)


@settings(max_examples=150, deadline=None)
@given(uba_cases())
def test_monotone_within_phases_and_boundaries_exact(case: dict) -> None:
    T = case.pop("total_steps")
    s = create_schedule("uba", T, **case)
    bounds, ps = _bounds(s), _phase_phis(s)
    v = s.values()
    for k in range(1, len(bounds)):
        seg = v[bounds[k - 1]:bounds[k]]
        rising = case["variant"] == "cyclic" and k % 2 == 0
        pairs = list(zip(seg, seg[1:], strict=False))
        assert all(b >= a for a, b in pairs) if rising else all(b <= a for a, b in pairs)
        if k > 1 and case["variant"] == "restart" and min(ps[k - 2:k]) > 0 and len(seg) > 1 \
                and s.params["eta_max"] > s.params["eta_min"] * (1 + 1e-9):
            # First step of a restart phase is its maximum.
            assert seg[0] == max(seg)
            # With the same φ on both sides and a previous phase of >= 2 steps, it restarts
            # above the previous end: η is increasing in g = 1 + cos c, and g_end <= 1 - cos(π/4)
            # < 1 <= g_start. (Different φ per phase need not: a slow-decaying short phase can
            # end above a fast-decaying phase's first step.)
            if ps[k - 2] == ps[k - 1] and bounds[k - 1] - bounds[k - 2] >= 2:
                assert seg[0] > v[bounds[k - 1] - 1]


@settings(max_examples=40, deadline=None)
@given(uba_cases(), st.integers(0, 10), st.data())
def test_scheduler_resume_identical(case: dict, warmup: int, data: st.DataObject) -> None:
    T = case.pop("total_steps") + warmup
    if "boundaries" in case:
        case["boundaries"] = [b + warmup for b in case["boundaries"]]
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=case["eta_max"])
    ref = UBALR(opt, total_steps=T, warmup_steps=warmup, **case)
    full = [ref.get_last_lr()[0]]
    for _ in range(T):
        opt.step()
        ref.step()
        full.append(ref.get_last_lr()[0])
    split = data.draw(st.integers(0, T))
    opt1 = torch.optim.SGD([p], lr=case["eta_max"])
    s1 = UBALR(opt1, total_steps=T, warmup_steps=warmup, **case)
    for _ in range(split):
        opt1.step()
        s1.step()
    opt2 = torch.optim.SGD([p], lr=case["eta_max"])
    s2 = UBALR(opt2, total_steps=T, warmup_steps=warmup, **case)
    opt2.load_state_dict(opt1.state_dict())
    s2.load_state_dict(s1.state_dict())
    rest = [s2.get_last_lr()[0]]
    for _ in range(T - split):
        opt2.step()
        s2.step()
        rest.append(s2.get_last_lr()[0])
    assert full[:split] + rest == full
    assert opt2.param_groups[0]["lr"] == full[-1]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(SCHEDULES)), st.integers(1, 200), st.floats(1e-5, 5.0))
def test_every_schedule_in_range_and_roundtrips(name: str, T: int, eta_max: float) -> None:
    s = create_schedule(name, T, eta_max=eta_max)
    v = s.values()
    assert all(0.0 <= x <= eta_max * (1 + 1e-12) for x in v)
    assert Schedule.from_dict(s.to_dict()).values() == v


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 500), st.data(), phis, st.sampled_from(["cyclic", "restart"]))
def test_uba_lr_function_equals_schedule(T: int, data: st.DataObject, phi: float,
                                         variant: str) -> None:
    from tuning.schedules import uba_lr

    n = data.draw(st.integers(1, min(T, 12)))
    s = create_schedule("uba", T, phi=phi, phases=n, eta_max=0.3, eta_min=0.01, variant=variant)
    for i in sorted({0, T - 1, *data.draw(st.lists(st.integers(0, T - 1), max_size=20))}):
        assert uba_lr(i, T, phi=phi, eta_max=0.3, eta_min=0.01, phases=n, variant=variant) \
            == s.lr(i)
