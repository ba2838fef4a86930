"""Refinement: a schedule computed from the gradient norms of one run (Defazio, Cutkosky, Mehta,
Mishchenko, "When, Why and How Much? Adaptive Learning Rate Scheduling by Refinement", 2023).

Written from the paper's formula (their code is CC-BY-NC and was not used). For a run of
``T`` updates with gradient norms ``G_1 .. G_T`` (ℓ2 for SGD, ℓ1 for Adam-type optimizers,
the norm each one's regret bound is stated in):

1. ``Ĝ`` = ``G`` smoothed by a running median ``window_frac·T`` wide (an odd number of
   steps, at least 1), the sequence reflect-padded at both ends (numpy's ``"reflect"``: the
   edge value is not repeated);
2. ``w_t = Ĝ_t^-2`` (SGD) or ``Ĝ_t^-1`` (Adam, AdamW);
3. ``η_t = w_t · Σ_{p>t} w_p / Σ_p w_p``, so ``η_T = 0``;
4. normalised to a peak of 1 and multiplied by the base LR ``eta_max`` (which is still tuned).

Constant norms give ``η_t ∝ T - t``: linear decay from ``eta_max`` on the first update to 0
on the last, i.e. ``1 - i / (T - 1)`` at 0-based step ``i`` (exactly, since the weights are
scaled so that the largest is 1.0 before summing). Large early norms give small early weights
and therefore a warmup; norms that fall late in the run give a fast final anneal.

Conventions: the schedule's 0-based step ``i`` is the paper's update ``t = i + 1``, and
``norms[i]`` is the gradient norm of that update. ``norms=None`` means constant norms (the
linear-decay run the paper refines first). With ``total_steps = 1`` the formula is 0/0; the
one update then gets ``eta_max`` (nothing was measured to refine from).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._base import Curve, ScheduleParamError

__all__ = [
    "DEFAULT_WINDOW_FRAC",
    "REFINED_OPTIMIZERS",
    "build_refined",
    "median_smooth",
    "refined_multipliers",
    "resample_norms",
    "weight_power",
]

#: Optimizer families the refinement formula distinguishes: ``sgd`` (ℓ2 norms, w = Ĝ^-2) and
#: the Adam type (ℓ1 norms, w = Ĝ^-1).
REFINED_OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
#: Width of the median filter as a fraction of the run (the paper's 10 %).
DEFAULT_WINDOW_FRAC = 0.1


def weight_power(optimizer: str) -> int:
    """The exponent ``p`` of ``w_t = Ĝ_t^-p``: 2 for SGD, 1 for Adam-type optimizers."""
    if optimizer == "sgd":
        return 2
    if optimizer in ("adam", "adamw"):
        return 1
    raise ScheduleParamError("refined", "optimizer",
                             f"{optimizer!r} is invalid; allowed: one of "
                             + ", ".join(repr(o) for o in REFINED_OPTIMIZERS))


def window_width(total_steps: int, window_frac: float) -> int:
    """Odd number of steps of the median window: ``round(window_frac·T)``, made odd, >= 1."""
    width = max(1, int(math.floor(window_frac * total_steps + 0.5)))
    return width if width % 2 == 1 else width + 1


def median_smooth(values: Sequence[float] | np.ndarray, width: int) -> np.ndarray:
    """Running median of ``width`` (odd) points centred on each value, reflect-padded.

    A sorted window updated by one removal and one insertion per step: ``O(T log w)``
    comparisons plus a memmove of the window, fast enough for a run of 10⁵ steps.
    """
    x = np.asarray(values, dtype=np.float64)
    if width < 1 or width % 2 == 0:
        raise ValueError(f"width={width} must be an odd integer >= 1")
    if width == 1 or x.size <= 1:
        return x.copy()
    half = width // 2
    padded = np.pad(x, half, mode="reflect").tolist()
    window = sorted(padded[:width])
    out = [window[half]]
    for i in range(width, len(padded)):
        del window[bisect_left(window, padded[i - width])]
        insort(window, padded[i])
        out.append(window[half])
    return np.asarray(out, dtype=np.float64)


def refined_multipliers(norms: Sequence[float] | np.ndarray, optimizer: str = "sgd",
                        window_frac: float = DEFAULT_WINDOW_FRAC) -> np.ndarray:
    """The refined schedule as multipliers of the base LR (peak 1, last 0), one per update.

    ``norms`` must be finite and > 0 (checked here too, for callers outside the registry).
    """
    g = np.asarray(norms, dtype=np.float64)
    if g.ndim != 1 or g.size == 0:
        raise ScheduleParamError("refined", "norms", "must be a non-empty list of numbers")
    if not np.all(np.isfinite(g)) or not np.all(g > 0):
        bad = int(np.flatnonzero(~(np.isfinite(g) & (g > 0)))[0])
        raise ScheduleParamError(
            "refined", "norms", f"value {g[bad]!r} at step {bad} is invalid; allowed: finite "
            "numbers > 0 (w = Ĝ^-p needs a positive norm)")
    power = weight_power(optimizer)
    T = g.size
    if T == 1:
        return np.ones(1)
    smooth = median_smooth(g, window_width(T, window_frac))
    # (min Ĝ / Ĝ_t)^p = w_t / max w: the largest weight is exactly 1.0, so constant norms sum
    # to exact integers and the result is linear decay to the last bit.
    w = (smooth.min() / smooth) ** power
    after = np.empty_like(w)  # Σ_{p>t} w_p
    after[:-1] = np.cumsum(w[::-1])[::-1][1:]
    after[-1] = 0.0
    eta = w * after  # the paper's / Σ_p w_p cancels in the normalisation below
    return eta / eta.max()


def resample_norms(norms: Sequence[float] | np.ndarray, steps: int) -> list[float]:
    """A run's per-update norms mapped onto a run of ``steps`` updates: the sequence read as a
    function of the run's progress, sampled at ``steps`` evenly spaced points by linear
    interpolation (first and last values kept; ``steps == len(norms)`` returns them as is).

    Why: refining a full-budget run gives a schedule of that length; a shorter horizon of the
    ladder tunes the *same* schedule compressed onto its steps (as it does a UBA shape), and
    the median window is a fraction of the run, so it compresses alike."""
    g = [float(v) for v in norms]
    if not g:
        raise ScheduleParamError("refined", "norms", "must be a non-empty list of numbers")
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    if steps == len(g):
        return g
    if len(g) == 1 or steps == 1:
        return [g[0]] * steps
    at = np.linspace(0.0, len(g) - 1.0, steps)
    return np.interp(at, np.arange(len(g), dtype=np.float64), np.asarray(g)).tolist()


def build_refined(T: int, p: Mapping[str, Any]) -> Curve:
    """Registry builder: ``eta_max · refined_multipliers(norms, optimizer, window_frac)[i]``."""
    peak = 1.0 if p["eta_max"] is None else float(p["eta_max"])
    norms = p["norms"]
    if norms is None:
        norms = (1.0,) * T
    elif len(norms) != T:
        raise ScheduleParamError(
            "refined", "norms", f"{len(norms)} values given for total_steps={T}; give one "
            "gradient norm per update (the run being refined had that many steps)")
    values = (peak * refined_multipliers(norms, p["optimizer"], p["window_frac"])).tolist()
    return values.__getitem__, peak
