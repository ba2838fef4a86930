"""Fit UBA's phi (and number of phases) to another schedule: Table 1 and Prop. 2, measured.

Table 1 of the paper claims UBA imitates cosine (phi = 2), exponential (phi = 30) and REX
(phi = 0.8). :func:`fit_uba` makes such claims checkable for any curve: for each candidate
number of phases it minimises the mean squared error between UBA and the target over
``log phi`` (a 1-D problem: a coarse grid, then golden-section refinement around the best
grid point) and reports the fit with its error, so a claimed equivalence always comes with
how close it actually is.

Measured with this module (T = 1000, eta_max = 1, eta_min = 0, RMSE in units of eta_max;
reproduced by ``tests/tuning/test_schedules_fit.py``):

==========================  ==========================  =======  =======  ============
target                      fit options                  phi      RMSE     max |error|
==========================  ==========================  =======  =======  ============
cosine, half a step later   (Prop. 2)                    2.0000   3e-7     ~0
cosine (CosineAnnealingLR)                               1.993    1.1e-4   2e-4
exponential to 1 %          (paper: 30)                  29.72    0.045    0.122
REX (paper profile)         (paper: 0.8)                 0.739    0.075    0.127
linear decay                                             1.994    0.075    0.105
triangular CLR, 125 up      phases 2/4/8/16, offset 1    2.000    0.076    0.109
                            (best: 8 = one per half cycle, paper: 2)
OneCycle (pct_start 0.3)    boundaries [300], offset 1   1.943    0.013    0.040
==========================  ==========================  =======  =======  ============

So cosine and OneCycle are imitated closely, while the exponential and REX equivalences of
Table 1 hold only in shape (about 5-8 % RMSE): useful for intuition, not identities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._schedule import Schedule, create_schedule
from ._uba import DEFAULT_VARIANT, UBA_VARIANTS, uba_array

__all__ = ["FitResult", "fit_uba"]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class FitResult:
    """Best UBA imitation of a target curve.

    ``rmse``/``max_abs_err`` are in LR units over all steps; ``rel_rmse`` is ``rmse /
    eta_max``. ``candidates`` holds ``(phases, phi, rmse)`` for every phase count tried, so
    the choice of phases can be inspected; ``at_bound`` warns that phi hit ``phi_bounds``.
    """

    phi: float
    phases: int
    rmse: float
    max_abs_err: float
    rel_rmse: float
    eta_max: float
    eta_min: float
    variant: str
    total_steps: int
    candidates: tuple[tuple[int, float, float], ...]
    at_bound: bool
    boundaries: tuple[int, ...] | None = None
    phase_offset: int = 0

    def schedule(self) -> Schedule:
        """The fitted UBA as a :class:`Schedule`."""
        shape: dict[str, Any] = (
            {"boundaries": list(self.boundaries)} if self.boundaries is not None
            else {"phases": self.phases})
        return create_schedule("uba", self.total_steps, phi=self.phi, eta_max=self.eta_max,
                               eta_min=self.eta_min, variant=self.variant,
                               phase_offset=self.phase_offset, **shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "phi": self.phi, "phases": self.phases, "rmse": self.rmse,
            "max_abs_err": self.max_abs_err, "rel_rmse": self.rel_rmse,
            "eta_max": self.eta_max, "eta_min": self.eta_min, "variant": self.variant,
            "total_steps": self.total_steps,
            "candidates": [list(c) for c in self.candidates], "at_bound": self.at_bound,
            "boundaries": list(self.boundaries) if self.boundaries is not None else None,
            "phase_offset": self.phase_offset,
        }


def _mse_grid(y: np.ndarray, log_phis: np.ndarray, eta_max: float, eta_min: float,
              phases: int, variant: str, boundaries: Sequence[int] | None = None,
              phase_offset: int = 0) -> np.ndarray:
    """Mean squared error for each log phi, chunked so memory stays ~32 MB for long runs."""
    T = y.shape[0]
    chunk = max(1, 4_000_000 // T)
    out = np.empty(log_phis.shape[0])
    for a in range(0, log_phis.shape[0], chunk):
        phis = np.exp(log_phis[a:a + chunk])
        v = uba_array(T, phis, eta_max=eta_max, eta_min=eta_min, phases=phases, variant=variant,
                      boundaries=boundaries, phase_offset=phase_offset)
        out[a:a + chunk] = np.mean((v.reshape(len(phis), T) - y) ** 2, axis=1)
    return out


def _golden(f: Any, lo: float, hi: float, tol: float) -> float:
    """Golden-section minimum of a unimodal ``f`` on ``[lo, hi]`` (to ``tol`` in x)."""
    c = hi - _GOLDEN * (hi - lo)
    d = lo + _GOLDEN * (hi - lo)
    fc, fd = f(c), f(d)
    while hi - lo > tol:
        if fc <= fd:
            hi, d, fd = d, c, fc
            c = hi - _GOLDEN * (hi - lo)
            fc = f(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + _GOLDEN * (hi - lo)
            fd = f(d)
    return (lo + hi) / 2.0


def fit_uba(
    target: Sequence[float],
    *,
    eta_max: float | None = None,
    eta_min: float | None = None,
    phases: Sequence[int] = (1,),
    phi_bounds: tuple[float, float] = (0.01, 200.0),
    variant: str = DEFAULT_VARIANT,
    boundaries: Sequence[int] | None = None,
    phase_offset: int = 0,
    grid: int = 97,
    tol: float = 1e-7,
) -> FitResult:
    """Least-squares fit of UBA's ``phi`` (and phase count) to the LR curve ``target``.

    ``target[i]`` is the LR of 0-based step ``i`` (e.g. ``create_schedule(...).values()``).
    ``eta_max`` defaults to ``max(target)`` and ``eta_min`` to 0 (the baselines decay to
    ~0); give them to fit shape only within a known range. For every ``phases`` candidate
    the search runs over ``log phi`` in ``phi_bounds``: a ``grid``-point scan then a golden-
    section refinement in the bracket around the best point (the MSE is smooth in phi; the
    grid guards against a second local minimum). The best candidate by RMSE is returned.
    ``boundaries`` (0-based steps where phases 2..K start) replaces the ``phases``
    candidates; ``phase_offset=1`` is Table 1's ``k <- k + 1`` (start with a rising phase, for
    CLR / OneCycle targets).

    >>> r = fit_uba(create_schedule("cosine", 1000).values())
    >>> round(r.phi, 3)
    1.993
    """
    y = np.asarray(target, dtype=float)
    if y.ndim != 1 or y.size == 0 or not np.all(np.isfinite(y)):
        raise ValueError("target must be a non-empty 1-D sequence of finite numbers")
    lo, hi = phi_bounds
    if not 0.0 < lo < hi:
        raise ValueError(f"phi_bounds={phi_bounds!r} must satisfy 0 < low < high")
    if variant not in UBA_VARIANTS:
        raise ValueError(f"variant={variant!r} must be one of {UBA_VARIANTS}")
    if boundaries is not None:
        b = [int(v) for v in boundaries]
        if any(v <= u for u, v in zip([0, *b], [*b, y.size], strict=True)):
            raise ValueError(f"boundaries={b!r} must increase strictly inside (0, {y.size})")
        boundaries = tuple(b)
        phases = (len(b) + 1,)
    if not phases or any(int(p) < 1 or int(p) > y.size for p in phases):
        raise ValueError(f"phases={tuple(phases)!r} must be ints in [1, {y.size}]")
    e_max = float(y.max()) if eta_max is None else float(eta_max)
    e_min = 0.0 if eta_min is None else float(eta_min)
    if not 0.0 <= e_min < e_max:
        raise ValueError(f"need 0 <= eta_min={e_min} < eta_max={e_max}")

    log_lo, log_hi = math.log(lo), math.log(hi)
    xs = np.linspace(log_lo, log_hi, max(grid, 3))
    best: tuple[float, int, float] | None = None  # (mse, phases, log phi)
    cands: list[tuple[int, float, float]] = []
    for n in (int(p) for p in phases):
        mse = _mse_grid(y, xs, e_max, e_min, n, variant, boundaries, phase_offset)
        j = int(np.argmin(mse))
        a, b = xs[max(j - 1, 0)], xs[min(j + 1, xs.size - 1)]

        def f(x: float, n: int = n) -> float:
            return float(_mse_grid(y, np.array([x]), e_max, e_min, n, variant, boundaries,
                                   phase_offset)[0])

        x = _golden(f, float(a), float(b), tol)
        m = f(x)
        if mse[j] < m:  # the refinement never loses to the grid point
            x, m = float(xs[j]), float(mse[j])
        cands.append((n, math.exp(x), math.sqrt(m)))
        if best is None or m < best[0]:
            best = (m, n, x)
    assert best is not None
    m, n, x = best
    phi = math.exp(x)
    fitted = uba_array(y.size, phi, eta_max=e_max, eta_min=e_min, phases=n, variant=variant,
                       boundaries=boundaries, phase_offset=phase_offset)
    rmse = math.sqrt(m)
    edge = 1e-3
    return FitResult(
        phi=phi, phases=n, rmse=rmse, max_abs_err=float(np.max(np.abs(fitted - y))),
        rel_rmse=rmse / e_max, eta_max=e_max, eta_min=e_min, variant=variant,
        total_steps=int(y.size), candidates=tuple(cands),
        at_bound=x - log_lo < edge or log_hi - x < edge,
        boundaries=boundaries, phase_offset=phase_offset,
    )
