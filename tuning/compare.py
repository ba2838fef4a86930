"""The comparison: every arm tuned by the same ladder, evaluated on the same seeds, a winner named.

Why tune the peers: a comparison that trains cosine or schedule-free at the user's lr while UBA
is searched measures the user's lr guess, not the schedules (issue 20: on a held-out CNN case
the peers' best lr was 4× the user's). So by default (``compare_tuning="ladder"``) each compare
arm is tuned with the same plan as UBA — :func:`tuning.search.search_ladder` over its lr range
(:func:`tuning.arms.lr_factors`) and the robust finalist pick — and its compute is reported
per arm. Then every arm's pick (UBA's best schedule included) is trained from scratch on the
same evaluation seeds as one grid experiment (a paired comparison) and the best mean wins
(:func:`pick_winner`). ``compare_tuning="fixed"`` keeps the former comparison: arms at the
study's lr or the best of ``compare_eta_max``, rows labelled ``tuned=False``.

AutoLRS (:data:`tuning.arms.SELF_TUNING`) chooses its lr while it trains, so it is not tuned by
the ladder in either mode: each evaluation run searches [¼, 4]× (by default) around the study's lr
on its own, its row is ``tuned`` with ``tuning_units`` = the mean search compute of one run
(candidate steps beyond the budget) and ``params`` = the stages each seed chose (``runs``) and,
as a ``piecewise`` schedule, the stage lrs of its median seed (:func:`autolrs_schedule`), so
``row.to_scheduler(optimizer)`` replays them in a user's loop; the comparison's compute counts
every step it trained (``trained_steps_total``).
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray import tune

from trainables.config import TrainConfig
from trainables.config import trained_steps as steps_trained
from trainables.tune_trainable import TRIAL_KEY
from tuning.arms import (
    ALIASES,
    AUTOLRS,
    AUTOLRS_SETTINGS,
    LR,
    NORMS,
    SCHEDULE_FREE,
    SCHEDULE_FREE_WARMUP,
    SELF_TUNING,
    UBA,
    UBA_DEFAULT,
    arm_config,
    resolve_arm,
    resolve_baseline,
)
from tuning.executor import run_configs
from tuning.ladder import Outcome, compute_units
from tuning.results import BaselineRow, BestSchedule, FinalistRow, StudySink, Winner
from tuning.search import Executor, best_outcome, pick_finalists, search_ladder
from tuning.specs import StudySpec

__all__ = ["ALIASES", "SCHEDULE_FREE", "SCHEDULE_FREE_WARMUP", "UBA_DEFAULT", "ArmTuning",
           "autolrs_schedule", "pick_winner", "resolve_arm", "resolve_baseline",
           "run_comparison", "summarize", "trained_steps", "tune_arm", "uba_params"]


@dataclass
class ArmTuning:
    """One compare arm's ladder search: its runs by horizon, its finalists and the compute."""

    arm: str
    outcomes: dict[int, list[Outcome]]
    finalists: list[FinalistRow]
    extra: list[Outcome] = field(default_factory=list)

    @property
    def trained_steps(self) -> int:
        return (sum(o.trained_steps for outs in self.outcomes.values() for o in outs)
                + sum(o.trained_steps for o in self.extra))

    def pick(self, spec: StudySpec, steps: int) -> float | None:
        """The arm's lr at budget ``steps``: the winning finalist at the full budget, else the
        best run of that horizon (None: nothing finished)."""
        if steps == spec.total_steps and self.finalists and self.finalists[0].robust \
                and self.finalists[0].mean is not None:
            return self.finalists[0].eta_max
        best = best_outcome(spec, self.outcomes.get(steps, []))
        return float(best.candidate.params[LR]) if best is not None else None


def tune_arm(spec: StudySpec, arm: str, executor: Executor,
             arm_params: Mapping[str, Any] | None = None) -> ArmTuning:
    """Tune ``arm`` (a resolved compare arm, or a refined arm with its source norms in
    ``arm_params``) by the study's ladder and finalist pick."""
    outcomes = search_ladder(spec, executor, arm, arm_params=arm_params)
    finalists, extra = pick_finalists(spec, outcomes.get(spec.total_steps, []), executor, arm)
    return ArmTuning(arm=arm, outcomes=outcomes, finalists=finalists, extra=extra)


def uba_params(best: BestSchedule, steps: int) -> dict[str, Any]:
    """The arm parameters of the tuned UBA schedule at a run of ``steps`` updates (its warmup
    scaled to that run, as every horizon of the ladder warms up alike)."""
    params: dict[str, Any] = {"phi": best.phi, "phases": best.phases, LR: best.eta_max,
                              "variant": best.variant, "eta_min": best.eta_min}
    if best.warmup_steps:
        params["warmup_steps"] = min(steps - 1, round(best.warmup_steps * steps
                                                      / best.total_steps))
    return params


def run_comparison(
    spec: StudySpec,
    budget_steps: int,
    best: BestSchedule,
    baselines: Sequence[str],
    seeds: int,
    trainable: Callable[[dict], None],
    sink: StudySink,
    eta_max_grid: Sequence[float] = (),
    picks: Mapping[str, float] | None = None,
    refined: Mapping[str, Mapping[str, Any]] | None = None,
) -> tune.ResultGrid:
    """One grid experiment: (tuned UBA + each arm) × evaluation seeds. ``picks``: each tuned
    arm's lr (``compare_tuning="ladder"``); without them every baseline runs at the study's lr,
    or at each lr of ``eta_max_grid`` (the fixed comparison). ``refined``: refined arms
    (:data:`tuning.arms.REFINED_ARMS`) and their :func:`arm_config` params (source norms and
    the tuned lr), trained on the same seeds."""
    configs: list[tuple[dict[str, Any], TrainConfig]] = []
    for name, params in (refined or {}).items():
        for s in range(seeds):
            base = spec.train.for_budget(budget_steps, seed=spec.seed + s)
            configs.append(({"arm": name}, arm_config(name, base, params)))
    names = [UBA, *(resolve_arm(b) for b in baselines)]
    for name in dict.fromkeys(names):
        if name == UBA:
            lrs = [best.eta_max]
        elif name in SELF_TUNING:  # the centre of its own on-the-fly lr search
            lrs = [spec.train.lr]
        elif picks is not None:
            if picks.get(name) is None:
                continue  # the arm's tuning finished no run: reported as failed by summarize
            lrs = [picks[name]]
        else:
            lrs = list(eta_max_grid) or [spec.train.lr]
        for lr in lrs:
            for s in range(seeds):
                base = spec.train.for_budget(budget_steps, seed=spec.seed + s)
                params = uba_params(best, budget_steps) if name == UBA else {}
                params[LR] = lr
                if name == AUTOLRS:
                    params[AUTOLRS_SETTINGS] = spec.autolrs
                configs.append(({"arm": name}, arm_config(name, base, params)))
    # named by what it compares: an extended study whose best (or picks) changed runs a new
    # comparison instead of restoring the old one
    tuned = repr((best.phi, best.phases, best.eta_max, best.eta_min, best.variant,
                  best.warmup_steps, sorted((picks or {}).items()),
                  *([spec.autolrs] if AUTOLRS in names else []),
                  *([sorted((k, v[LR], hashlib.sha256(repr(v[NORMS]).encode()).hexdigest())
                            for k, v in refined.items())] if refined else [])))
    digest = hashlib.sha256(tuned.encode()).hexdigest()[:8]
    return run_configs(spec, f"compare-{budget_steps}-{digest}", budget_steps, configs,
                       trainable, sink, "compare")


def summarize(spec: StudySpec, budget_steps: int, results: tune.ResultGrid,
              tunings: Mapping[str, ArmTuning] | None = None,
              uba_units: float = 0.0, missing: Sequence[str] = ()) -> list[BaselineRow]:
    """Mean ± std of the final metric per arm (with ``tunings``: each arm's tuned pick; else
    the best η_max per baseline by mean), with the per-seed values for paired comparisons.
    ``missing``: tuned arms whose search finished no run (a row with the reason)."""
    groups: dict[tuple[str, float], dict[int, float]] = defaultdict(dict)
    own: dict[tuple[str, float], dict[int, dict[str, Any]]] = defaultdict(dict)  # self-tuning
    failures: dict[str, list[str]] = defaultdict(list)
    for r in results:
        cfg = r.config.get(TRIAL_KEY, r.config)
        name = cfg.get("arm") or cfg["schedule"]
        if r.error is not None:
            failures[name].append(str(r.error).strip().splitlines()[-1][:200])
            continue
        m = r.metrics or {}
        value = m.get(spec.metric)
        if int(m.get("step", 0)) >= budget_steps and value is not None and math.isfinite(value):
            groups[(name, float(cfg["lr"]))][int(cfg["seed"])] = float(value)
            if name in SELF_TUNING:
                own[(name, float(cfg["lr"]))][int(cfg["seed"])] = {
                    "trained_steps_total": steps_trained(m),
                    "stages": list(m.get("autolrs_stages") or [])}
    sign = 1 if spec.mode == "max" else -1
    def tuned(name: str) -> bool:  # tuned by the ladder, or tunes itself (UBA, AutoLRS)
        return (tunings is not None and name in tunings) or name == UBA or name in SELF_TUNING

    best_per_arm: dict[str, BaselineRow] = {}
    for (name, lr), by_seed in sorted(groups.items()):
        values = [by_seed[s] for s in sorted(by_seed)]
        units = uba_units if name == UBA else (
            compute_units(tunings[name].trained_steps, spec.total_steps)
            if tunings and name in tunings else 0.0)
        params: dict[str, Any] = {}
        runs = own.get((name, lr))
        if runs:  # its search is part of each run: the mean run's steps beyond the budget
            units = compute_units(statistics.fmean(
                r["trained_steps_total"] - budget_steps for r in runs.values()),
                spec.total_steps)
            params = {"runs": [{"seed": s, **runs[s]} for s in sorted(runs)]}
            if name == AUTOLRS:
                params.update(autolrs_schedule(budget_steps, by_seed, runs))
        row = BaselineRow(
            budget_steps=budget_steps, schedule=name, eta_max=lr, seeds=sorted(by_seed),
            values=values, n=len(values), mean=statistics.fmean(values),
            std=statistics.stdev(values) if len(values) > 1 else 0.0,
            tuned=tuned(name), tuning_units=units,
            params=params)
        old = best_per_arm.get(name)
        if old is None or sign * (row.mean or 0.0) > sign * (old.mean or 0.0):
            best_per_arm[name] = row
    for name in missing:
        failures[name].append("its tuning finished no run at this budget")
    for name, reasons in sorted(failures.items()):
        best_per_arm.setdefault(name, BaselineRow(budget_steps=budget_steps, schedule=name, n=0,
                                                  values=[], mean=None, std=None,
                                                  tuned=tuned(name)))
        best_per_arm[name].errors = reasons
    return sorted(best_per_arm.values(),
                  key=lambda r: (r.mean is None, -sign * (r.mean or 0.0), r.schedule))


def autolrs_schedule(budget_steps: int, values: Mapping[int, float],
                     runs: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """An AutoLRS row's schedule: the stage lrs of one representative run as a ``piecewise``
    schedule (``schedule``, ``total_steps``, ``eta_max``, ``boundaries``, ``factors``) and the
    run it replays (``from_seed``); ``{}`` when no run recorded stages.

    Why one run: AutoLRS chooses its lrs online, from the losses of the run it is training, so
    each seed chose its own stages and there is no one schedule of the arm; a fixed schedule
    can only replay one run's choices. The run is the seed whose final metric is the median
    of the seeds (the lower median, ``statistics.median_low``, when their number is even;
    ties by seed), so the replay is typical of the arm rather than its luckiest seed.

    Stage ``i`` trained 0-based steps ``start_i .. start_i + tau_i - 1`` at ``lr_i``, so the
    boundaries are the stage starts after the first; ``eta_max`` is the largest stage lr and
    each factor ``lr_i / eta_max``. Consecutive stages that kept the same lr are one segment.
    """
    ranked = sorted((v, s) for s, v in values.items() if runs.get(s, {}).get("stages"))
    if not ranked:
        return {}
    seed = ranked[(len(ranked) - 1) // 2][1]  # median_low of the values, ties by seed
    starts: list[int] = []
    lrs: list[float] = []
    for stage in sorted(runs[seed]["stages"], key=lambda st: int(st["start"])):
        lr = float(stage["lr"])
        if lrs and lr == lrs[-1]:
            continue  # the same lr as the stage before: one segment
        starts.append(int(stage["start"]))
        lrs.append(lr)
    peak = max(lrs)
    return {"schedule": "piecewise", "total_steps": budget_steps, "eta_max": peak,
            "boundaries": starts[1:] or None, "factors": [lr / peak for lr in lrs],
            "from_seed": seed}


def pick_winner(spec: StudySpec, budget_steps: int, rows: Sequence[BaselineRow]) -> Winner | None:
    """The arm with the best mean on the evaluation seeds at ``budget_steps`` (ties: UBA, then
    the name), with its paired margin over UBA on the seeds both finished."""
    sign = 1.0 if spec.mode == "max" else -1.0
    arms = [r for r in rows if r.budget_steps == budget_steps and r.mean is not None]
    uba = next((r for r in arms if r.schedule == UBA), None)
    if not arms:
        return None
    best = max(arms, key=lambda r: (sign * (r.mean or 0.0), r.schedule == UBA,
                                    [-ord(c) for c in r.schedule]))
    diffs: list[float] = []
    if uba is not None:
        mine = dict(zip(best.seeds, best.values, strict=True))
        theirs = dict(zip(uba.seeds, uba.values, strict=True))
        diffs = [sign * (mine[s] - theirs[s]) for s in sorted(set(mine) & set(theirs))]
    return Winner(
        budget_steps=budget_steps, arm=best.schedule, mean=best.mean, eta_max=best.eta_max,
        uba_mean=uba.mean if uba else None,
        margin=statistics.fmean(diffs) if diffs else 0.0,
        wins=sum(d > 0 for d in diffs), ties=sum(d == 0 for d in diffs),
        losses=sum(d < 0 for d in diffs), n=len(diffs), tuned=best.tuned,
        params=dict(best.params))


def trained_steps(results: tune.ResultGrid) -> int:
    """Optimizer steps a comparison trained: each trial's last report's ``step``, or its
    ``trained_steps_total`` where it trained more (AutoLRS's search)."""
    return sum(steps_trained(r.metrics or {}) for r in results)
