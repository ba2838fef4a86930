"""Run a whole study: every budget (smallest first), each warm-started by the previous best.

Call :func:`run_study` in the main thread of a process that has called ``ray.init`` (Ray Tune
refuses worker threads). The service's driver process does exactly that; so can a notebook.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import ray

from tuning.budget import budget_curve, smallest_budget_reaching
from tuning.compare import build_comparison, summarize
from tuning.results import BudgetResult, StudyResult, StudySink
from tuning.search import LR, PHASES, PHI, best_of, build_tuner
from tuning.specs import StudySpec

logger = logging.getLogger(__name__)


class StudyFailedError(RuntimeError):
    """Every trial of a budget failed; the message carries the trials' reasons."""


class InsufficientResourcesError(RuntimeError):
    """The cluster cannot run even one trial; Ray would leave it PENDING forever."""


def check_resources(spec: StudySpec) -> dict[str, float]:
    """Refuse a study whose per-trial request no node could ever satisfy (Ray would wait forever).

    Returns the cluster's total resources for the log.
    """
    total = ray.cluster_resources()
    want = spec.resources
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fits = any(
        n["Resources"].get("CPU", 0) >= want.cpu and n["Resources"].get("GPU", 0) >= want.gpu
        for n in nodes
    )
    if not fits:
        raise InsufficientResourcesError(
            f"no node can run a trial asking for cpu={want.cpu}, gpu={want.gpu}; cluster has "
            f"CPU={total.get('CPU', 0):g}, GPU={total.get('GPU', 0):g} "
            f"(largest node CPU={max((n['Resources'].get('CPU', 0) for n in nodes), default=0):g}, "
            f"GPU={max((n['Resources'].get('GPU', 0) for n in nodes), default=0):g})"
        )
    return total


def run_study(
    spec: StudySpec,
    sink: StudySink,
    trainable: Callable[[dict], None] | None = None,
    dashboard_url: str | None = None,
) -> StudyResult:
    """Search φ and phases for each budget of ``spec`` and report through ``sink``.

    Budgets run smallest first; the best point of a smaller budget is the first point Optuna
    tries at the next one (φ transfers across budgets far better than chance, see README).
    """
    if trainable is None:
        from trainables.tune_trainable import uba_trainable

        trainable = uba_trainable
    total = check_resources(spec)
    logger.info("study %s: cluster resources %s", spec.study_id, total)
    sink.on_start(dashboard_url=dashboard_url)

    report, suggestions = None, []
    if spec.curvature or spec.history:
        from tuning.curvature_job import measure_curvature_on_ray, suggestions_for

        if spec.curvature:
            report = measure_curvature_on_ray(spec.train, spec.resources)
            logger.info("study %s: curvature %s", spec.study_id,
                        [(k.definition, k.value) for k in report.kappas])
        suggestions = suggestions_for(spec, report, spec.history)
        # every suggestion is evaluated as an Optuna starting point, so its gap is measured
        points = [{PHI: s["phi"]} for s in suggestions]
        spec = dataclasses.replace(spec, extra_points=(*spec.extra_points, *points))

    budgets: list[BudgetResult] = []
    baselines: list[dict] = []
    warm: list[dict] = []
    for steps in spec.budget_steps():
        logger.info("study %s: budget %d steps, %d trials", spec.study_id, steps, spec.num_trials)
        tuner = build_tuner(spec, steps, trainable, sink, warm_start=warm)
        results = tuner.fit()
        budget = best_of(spec, steps, results)
        budgets.append(budget)
        if budget.best is None:
            reasons = sorted({str(r.error).strip().splitlines()[-1][:300]
                              for r in results if r.error is not None})
            raise StudyFailedError(
                f"budget {steps} steps: no trial finished ({budget.num_failed} of "
                f"{budget.num_trials} failed): " + "; ".join(reasons or ["no reason recorded"])
            )
        best = budget.best
        warm = [{PHI: best.phi, PHASES: best.phases, LR: best.eta_max}]
        if suggestions:
            _add_gaps(spec, steps, suggestions, results, best.value)
        if spec.compare or spec.seeds > 1:
            logger.info("study %s: comparing %s over %d seeds at %d steps", spec.study_id,
                        ["uba", *spec.compare], spec.seeds, steps)
            comparison = build_comparison(spec, steps, best, spec.compare, spec.seeds,
                                          trainable, sink, spec.compare_eta_max)
            baselines.extend(summarize(spec, steps, comparison.fit()))

    curve = budget_curve(budgets, baselines, spec.mode)
    target = None
    if spec.target is not None:
        target = smallest_budget_reaching(
            [(row["budget_steps"], row["uba_mean"]) for row in curve], spec.target, spec.mode)
    result = StudyResult(metric=spec.metric, mode=spec.mode, budgets=budgets,
                         baselines=baselines, budget_curve=curve, target=target,
                         curvature=report.to_dict() if report is not None else None,
                         suggestions=suggestions)
    sink.on_finish(result)
    return result


def _add_gaps(spec: StudySpec, steps: int, suggestions: list[dict[str, Any]], results: Any,
              best_value: float) -> None:
    """Attach to each suggestion how far its φ's metric was from the tuned best at ``steps``."""
    from tuning.curvature_job import suggestion_gaps

    trials = [{"phi": float(r.config[PHI]), "step": int((r.metrics or {}).get("step", 0)),
               "value": (r.metrics or {}).get(spec.metric)}
              for r in results if r.error is None and PHI in r.config]
    gaps = suggestion_gaps(suggestions, steps, trials, best_value, spec.mode,
                           (spec.search.phi_min, spec.search.phi_max))
    for s, gap in zip(suggestions, gaps, strict=True):
        s.setdefault("gaps", []).append(gap)
