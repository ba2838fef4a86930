"""The schedule-aware search engine: Optuna proposes, Ray Tune trains, Optuna records the truth.

Why not ``OptunaSearch`` + ASHA (the former default): a UBA schedule is a function of its
budget, so a run's intermediate metric ranks schedules backwards (design.md, "Search design"),
and OptunaSearch records a trial that a scheduler stopped as COMPLETE with its truncated
value. Here the pieces are used separately, each for what it is right for:

* **Optuna** (ask/tell) proposes candidates and keeps one study per horizon
  (``<study_id>-budget-<steps>``). A trial in that study is COMPLETE only when its run trained
  a whole schedule of exactly that horizon; a run stopped before (ASHA, only when asked) is
  PRUNED with its last value as an intermediate report, a failed or diverged run is FAIL.
  New candidates come from a transient study holding the COMPLETE trials of the highest rung
  with enough points (BOHB's rule), seeded per iteration.
* **Ray Tune** trains the candidates of one rung as one experiment (a grid over the asked
  configs, in parallel up to ``max_concurrent_trials``), restorable after a driver crash.
* **Determinism**: all candidates of a rung are asked before any result is told, samplers are
  seeded from the study seed, promotion ties break on the candidate index, search runs share
  the study seed (common random numbers: a paired comparison of schedules) and finalists'
  extra seeds are derived from it. Concurrency and timing cannot change what is trained.

The rung/promotion arithmetic lives in :mod:`tuning.ladder`; :mod:`tuning.study` drives it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from ray import tune

from trainables.config import PAPER_DEFAULT_PHI, TrainConfig
from trainables.tune_trainable import TRIAL_KEY
from tuning.failed_trials import guard_for
from tuning.results import StudySink, TrialKind, TrialRecord
from tuning.specs import StudySpec
from tuning.tracking import tracking_callbacks

logger = logging.getLogger(__name__)

#: Searched parameters (Optuna parameter names; ``lr`` is η_max).
PHI, PHASES, LR = "phi", "phases", "lr"
#: Searched warmup: a fraction of each run (SearchSpace.warmup_min/max).
WARMUP = "warmup"
#: A rung's model is fitted on the highest rung with at least this many COMPLETE trials.
MIN_MODEL_POINTS = 4
_METRIC_KEYS = ("train_loss", "val_loss", "val_accuracy", "val_perplexity", "lr", "samples_per_s")


# ----------------------------------------------------------------------------- space


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
    if s.searches_warmup:
        space[WARMUP] = optuna.distributions.FloatDistribution(s.warmup_min, s.warmup_max)
    return space


def warmup_steps(spec: StudySpec, params: Mapping[str, Any], steps: int) -> int:
    """Warmup steps of a run of ``steps`` updates: the candidate's (or the spec's fixed)
    fraction of it, leaving at least one step of the UBA curve."""
    frac = float(params.get(WARMUP, spec.search.warmup_min))
    return max(0, min(int(frac * steps), steps - 1))


def _clip_point(spec: StudySpec, cand: Mapping[str, Any]) -> dict[str, Any]:
    s = spec.search
    phi = float(cand.get(PHI, PAPER_DEFAULT_PHI[spec.train.optimizer]))
    point: dict[str, Any] = {
        PHI: min(max(phi, s.phi_min), s.phi_max),
        PHASES: int(min(max(int(cand.get(PHASES, s.phases_min)), s.phases_min), s.phases_max)),
    }
    if s.searches_eta_max:
        assert s.eta_max_min is not None and s.eta_max_max is not None
        lr = float(cand.get(LR, spec.train.lr))
        point[LR] = min(max(lr, s.eta_max_min), s.eta_max_max)
    if s.searches_warmup:
        w = float(cand.get(WARMUP, s.warmup_min))
        point[WARMUP] = min(max(w, s.warmup_min), s.warmup_max)
    return point


def _dedup(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out, seen = [], set()
    for p in points:
        key = tuple(round(float(v), 6) for v in p.values())
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def initial_points(spec: StudySpec, warm_start: Sequence[Mapping[str, Any]] = ()) -> list[dict]:
    """Points evaluated before any sampling: warm starts (e.g. curvature suggestions), the
    spec's extra points and the paper's default φ for the optimizer, clipped to the range
    (η_max, when searched, starts at the optimizer's lr). Duplicates are dropped."""
    cands = [*warm_start, *spec.extra_points, {PHI: PAPER_DEFAULT_PHI[spec.train.optimizer]}]
    return _dedup([_clip_point(spec, c) for c in cands])[: spec.num_trials]


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """``sampler="grid"``: the φ grid (the paper's ablation grid by default) clipped to the
    range, at ``phases_min`` phases and the optimizer's lr, in grid order."""
    return _dedup([_clip_point(spec, {PHI: phi}) for phi in spec.search.phi_grid])


def derive_seed(seed: int, *keys: object) -> int:
    """A seed derived from the study seed and a label (stable across runs and machines)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def make_sampler(spec: StudySpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The spec's Optuna sampler, seeded: TPE (≤ 4 random startup trials), GP (Optuna's
    GPSampler, needs scipy), or random. ``grid`` enumerates :func:`grid_points` itself and
    uses random sampling only once the grid is exhausted."""
    seed = spec.seed if seed is None else seed
    startup = min(4, spec.num_trials)
    name = spec.search.sampler
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.RandomSampler(seed=seed)


def optuna_study_name(spec: StudySpec, budget_steps: int) -> str:
    """Name of a horizon's Optuna study (what optuna-dashboard lists): every trial in it was
    trained (or stopped, then PRUNED) at ``budget_steps``."""
    return f"{spec.study_id}-budget-{budget_steps}"


def open_rung_study(spec: StudySpec, steps: int) -> optuna.Study:
    """The Optuna study of one horizon, in the RDB storage when the spec names one."""
    direction = "maximize" if spec.mode == "max" else "minimize"
    if spec.optuna_storage_url:
        storage = optuna.storages.RDBStorage(spec.optuna_storage_url)
        return optuna.create_study(storage=storage, study_name=optuna_study_name(spec, steps),
                                   direction=direction, load_if_exists=True)
    return optuna.create_study(direction=direction)


def propose(spec: StudySpec, iteration: int, n: int,
            model: Sequence[optuna.trial.FrozenTrial] = (),
            first: Sequence[dict[str, Any]] = (), skip: Sequence[dict[str, Any]] = ()
            ) -> list[dict[str, Any]]:
    """``n`` new candidates: ``first`` (initial points), then the grid or the sampler's
    proposals given the ``model`` trials (COMPLETE, one horizon; copied into a transient study
    seeded from the study seed and ``iteration``). All are asked before any is told; a model-based sampler is
    told a constant lie (the worst value seen) after each ask so a batch spreads out."""
    out = [dict(p) for p in first][:n]
    if spec.search.sampler == "grid":
        seen = {tuple(round(float(v), 6) for v in p.values()) for p in [*skip, *out]}
        for p in grid_points(spec):
            if len(out) < n and tuple(round(float(v), 6) for v in p.values()) not in seen:
                out.append(p)
    if len(out) >= n:
        return out
    space = optuna_space(spec)
    direction = "maximize" if spec.mode == "max" else "minimize"
    study = optuna.create_study(direction=direction,
                                sampler=make_sampler(spec, derive_seed(spec.seed, "propose",
                                                                       iteration)))
    study.add_trials([optuna.trial.create_trial(params=t.params, distributions=space,
                                                value=t.value)
                      for t in model if set(t.params) == set(space)])
    values = [t.value for t in study.trials if t.value is not None]
    lie = (min(values) if spec.mode == "max" else max(values)) if values else None
    for p in out:
        study.enqueue_trial(p)
        trial = study.ask(space)
        if lie is not None:
            study.tell(trial, lie)
    while len(out) < n:
        trial = study.ask(space)
        out.append(dict(trial.params))
        if lie is not None:
            study.tell(trial, lie)
    return out


def model_trials(rung_studies: Mapping[int, optuna.Study],
                 before_iteration: int) -> list[optuna.trial.FrozenTrial]:
    """COMPLETE trials of iterations before ``before_iteration`` at the highest horizon that has
    >= :data:`MIN_MODEL_POINTS` of them, else at the lowest horizon (BOHB's rule: model the
    most faithful fidelity that has data). Only earlier iterations count, so a restarted
    driver proposes exactly what the first one did."""

    def done(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        return [t for t in sorted(study.trials, key=lambda t: t.number)
                if t.state == optuna.trial.TrialState.COMPLETE
                and int(t.user_attrs.get("iteration", 0)) < before_iteration]

    for steps in sorted(rung_studies, reverse=True):
        trials = done(rung_studies[steps])
        if len(trials) >= MIN_MODEL_POINTS:
            return trials
    return done(rung_studies[min(rung_studies)]) if rung_studies else []


# ------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Candidate:
    """One point of the search, numbered in proposal order (the tie-break of promotion)."""

    index: int
    params: dict[str, Any]
    iteration: int = 0


@dataclass
class Outcome:
    """What one run of a candidate at one horizon produced."""

    candidate: Candidate
    steps: int  # the horizon it was meant to train
    seed: int
    trained_steps: int
    value: float | None  # the metric at ``steps`` when it got there, else None
    last_value: float | None
    status: str  # terminated | stopped_early | error
    trial_id: str = ""
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == "terminated" and self.value is not None


def candidate_config(spec: StudySpec, cand: Candidate, steps: int, seed: int) -> TrainConfig:
    """The trial config of a candidate at a horizon: the study template, budget, seed, φ,
    phases and η_max (when searched) set once, here."""
    params = {k: cand.params[k] for k in (PHI, PHASES, LR) if k in cand.params}
    warmup = warmup_steps(spec, cand.params, steps)
    if warmup:
        params["warmup_steps"] = warmup
    return spec.train.for_budget(steps, seed=seed).with_schedule(
        "uba", variant=spec.search.variant, eta_min=spec.train.eta_min, **params)


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
        keys = (PHI, PHASES, LR, "candidate") if self.kind == "search" else (
            "schedule", "arm", "optimizer", PHI, PHASES, LR, "seed", "candidate")
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
    if tune.Tuner.can_restore(path):
        logger.info("study %s: restoring budget %d (experiment %s) from %s", spec.study_id,
                    steps, name, path)
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
    configs = [({"candidate": c.index, "run_seed": seed}, candidate_config(spec, c, steps, seed))
               for c, seed in runs]
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
        trained = int(m.get("step", 0) or 0)
        last = m.get(spec.metric)
        last = float(last) if isinstance(last, int | float) and math.isfinite(last) else None
        if r.error is not None:
            status, value = "error", None
        elif trained >= steps:
            status, value = "terminated", last
        else:
            status, value = "stopped_early", None
        outcomes[key] = Outcome(  # type: ignore[index]
            candidate=wanted[key], steps=steps, seed=key[1], trained_steps=trained,  # type: ignore[index]
            value=value, last_value=last, status=status, trial_id=str(m.get("trial_id", "")),
            error=None if r.error is None else str(r.error).strip().splitlines()[-1][:300],
            metrics=dict(m))
    out = []
    for c, seed in runs:  # a trial Ray lost entirely is a failure, not a silent gap
        out.append(outcomes.get((c.index, seed)) or Outcome(
            candidate=c, steps=steps, seed=seed, trained_steps=0, value=None, last_value=None,
            status="error", error="no result recorded"))
    return out


def ask_rung(study: optuna.Study, spec: StudySpec, candidates: Sequence[Candidate],
             tag: str) -> list[optuna.trial.Trial]:
    """Ask the rung's Optuna study for every candidate (fixed params, before any tell), or find
    the trials a previous driver asked for them (a restarted study does not duplicate)."""
    space = optuna_space(spec)
    existing = {t.user_attrs.get("candidate"): t for t in study.trials
                if t.user_attrs.get("run") == tag}
    trials = []
    for c in candidates:
        old = existing.get(c.index)
        if old is not None and old.state == optuna.trial.TrialState.RUNNING:
            trials.append(optuna.trial.Trial(study, old._trial_id))
            continue
        if old is not None:
            trials.append(None)  # already told by the previous driver
            continue
        study.enqueue_trial({k: c.params[k] for k in space},
                            user_attrs={"candidate": c.index, "run": tag,
                                        "iteration": c.iteration})
        trials.append(study.ask(space))
    return trials


def tell_rung(study: optuna.Study, trials: Sequence[optuna.trial.Trial | None],
              outcomes: Sequence[Outcome]) -> None:
    """Tell each outcome truthfully: COMPLETE only for a run that reached its horizon, PRUNED
    (with its last value as an intermediate report) for one stopped early, FAIL otherwise."""
    for trial, o in zip(trials, outcomes, strict=True):
        if trial is None:
            continue
        trial.set_user_attr("trained_steps", o.trained_steps)
        if o.completed:
            study.tell(trial, o.value)
        elif o.status == "stopped_early":
            if o.last_value is not None:
                trial.report(o.last_value, o.trained_steps)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            if o.error:
                trial.set_user_attr("error", o.error)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
