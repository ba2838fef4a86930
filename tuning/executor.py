"""How the search runs on Ray: one Ray Tune experiment per batch of complete schedules.

The proposer (:mod:`tuning.proposer`) decides *what* is tried and the ladder search
(:mod:`tuning.search`) *when*; this module only trains a batch of (candidate, seed) runs at one
horizon as one Tune experiment (a grid over the fixed configs, in parallel up to
``max_concurrent_trials``), forwards trial events to the study's sink, restores an experiment
a crashed driver left behind, and hands back one :class:`~tuning.ladder.Outcome` per run in
the order asked, whatever order Ray finished them in. :class:`RayExecutor` is the
:class:`~tuning.search.Executor` the study uses; the bench uses an in-process one.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ray import tune

from trainables.config import TrainConfig, trained_steps
from trainables.grad_norms import GRAD_NORMS
from trainables.tune_trainable import TRIAL_KEY
from tuning.arms import LR, PHASES, PHI, UBA, arm_config
from tuning.experiment_restore import repair_missing_checkpoints, restorable
from tuning.failed_trials import guard_for
from tuning.ladder import Candidate, Outcome
from tuning.proposer import warmup_steps
from tuning.results import StudySink, TrialKind, TrialRecord
from tuning.specs import StudySpec
from tuning.tracking import tracking_callbacks

logger = logging.getLogger(__name__)

_METRIC_KEYS = ("train_loss", "val_loss", "val_accuracy", "val_perplexity", "lr", "samples_per_s")


def candidate_config(spec: StudySpec, cand: Candidate, steps: int, seed: int) -> TrainConfig:
    """The trial config of a candidate at a horizon: the study template, budget and seed, then
    the candidate's arm config (:func:`tuning.arms.arm_config`); for UBA the φ, phases, η_max,
    the study's variant, η_min and the warmup of this horizon, set once, here."""
    base = spec.train.for_budget(steps, seed=seed)
    if cand.arm != UBA:
        return arm_config(cand.arm, base, cand.params)
    params: dict[str, Any] = {k: cand.params[k] for k in (PHI, PHASES, LR) if k in cand.params}
    params.update(variant=spec.search.variant, eta_min=spec.train.eta_min,
                  warmup_steps=warmup_steps(spec, cand.params, steps))
    return arm_config(UBA, base, params)


class SinkCallback(tune.Callback):
    """Forwards Ray Tune trial events of one experiment to a :class:`StudySink`."""

    def __init__(self, sink: StudySink, budget_steps: int, kind: TrialKind = "search") -> None:
        self.sink = sink
        self.budget_steps = budget_steps
        self.kind = kind

    def _record(self, trial: Any, status: str, error: str | None = None) -> TrialRecord:
        result = trial.last_result or {}
        metrics = {k: float(v) for k, v in result.items()
                   if k in _METRIC_KEYS and isinstance(v, int | float)}
        config = {**trial.config.get(TRIAL_KEY, trial.config), **trial.config}
        config.pop(TRIAL_KEY, None)
        keys = (PHI, PHASES, LR, "candidate", "stage", "arm") if self.kind == "search" else (
            "schedule", "arm", "optimizer", PHI, PHASES, LR, "seed", "candidate", "stage")
        params = {k: config[k] for k in keys if config.get(k) is not None}
        params["kind"] = self.kind
        norms = result.get(GRAD_NORMS) if status != "running" else None
        return TrialRecord(
            trial_id=trial.trial_id,
            budget_steps=self.budget_steps,
            status=status,  # type: ignore[arg-type]
            params=params,
            step=int(result.get("step", 0) or 0),
            metrics=metrics,
            error=error,
            node_ip=result.get("node_ip"),
            grad_norms=dict(norms) if isinstance(norms, dict) else None,
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


def run_configs(
    spec: StudySpec,
    name: str,
    steps: int,
    configs: Sequence[tuple[dict[str, Any], TrainConfig]],
    trainable: Callable[[dict], None],
    sink: StudySink,
    kind: TrialKind,
    scheduler: Any = None,
) -> tune.ResultGrid:
    """Train ``configs`` (bookkeeping tags, trial config) as one Ray Tune experiment ``name``.

    The configs cross the Ray boundary here, as dicts (``TrainConfig.to_dict``) in one grid,
    with the tags beside them. When the experiment already exists under the study's storage
    path (a restarted driver), it is restored: finished trials are kept, unfinished resumed.
    """
    storage = str(Path(spec.storage_path).absolute())
    path = os.path.join(storage, name)
    wrapped = tune.with_resources(trainable, spec.resources.as_ray())
    if restorable(path):
        logger.info("study %s: restoring budget %d (experiment %s) from %s", spec.study_id,
                    steps, name, path)
        repair_missing_checkpoints(path)
        tuner = tune.Tuner.restore(path, trainable=wrapped, resume_unfinished=True,
                                   resume_errored=True, param_space=None)
        return tuner.fit()
    grid = [{**tags, **cfg.to_dict()} for tags, cfg in configs]
    tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=spec.max_concurrent_trials)
    if scheduler is not None:
        tune_config = tune.TuneConfig(num_samples=1, metric=spec.metric, mode=spec.mode,
                                      scheduler=scheduler,
                                      max_concurrent_trials=spec.max_concurrent_trials)
    guard = guard_for(spec.study_id, spec.max_failed_trials)  # None: no limit
    tuner = tune.Tuner(
        wrapped,
        param_space={TRIAL_KEY: tune.grid_search(grid)},
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[SinkCallback(sink, steps, kind=kind), *([guard] if guard else []),
                       *tracking_callbacks(spec.tracking, spec.study_id, name, storage)],
            stop=guard,
            verbose=0,
        ),
    )
    results = tuner.fit()
    if guard is not None:
        guard.check()  # past max_failed_trials: the study ends failed, saying why
    return results


#: What a run trains beyond the study's model and data. A restored experiment whose runs differ
#: in these from what the driver plans now was planned from other inputs.
RUN_IDENTITY = ("schedule", "phi", "phases", "lr", "schedule_params", "seed", "total_steps")


class RestoredRunMismatchError(RuntimeError):
    """A restored experiment holds other runs than the driver planned for it (the spec, the
    warm-start source or the proposal code changed since it ran). Pairing its results with the
    new plan would report one schedule's value for another, so the study stops instead."""


def run_candidates(
    spec: StudySpec,
    name: str,
    steps: int,
    runs: Sequence[tuple[Candidate, int]],
    trainable: Callable[[dict], None],
    sink: StudySink,
    kind: TrialKind = "search",
    scheduler: Any = None,
) -> list[Outcome]:
    """Train each (candidate, seed) as a complete schedule of ``steps`` (one experiment) and
    return the outcomes in the order of ``runs`` (whatever order Ray finished them in)."""
    configs = [({"candidate": c.index, "run_seed": seed, "stage": c.stage,
                 **({"arm": c.arm} if c.arm != UBA else {})},
                candidate_config(spec, c, steps, seed)) for c, seed in runs]
    results = run_configs(spec, name, steps, configs, trainable, sink, kind, scheduler)
    wanted = {(c.index, seed): c for c, seed in runs}
    planned = {(tags["candidate"], tags["run_seed"]): cfg.to_dict() for tags, cfg in configs}
    outcomes: dict[tuple[int, int], Outcome] = {}
    for r in results:
        cfg = (r.config or {}).get(TRIAL_KEY, {})
        key = (cfg.get("candidate"), cfg.get("run_seed"))
        if key not in wanted:
            continue
        if any(cfg.get(k) != planned[key].get(k) for k in RUN_IDENTITY):  # type: ignore[index]
            raise RestoredRunMismatchError(
                f"experiment {name}: candidate {key[0]} (seed {key[1]}) was trained as "
                f"{ {k: cfg.get(k) for k in RUN_IDENTITY} }, the study now plans "
                f"{ {k: planned[key].get(k) for k in RUN_IDENTITY} }")  # type: ignore[index]
        m = r.metrics or {}
        position = int(m.get("step", 0) or 0)  # how far into the horizon it got
        last = m.get(spec.metric)
        last = float(last) if isinstance(last, int | float) and math.isfinite(last) else None
        if r.error is not None:
            status, value = "error", None
        elif position >= steps:
            status, value = "terminated", last
        else:
            status, value = "stopped_early", None
        outcomes[key] = Outcome(  # type: ignore[index]
            candidate=wanted[key], steps=steps, seed=key[1],  # type: ignore[index]
            trained_steps=trained_steps(m),
            value=value, last_value=last, status=status, trial_id=str(m.get("trial_id", "")),
            error=None if r.error is None else str(r.error).strip().splitlines()[-1][:300],
            metrics=dict(m))
    out = []
    for c, seed in runs:  # a trial Ray lost entirely is a failure, not a silent gap
        out.append(outcomes.get((c.index, seed)) or Outcome(
            candidate=c, steps=steps, seed=seed, trained_steps=0, value=None, last_value=None,
            status="error", error="no result recorded"))
    return out


class RayExecutor:
    """Trains batches as Ray Tune experiments (:func:`run_candidates`) with the study's
    trainable and sink: the executor of a study run by :func:`tuning.study.run_study`."""

    def __init__(self, spec: StudySpec, trainable: Callable[[dict], None],
                 sink: StudySink) -> None:
        self.spec, self.trainable, self.sink = spec, trainable, sink

    def run(self, name: str, steps: int, runs: Sequence[tuple[Candidate, int]],
            kind: TrialKind = "search") -> list[Outcome]:
        return run_candidates(self.spec, name, steps, runs, self.trainable, self.sink, kind)
