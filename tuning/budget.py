"""Budget logic: the budget-vs-metric curve of a study and the smallest budget reaching a target.

Points are *measured* budgets (each trained from scratch); the smallest budget that reaches a
target is interpolated linearly in log(steps) between the two measured points that bracket it
and labelled ``interpolated``: it is an estimate, never presented as a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tuning.results import BaselineRow, BudgetResult, BudgetRow, TargetEstimate


def budget_curve(budgets: Sequence[BudgetResult], baselines: Sequence[BaselineRow],
                 mode: str) -> list[BudgetRow]:
    """One row per budget: tuned UBA (search value, and mean ± std over seeds when compared)
    and the best baseline at that budget."""
    sign = 1 if mode == "max" else -1
    rows = []
    for b in sorted(budgets, key=lambda b: b.budget_steps):
        arms = [r for r in baselines if r.budget_steps == b.budget_steps and r.mean is not None]
        uba = next((r for r in arms if r.schedule == "uba"), None)
        others = [r for r in arms if r.schedule != "uba"]
        best_base = max(others, key=lambda r: sign * (r.mean or 0.0)) if others else None
        best = b.best
        rows.append(BudgetRow(
            budget_steps=b.budget_steps,
            fraction=b.fraction,
            uba_phi=best.phi if best else None,
            uba_phases=best.phases if best else None,
            uba_search_value=best.value if best else None,
            uba_mean=uba.mean if uba else (best.value if best else None),
            uba_std=uba.std if uba else (best.value_std if best else None),
            uba_n=uba.n if uba else (best.n_seeds if best else 0),
            best_baseline=best_base.schedule if best_base else None,
            baseline_mean=best_base.mean if best_base else None,
            baseline_std=best_base.std if best_base else None,
        ))
    return rows


def smallest_budget_reaching(points: Sequence[tuple[int, float | None]], target: float,
                             mode: str) -> TargetEstimate:
    """Smallest budget (steps) whose metric reaches ``target`` (≥ for accuracy, ≤ for loss)."""
    reached = (lambda v: v >= target) if mode == "max" else (lambda v: v <= target)
    pts = sorted((int(s), float(v)) for s, v in points if v is not None and math.isfinite(v))
    if not pts:
        return TargetEstimate(target=target, steps=None, kind="not_reached")
    for i, (steps, value) in enumerate(pts):
        if not reached(value):
            continue
        if i == 0:
            return TargetEstimate(target=target, steps=steps, kind="measured",
                                  note="the smallest measured budget already reaches the "
                                       "target; a smaller one may too")
        (s0, v0), (s1, v1) = pts[i - 1], (steps, value)
        if v1 == v0:
            return TargetEstimate(target=target, steps=steps, kind="measured", between=[s0, s1])
        w = (target - v0) / (v1 - v0)
        est = math.exp(math.log(s0) + w * (math.log(s1) - math.log(s0)))
        return TargetEstimate(target=target, steps=round(est), kind="interpolated",
                              between=[s0, s1],
                              note="linear in log(steps) between the two measured budgets "
                                   "that bracket it")
    best = max(v for _, v in pts) if mode == "max" else min(v for _, v in pts)
    return TargetEstimate(target=target, steps=None, kind="not_reached",
                          note=f"best measured value {best:.4g}")
