"""Table 1 and Proposition 2, reproduced by least-squares fits of phi."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuning.schedules import create_schedule, uba_array
from tuning.schedules.fit import fit_uba

T = 1000


def test_prop2_cosine_half_step_is_exactly_phi_two() -> None:
    target = [(1 + math.cos(math.pi * (i + 0.5) / T)) / 2 for i in range(T)]
    r = fit_uba(target)
    assert r.phi == pytest.approx(2.0, abs=1e-4) and r.rmse < 1e-5


def test_cosine_fits_phi_two_tightly() -> None:
    r = fit_uba(create_schedule("cosine", T, eta_max=0.1).values())
    assert abs(r.phi - 2.0) < 0.01 and r.rel_rmse < 2e-3 and r.eta_max == 0.1


def test_exponential_to_one_percent_fits_phi_thirty() -> None:
    r = fit_uba(create_schedule("exponential", T, final_ratio=0.01).values())
    assert 25.0 < r.phi < 35.0, r  # paper Table 1: 30; measured 29.7
    assert r.rmse < 0.06


def test_rex_fits_phi_point_eight() -> None:
    r = fit_uba(create_schedule("rex", T).values())
    assert 0.6 < r.phi < 1.0, r  # paper Table 1: 0.8; measured 0.74
    assert r.rmse < 0.1


def test_cyclic_clr_fits_phi_two_with_phase_per_half_cycle() -> None:
    # Table 1: cyclic = phi 2, k <- k + 1, one phase per half cycle (here 125 steps).
    r = fit_uba(create_schedule("triangular", T, step_size_up=125).values(),
                phases=(2, 4, 8, 16), phase_offset=1, variant="cyclic")
    assert r.phases == 8 and abs(r.phi - 2.0) < 0.05
    assert [c[0] for c in r.candidates] == [2, 4, 8, 16]


def test_onecycle_fits_phi_two_with_rising_first_phase() -> None:
    r = fit_uba(create_schedule("onecycle", T).values(), boundaries=[300], phase_offset=1,
                variant="cyclic")
    assert abs(r.phi - 2.0) < 0.15 and r.max_abs_err < 0.05
    assert r.schedule().params["boundaries"] == (300,)


@pytest.mark.parametrize("phi", [0.3, 1.0, 7.0, 60.0])
def test_fit_recovers_known_phi_and_schedule_roundtrip(phi: float) -> None:
    s = create_schedule("uba", 300, phi=phi, phases=2, eta_max=0.05, eta_min=0.001)
    r = fit_uba(s.values(), eta_max=0.05, eta_min=0.001, phases=(1, 2, 3))
    assert r.phases == 2 and r.phi == pytest.approx(phi, rel=1e-3) and r.rmse < 1e-8
    assert r.schedule().values() == pytest.approx(s.values(), abs=1e-8)
    assert not r.at_bound


def test_uba_array_agrees_with_scalar_path() -> None:
    for variant in ("cyclic", "restart"):
        s = create_schedule("uba", 97, phi=3.0, phases=3, eta_max=0.7, eta_min=0.1,
                            variant=variant)
        arr = uba_array(97, np.array([3.0]), eta_max=0.7, eta_min=0.1, phases=3,
                        variant=variant)[0]
        assert arr == pytest.approx(s.values(), rel=1e-13)


def test_fit_reports_bound_and_refuses_bad_input() -> None:
    r = fit_uba([1.0] * 50, eta_min=0.0)  # constant: phi wants to go to 0
    assert r.at_bound and r.phi == pytest.approx(0.01, rel=1e-2)
    with pytest.raises(ValueError):
        fit_uba([])
    with pytest.raises(ValueError):
        fit_uba([1.0, float("nan")])
    with pytest.raises(ValueError):
        fit_uba([1.0, 0.5], phi_bounds=(0.0, 1.0))
