"""Budget logic: the budget-vs-metric curve of a study and the smallest budget reaching a target.

Points are *measured* budgets (each trained from scratch); the smallest budget that reaches a
target is interpolated linearly in log(steps) between the two measured points that bracket it
and labelled ``interpolated``: it is an estimate, never presented as a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tuning.results import BudgetResult


def budget_curve(budgets: Sequence[BudgetResult], baselines: Sequence[dict[str, Any]],
                 mode: str) -> list[dict[str, Any]]:
    """One row per budget: tuned UBA (search value, and mean ± std over seeds when compared)
    and the best baseline at that budget."""
    sign = 1 if mode == "max" else -1
    rows = []
    for b in sorted(budgets, key=lambda b: b.budget_steps):
        arms = [r for r in baselines if r["budget_steps"] == b.budget_steps and r["mean"] is not None]
        uba = next((r for r in arms if r["schedule"] == "uba"), None)
        others = [r for r in arms if r["schedule"] != "uba"]
        best_base = max(others, key=lambda r: sign * r["mean"]) if others else None
        rows.append({
            "budget_steps": b.budget_steps,
            "fraction": b.fraction,
            "uba_phi": b.best.phi if b.best else None,
            "uba_phases": b.best.phases if b.best else None,
            "uba_search_value": b.best.value if b.best else None,
            "uba_mean": uba["mean"] if uba else (b.best.value if b.best else None),
            "uba_std": uba["std"] if uba else None,
            "uba_n": uba["n"] if uba else (1 if b.best else 0),
            "best_baseline": best_base["schedule"] if best_base else None,
            "baseline_mean": best_base["mean"] if best_base else None,
            "baseline_std": best_base["std"] if best_base else None,
        })
    return rows


def smallest_budget_reaching(points: Sequence[tuple[int, float]], target: float,
                             mode: str) -> dict[str, Any]:
    """Smallest budget (steps) whose metric reaches ``target`` (≥ for accuracy, ≤ for loss).

    Returns ``{"steps", "kind": "measured" | "interpolated" | "not_reached", "between"}``.
    """
    reached = (lambda v: v >= target) if mode == "max" else (lambda v: v <= target)
    pts = sorted((int(s), float(v)) for s, v in points if v is not None and math.isfinite(v))
    if not pts:
        return {"target": target, "steps": None, "kind": "not_reached", "between": None}
    for i, (steps, value) in enumerate(pts):
        if not reached(value):
            continue
        if i == 0:
            return {"target": target, "steps": steps, "kind": "measured", "between": None,
                    "note": "the smallest measured budget already reaches the target; a smaller "
                            "one may too"}
        (s0, v0), (s1, v1) = pts[i - 1], (steps, value)
        if v1 == v0:
            return {"target": target, "steps": steps, "kind": "measured", "between": [s0, s1]}
        w = (target - v0) / (v1 - v0)
        est = math.exp(math.log(s0) + w * (math.log(s1) - math.log(s0)))
        return {"target": target, "steps": round(est), "kind": "interpolated",
                "between": [s0, s1],
                "note": "linear in log(steps) between the two measured budgets that bracket it"}
    return {"target": target, "steps": None, "kind": "not_reached", "between": None,
            "note": f"best measured value {max(v for _, v in pts) if mode == 'max' else min(v for _, v in pts):.4g}"}
