"""Piecewise-constant LR: ``eta_max`` times one factor per segment.

The shape a stage-wise scheduler produces (AutoLRS picks one lr per stage, Jin et al.,
ICLR 2021; ``tuning.compare`` replays a run's stages with it) and the general form of
``MultiStepLR``, whose factors are powers of ``gamma``. Definition, for a run of ``T`` updates
with ``boundaries = [b_1, ..., b_{n-1}]`` (0-based training steps where segments 2..n start,
``W < b_1 < ... < b_{n-1} < T`` with ``W`` the warmup steps) and ``factors = [f_1, ..., f_n]``
(each in (0, 1]):

    lr(i) = eta_max · f_{j+1}   for ``b_j <= i < b_{j+1}`` (``b_0 = W``, ``b_n = T``),

i.e. ``eta_max · factors[bisect_right(boundaries, i)]``: step ``b_j`` is the first step of
segment ``j + 1``. Steps ``i < W`` are the shared linear warmup to ``eta_max``.
``boundaries=None`` is one segment; ``factors=None`` gives every segment 1.0 (constant).
``eta_max=None`` is relative mode: the factors multiply each param group's own LR.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

from ._base import Curve, ScheduleParamError

__all__ = ["build_piecewise", "piecewise_segments"]

_NAME = "piecewise"


def piecewise_segments(total_steps: int, warmup: int, boundaries: Any,
                       factors: Any) -> tuple[list[int], list[float]]:
    """Checked ``(boundaries, factors)`` of a run of ``total_steps`` (warmup included):
    boundaries strictly increasing in ``(warmup, total_steps)``, one factor per segment, each
    finite and in (0, 1]. ``ScheduleParamError`` naming the parameter otherwise (the registry
    checks kinds and element bounds first; these are the checks across elements)."""
    bounds = [] if boundaries is None else list(boundaries)
    if any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)):
        raise ScheduleParamError(_NAME, "boundaries", f"{bounds} must be strictly increasing")
    if bounds and (bounds[0] <= warmup or bounds[-1] >= total_steps):
        raise ScheduleParamError(
            _NAME, "boundaries",
            f"{bounds} must lie in [{warmup + 1}, {total_steps - 1}]: the 0-based training "
            "steps where segments 2..n start, after warmup and before the end")
    n = len(bounds) + 1
    facs = [1.0] * n if factors is None else [float(f) for f in factors]
    if len(facs) != n:
        raise ScheduleParamError(
            _NAME, "factors", f"{len(facs)} values given for {n} segments "
            f"({len(bounds)} boundaries); give one factor per segment")
    for j, f in enumerate(facs):
        if not (math.isfinite(f) and 0.0 < f <= 1.0):
            raise ScheduleParamError(
                _NAME, "factors", f"value {f!r} of segment {j + 1} is invalid; allowed: "
                "finite numbers in (0, 1], multipliers of eta_max")
    return bounds, facs


def build_piecewise(T: int, p: Mapping[str, Any]) -> Curve:
    """Registry builder: ``eta_max · factors[bisect_right(boundaries, i)]`` (see the module).

    ``T`` is the body after warmup; boundaries are training steps, so they are shifted by the
    warmup onto the body's steps."""
    warmup = int(p.get("warmup_steps", 0))
    bounds, facs = piecewise_segments(T + warmup, warmup, p["boundaries"], p["factors"])
    peak = 1.0 if p["eta_max"] is None else float(p["eta_max"])
    body = [b - warmup for b in bounds]
    values = [peak * f for f in facs]
    return (lambda i: values[bisect_right(body, i)]), peak
