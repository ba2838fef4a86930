"""Run a whole study: the search (horizon ladder by default), the noise-aware final pick,
comparisons, and the study result with the compute it spent.

Call :func:`run_study` in the main thread of a process that has called ``ray.init`` (Ray Tune
refuses worker threads). The service's driver process does exactly that; so can a notebook.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import ray

from tuning.arms import LR, PHASES, PHI, SELF_TUNING, UBA, resolve_arm
from tuning.budget import budget_curve, smallest_budget_reaching
from tuning.compare import (
    ArmTuning,
    pick_winner,
    run_comparison,
    summarize,
    trained_steps,
    tune_arm,
)
from tuning.executor import RayExecutor, run_candidates
from tuning.ladder import Candidate, Outcome, compute_units, promote
from tuning.proposer import (
    ask_rung,
    initial_points,
    open_rung_study,
    optuna_space,
    propose,
    tell_rung,
    warmup_steps,
)
from tuning.refine import RefineSource, refine_sources, refined_schedule_params, tune_refined
from tuning.results import (
    BaselineRow,
    BestSchedule,
    BudgetResult,
    ComputeSpent,
    FinalistRow,
    RungResult,
    StudyResult,
    StudySink,
    Winner,
)
from tuning.schedules import create_schedule
from tuning.search import pick_finalists, search_ladder
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
    """Search φ and phases (η_max when asked) and report through ``sink``.

    ``spec.method == "ladder"``: :func:`search_ladder`; ``"asha"``: :func:`search_asha`. Then
    the finalists are re-trained with extra seeds at the full budget, each requested budget
    gets its best (from the rung of that horizon), and comparisons run where asked. The
    budgets' searches are independent: the smaller budgets' bests are not fed to the larger
    ones as starting points (the warm-start bench found no measurable gain from it).
    """
    if trainable is None:
        from trainables.tune_trainable import uba_trainable

        trainable = uba_trainable
    total = check_resources(spec)
    logger.info("study %s: cluster resources %s", spec.study_id, total)
    sink.on_start(dashboard_url=dashboard_url)

    from tuning.phi_from_curvature import (
        measure_curvature_on_ray,
        study_recommendation,
        suggestions_for,
        with_recommendation,
    )

    # One curvature measurement serves the fitted φ model's recommendation and the curvature
    # suggestions (both read the Hessian at initialisation).
    recommendation, report = study_recommendation(spec)
    suggestions: list[dict[str, Any]] = []
    if spec.curvature:
        if report is None:
            # the recommendation could not measure (it fell back to the budget features):
            # measured on its own, a study that asked for curvature fails with the reason
            report = measure_curvature_on_ray(spec.train, spec.resources)
        logger.info("study %s: curvature %s", spec.study_id,
                    [(k.definition, k.value) for k in report.kappas])
    if spec.curvature or spec.history:
        suggestions = suggestions_for(spec, report, spec.history)
        # every suggestion is evaluated as a starting point, so its gap is measured
        points = [{PHI: s["phi"]} for s in suggestions]
        spec = dataclasses.replace(spec, extra_points=(*spec.extra_points, *points))
    # the fitted φ model's recommendation is the first point of every search (issue 13 §5)
    spec, suggestions = with_recommendation(spec, recommendation, suggestions)

    executor = RayExecutor(spec, trainable, sink)
    if spec.method == "asha":
        outcomes = search_asha(spec, trainable, sink)
    else:
        outcomes = search_ladder(spec, executor)
    finalists, finalist_runs = pick_finalists(spec, outcomes.get(spec.total_steps, []),
                                              executor)
    search_steps = sum(o.trained_steps for outs in outcomes.values() for o in outs)
    finalist_steps = sum(o.trained_steps for o in finalist_runs)
    uba_units = compute_units(search_steps + finalist_steps, spec.total_steps)

    # every compare arm tuned by the same ladder and plan (compare_tuning="ladder"), but those
    # that choose their lr while training (AutoLRS): their search is inside each run
    tunings: dict[str, ArmTuning] = {}
    if spec.compare and spec.compare_tuning == "ladder":
        for arm in dict.fromkeys(resolve_arm(a) for a in spec.compare):
            if arm in SELF_TUNING:
                continue
            logger.info("study %s: tuning compare arm %s by the ladder", spec.study_id, arm)
            tunings[arm] = tune_arm(spec, arm, executor)
    tuning_steps = sum(t.trained_steps for t in tunings.values())

    # refine: true: the best full-budget UBA run and a linear-decay run refined from their
    # gradient norms, each refined schedule's lr tuned by the same ladder (tuning.refine)
    sources: dict[str, RefineSource] = {}
    refined: dict[str, ArmTuning] = {}
    if spec.refine:
        full_best = budget_result(spec, spec.total_steps, outcomes.get(spec.total_steps, []),
                                  finalists).best
        sources = refine_sources(spec, full_best, outcomes.get(spec.total_steps, []), tunings,
                                 executor)
        refined = tune_refined(spec, sources, executor)
    refine_steps = sum(t.trained_steps for t in refined.values()) + sum(
        s.trained.trained_steps for s in sources.values()
        if s.trained is not None and s.arm not in refined)
    refined_picks = {a: t.pick(spec, spec.total_steps) for a, t in refined.items()}

    budgets: list[BudgetResult] = []
    baselines: list[BaselineRow] = []
    winners: list[Winner] = []
    compare_steps = 0
    for steps in spec.budget_steps():
        outs = outcomes.get(steps, [])
        budget = budget_result(spec, steps, outs, finalists if steps == spec.total_steps else [])
        budgets.append(budget)
        if budget.best is None:
            reasons = sorted({o.error for o in outs if o.error})
            raise StudyFailedError(
                f"budget {steps} steps: no trial finished ({budget.num_failed} of "
                f"{budget.num_trials} failed): " + "; ".join(reasons or ["no reason recorded"])
            )
        if suggestions:
            _add_gaps(spec, steps, suggestions, outs)
        full_budget = steps == spec.total_steps
        if spec.compare or spec.seeds > 1 or (sources and full_budget):
            logger.info("study %s: comparing %s over %d seeds at %d steps", spec.study_id,
                        [UBA, *spec.compare, *(sources if full_budget else ())], spec.seeds,
                        steps)
            picks = {a: t.pick(spec, steps) for a, t in tunings.items()} if tunings else None
            arms = {}  # the refined arms compete at the full budget, whose runs they refine
            if full_budget:
                arms = {a: {**sources[a].arm_params(), LR: lr}
                        for a, lr in refined_picks.items() if lr is not None}
            grid = run_comparison(spec, steps, budget.best, spec.compare, spec.seeds,
                                  trainable, sink, spec.compare_eta_max, picks=picks,
                                  refined=arms)
            compare_steps += trained_steps(grid)
            known = {**tunings, **(refined if full_budget else {})}
            missing = [a for a, lr in (picks or {}).items() if lr is None]
            if full_budget:
                missing += [a for a, lr in refined_picks.items() if lr is None]
            rows = summarize(spec, steps, grid, known or None, uba_units, missing=missing)
            for r in rows:
                if r.schedule == UBA:
                    r.params = {PHI: budget.best.phi, PHASES: budget.best.phases}
                elif r.schedule in refined and full_budget and r.eta_max is not None:
                    r.params = {**refined_schedule_params(spec, sources[r.schedule],
                                                          r.eta_max),
                                "finalists": _finalist_params(refined[r.schedule])}
                elif r.schedule in tunings and full_budget:
                    r.params = {"finalists": _finalist_params(tunings[r.schedule])}
            if full_budget:  # a source that could not be refined: its row says why
                rows += [BaselineRow(budget_steps=steps, schedule=a, n=0, values=[], mean=None,
                                     std=None, errors=[src.error], tuned=True,
                                     tuning_units=compute_units(src.trained.trained_steps,
                                                                spec.total_steps)
                                     if src.trained is not None else 0.0,
                                     params={"source": src.describe()})
                         for a, src in sources.items() if src.error]
            baselines.extend(rows)
            winner = pick_winner(spec, steps, rows)
            if winner is not None:
                winners.append(winner)

    full = next((w for w in winners if w.budget_steps == spec.total_steps), None)
    top = next((b.best for b in budgets if b.budget_steps == spec.total_steps), None)
    if full is not None and full.arm != UBA and top is not None:
        top.note = (f"{full.arm} ({'tuned' if full.tuned else 'untuned'}, η_max="
                    f"{full.eta_max:.4g}) beat this schedule at {full.budget_steps} steps by "
                    f"{abs(full.margin):.4g} {spec.metric} on average over {full.n} paired "
                    f"evaluation seeds (won {full.wins}, lost {full.losses}); see result.winner")
    curve = budget_curve(budgets, baselines, spec.mode)
    target = None
    if spec.target is not None:
        target = smallest_budget_reaching(
            [(row.budget_steps, row.uba_mean) for row in curve], spec.target, spec.mode)
    steps_total = search_steps + finalist_steps + tuning_steps + refine_steps + compare_steps
    compute = ComputeSpent(steps=steps_total, units=compute_units(steps_total, spec.total_steps),
                           full_budget_steps=spec.total_steps, search_steps=search_steps,
                           finalist_steps=finalist_steps, compare_steps=compare_steps,
                           compare_tuning_steps=tuning_steps, refine_steps=refine_steps)
    logger.info("study %s: compute %.2f full-budget runs (%d steps)", spec.study_id,
                compute.units, compute.steps)
    requested = set(spec.budget_steps())
    rungs = [RungResult(
        steps=steps, fraction=steps / spec.total_steps, requested=steps in requested,
        num_trials=len(outs), num_completed=sum(o.completed for o in outs),
        num_failed=sum(o.status == "error" for o in outs),
        best_value=_best_value(spec, outs)) for steps, outs in sorted(outcomes.items())]
    result = StudyResult(metric=spec.metric, mode=spec.mode, budgets=budgets,
                         baselines=baselines, budget_curve=curve, target=target,
                         curvature=report.to_dict() if report is not None else None,
                         suggestions=suggestions, method=spec.method, rungs=rungs,
                         finalists=finalists, compute=compute, winners=winners)
    sink.on_finish(result)
    return result


def _finalist_params(tuning: ArmTuning) -> list[dict[str, Any]]:
    return [{"eta_max": f.eta_max, "values": f.values, "robust": f.robust}
            for f in tuning.finalists]


def search_asha(spec: StudySpec, trainable: Callable[[dict], None],
                sink: StudySink) -> dict[int, list[Outcome]]:
    """Opt-in ASHA: per budget, ``num_trials`` candidates in one experiment that Ray's
    ASHAScheduler stops on intermediate values (grace T/4, factor 2). Stopped runs are PRUNED
    in Optuna, never COMPLETE. Its known bias: intermediate values of a UBA run rank φ
    backwards (Spearman −0.68 at T/4 on the demo task), so it favours fast decay."""
    from ray.tune.schedulers import ASHAScheduler

    outcomes: dict[int, list[Outcome]] = {}
    next_index = 0
    for steps in spec.budget_steps():
        study = open_rung_study(spec, steps)
        params = propose(spec, next_index, spec.num_trials, (), initial_points(spec))
        cands = [Candidate(next_index + j, p) for j, p in enumerate(params)]
        next_index += len(cands)
        eval_every = spec.train.for_budget(steps).eval_interval
        scheduler = ASHAScheduler(time_attr="step", max_t=steps,
                                  grace_period=max(eval_every, steps // 4), reduction_factor=2)
        name = f"asha-{steps}"
        trials = ask_rung(study, optuna_space(spec), cands, name)
        outs = run_candidates(spec, name, steps, [(c, spec.seed) for c in cands], trainable,
                              sink, scheduler=scheduler)
        tell_rung(study, trials, outs)
        outcomes[steps] = outs
    return outcomes


def _best_value(spec: StudySpec, outs: Sequence[Outcome]) -> float | None:
    keys = promote({o.candidate.index: o.value for o in outs}, 1, spec.mode)
    return next((o.value for o in outs if keys and o.candidate.index == keys[0]), None)


def best_schedule(spec: StudySpec, steps: int, params: dict[str, Any], value: float,
                  trial_id: str, std: float | None = None, seeds: Sequence[int] = ()
                  ) -> BestSchedule:
    """The recommended schedule with its LR curve (Eq. 5 over the ``steps`` updates)."""
    phi, phases = float(params[PHI]), int(params[PHASES])
    eta_max = float(params.get(LR, spec.train.lr))
    variant, eta_min = spec.search.variant, spec.train.eta_min
    warmup = warmup_steps(spec, params, steps)
    curve = create_schedule("uba", steps, phi=phi, phases=phases, eta_max=eta_max,
                            eta_min=eta_min, variant=variant, warmup_steps=warmup).values()
    return BestSchedule(schedule="uba", phi=phi, phases=phases, eta_max=eta_max, eta_min=eta_min,
                        variant=variant, total_steps=steps, metric=spec.metric, value=value,
                        trial_id=trial_id, lr_curve=[float(v) for v in curve], value_std=std,
                        n_seeds=max(1, len(seeds)), seeds=list(seeds) or [spec.seed],
                        warmup_steps=warmup)


def budget_result(spec: StudySpec, steps: int, outs: Sequence[Outcome],
                  finalists: Sequence[FinalistRow]) -> BudgetResult:
    """One requested budget: the best candidate trained to its horizon, or at the full budget
    the finalist with the best mean over seeds."""
    failed = sum(o.status == "error" for o in outs)
    best = None
    if finalists and finalists[0].mean is not None:
        f = finalists[0]
        match = next(o for o in outs if o.completed and o.candidate.index == f.candidate)
        best = best_schedule(spec, steps, match.candidate.params, f.mean, match.trial_id,
                             std=f.std, seeds=f.seeds)
    else:
        keys = promote({o.candidate.index: o.value for o in outs}, 1, spec.mode)
        if keys:
            o = next(o for o in outs if o.candidate.index == keys[0])
            assert o.value is not None
            best = best_schedule(spec, steps, o.candidate.params, o.value, o.trial_id)
    return BudgetResult(budget_steps=steps, fraction=steps / spec.total_steps,
                        num_trials=len(outs), num_failed=failed, best=best)


def _add_gaps(spec: StudySpec, steps: int, suggestions: list[dict[str, Any]],
              outs: Sequence[Outcome]) -> None:
    """Attach to each suggestion how far its φ's metric was from the best single run at
    ``steps`` (single runs on both sides, so the gap is not a seed-mean vs one seed)."""
    from tuning.phi_from_curvature import suggestion_gaps

    trials = [{"phi": float(o.candidate.params[PHI]), "step": o.trained_steps,
               "value": o.value} for o in outs if o.status != "error"]
    best_value = _best_value(spec, outs)
    if best_value is None:
        return
    gaps = suggestion_gaps(suggestions, steps, trials, best_value, spec.mode,
                           (spec.search.phi_min, spec.search.phi_max))
    for s, gap in zip(suggestions, gaps, strict=True):
        s.setdefault("gaps", []).append(gap)

