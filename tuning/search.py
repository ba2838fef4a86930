"""Build and run the Ray Tune search of one budget: OptunaSearch (TPE) over φ and phases, ASHA.

One budget = one Ray Tune experiment, because the UBA curve depends on T and ASHA must never
compare trials of different budgets at the same step. :mod:`tuning.study` loops over budgets.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from tuning.results import BestSchedule, BudgetResult, StudySink, TrialRecord
from tuning.schedules import create_schedule
from tuning.specs import PAPER_DEFAULT_PHI, StudySpec

logger = logging.getLogger(__name__)

#: Searched trial-config keys (Optuna parameters).
PHI, PHASES, LR = "phi", "phases", "lr"


def optuna_space(spec: StudySpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """φ log-uniform (it spans REX ≈ 0.8 to exponential ≈ 30), phases integer, η_max log-uniform."""
    s = spec.search
    space: dict[str, optuna.distributions.BaseDistribution] = {
        PHI: optuna.distributions.FloatDistribution(s.phi_min, s.phi_max, log=True),
        PHASES: optuna.distributions.IntDistribution(s.phases_min, s.phases_max),
    }
    if s.searches_eta_max:
        assert s.eta_max_min is not None and s.eta_max_max is not None
        space[LR] = optuna.distributions.FloatDistribution(s.eta_max_min, s.eta_max_max, log=True)
    return space


def initial_points(spec: StudySpec, warm_start: Sequence[dict[str, Any]] = ()) -> list[dict]:
    """Points Optuna evaluates before sampling: warm starts (e.g. the best of a smaller budget
    or curvature suggestions) and the paper's default φ for the optimizer, clipped to the range.

    Duplicates are dropped so a warm start equal to the paper default costs one trial, not two.
    """
    s = spec.search
    candidates = [*warm_start, *spec.extra_points, {PHI: PAPER_DEFAULT_PHI[spec.train.optimizer]}]
    points: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for cand in candidates:
        phi = float(cand.get(PHI, PAPER_DEFAULT_PHI[spec.train.optimizer]))
        point: dict[str, Any] = {
            PHI: min(max(phi, s.phi_min), s.phi_max),
            PHASES: int(min(max(int(cand.get(PHASES, s.phases_min)), s.phases_min), s.phases_max)),
        }
        if s.searches_eta_max:
            assert s.eta_max_min is not None and s.eta_max_max is not None
            lr = float(cand.get(LR, math.sqrt(s.eta_max_min * s.eta_max_max)))
            point[LR] = min(max(lr, s.eta_max_min), s.eta_max_max)
        key = tuple(round(float(v), 6) for v in point.values())
        if key not in seen:
            seen.add(key)
            points.append(point)
    return points[: spec.num_trials]


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """phitune's sampler: TPE, seeded; 4 random startup trials at most (the fixed starting
    points — warm starts, suggestions, paper default — come before those)."""
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(4, spec.num_trials))


def optuna_study_name(spec: StudySpec, budget_steps: int) -> str:
    """Name of a budget's Optuna study in the RDB storage (what optuna-dashboard lists)."""
    return f"{spec.study_id}-budget-{budget_steps}"


class SinkCallback(tune.Callback):
    """Forwards Ray Tune trial events of one budget to a :class:`StudySink`."""

    def __init__(self, sink: StudySink, budget_steps: int, kind: str = "search") -> None:
        self.sink = sink
        self.budget_steps = budget_steps
        self.kind = kind

    def _record(self, trial: Any, status: str, error: str | None = None) -> TrialRecord:
        result = trial.last_result or {}
        metrics = {
            k: float(v)
            for k, v in result.items()
            if k in ("train_loss", "val_loss", "val_accuracy", "val_perplexity", "lr",
                     "samples_per_s") and isinstance(v, int | float)
        }
        config = {**trial.config, **trial.config.get("arm_config", {})}
        keys = (PHI, PHASES, LR) if self.kind == "search" else (
            "schedule", "arm", PHI, PHASES, LR, "seed")
        params = {k: config[k] for k in keys if config.get(k) is not None}
        params["kind"] = self.kind
        return TrialRecord(
            trial_id=trial.trial_id,
            budget_steps=self.budget_steps,
            status=status,  # type: ignore[arg-type]
            params=params,
            step=int(result.get("step", 0) or 0),
            metrics=metrics,
            error=error,
            node_ip=result.get("node_ip"),
        )

    def _emit(self, record: TrialRecord) -> None:
        try:
            self.sink.on_trial(record)
        except Exception:  # a failing sink must not kill the experiment
            logger.exception("sink failed for trial %s", record.trial_id)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._emit(self._record(trial, "running"))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self._emit(self._record(trial, "running"))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        step = int((trial.last_result or {}).get("step", 0) or 0)
        status = "terminated" if step >= self.budget_steps else "stopped_early"
        self._emit(self._record(trial, status))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._emit(self._record(trial, "error", error=trial_error_text(trial)))


def trial_error_text(trial: Any) -> str:
    """The last line of a failed trial's traceback (the exception message), for the store."""
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        lines = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1].strip()[:2000]
    return "trial failed (no error file)"


def build_tuner(
    spec: StudySpec,
    budget_steps: int,
    trainable: Callable[[dict], None],
    sink: StudySink,
    warm_start: Sequence[dict[str, Any]] = (),
) -> tune.Tuner:
    """A Tuner for one budget, or the restored one when this budget's experiment already exists
    (a driver restarted mid-study resumes: finished trials are kept, the searcher state too)."""
    experiment = f"budget-{budget_steps}"
    storage = str(Path(spec.storage_path).absolute())
    path = os.path.join(storage, experiment)
    wrapped = tune.with_resources(trainable, spec.resources.as_ray())
    run_config = tune.RunConfig(
        name=experiment,
        storage_path=storage,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[SinkCallback(sink, budget_steps)],
        verbose=0,
    )
    if tune.Tuner.can_restore(path):
        logger.info("study %s: restoring budget %d from %s", spec.study_id, budget_steps, path)
        return tune.Tuner.restore(path, trainable=wrapped, resume_unfinished=True,
                                  resume_errored=True, param_space=None)

    storage = None
    if spec.optuna_storage_url:
        storage = optuna.storages.RDBStorage(spec.optuna_storage_url)
    searcher = OptunaSearch(
        space=optuna_space(spec),
        metric=spec.metric,
        mode=spec.mode,
        points_to_evaluate=initial_points(spec, warm_start),
        sampler=make_sampler(spec),
        study_name=optuna_study_name(spec, budget_steps) if storage is not None else None,
        storage=storage,
    )
    scheduler = None
    if spec.early_stopping:
        eval_every = spec.train.trial_config(budget_steps, spec.seed)["eval_every"]
        scheduler = ASHAScheduler(
            time_attr="step",
            max_t=budget_steps,
            grace_period=max(eval_every, budget_steps // 4),
            reduction_factor=2,
        )
    param_space = spec.train.trial_config(budget_steps, spec.seed)
    if spec.search.searches_eta_max:
        del param_space[LR]  # sampled by Optuna instead
    param_space["schedule_params"] = {"eta_min": spec.train.eta_min, "variant": spec.search.variant}
    return tune.Tuner(
        wrapped,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=spec.num_trials,
            max_concurrent_trials=spec.max_concurrent_trials,
        ),
        run_config=run_config,
    )


def best_of(spec: StudySpec, budget_steps: int, results: tune.ResultGrid) -> BudgetResult:
    """The best trial that trained for the *whole* budget (an ASHA-stopped trial's last metric
    is from an earlier step and not comparable), with its schedule and LR curve."""
    sign = 1.0 if spec.mode == "max" else -1.0
    best_value, best = -math.inf, None
    failed = 0
    for result in results:
        if result.error is not None:
            failed += 1
            continue
        metrics = result.metrics or {}
        value = metrics.get(spec.metric)
        if int(metrics.get("step", 0)) < budget_steps or value is None or not math.isfinite(value):
            continue
        if sign * value > best_value:
            best_value, best = sign * value, result
    schedule = None
    if best is not None:
        cfg = best.config
        sp = cfg.get("schedule_params", {})
        eta_min = float(sp.get("eta_min", 0.0))
        variant = str(sp.get("variant", "cyclic"))
        curve = create_schedule(
            "uba", budget_steps, phi=float(cfg[PHI]), phases=int(cfg[PHASES]),
            eta_max=float(cfg[LR]), eta_min=eta_min, variant=variant,
        ).values()
        schedule = BestSchedule(
            schedule="uba", phi=float(cfg[PHI]), phases=int(cfg[PHASES]), eta_max=float(cfg[LR]),
            eta_min=eta_min, variant=variant, total_steps=budget_steps, metric=spec.metric,
            value=float(best.metrics[spec.metric]), trial_id=str(best.metrics.get("trial_id", "")),
            lr_curve=[float(v) for v in curve],
        )
    fraction = budget_steps / spec.total_steps
    return BudgetResult(budget_steps=budget_steps, fraction=fraction, num_trials=len(results),
                        num_failed=failed, best=schedule)
