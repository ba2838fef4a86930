"""Library mode: tune the schedule of *your own* training function on *your own* Ray.

>>> from tuning.library import tune_schedule
>>> def train_fn(trial):                       # runs inside a Ray Tune trial
...     opt = torch.optim.SGD(model.parameters(), lr=trial.lr)
...     sched = trial.scheduler(opt)
...     for step in range(1, trial.total_steps + 1):
...         ...; opt.step(); sched.step()
...     trial.report({"step": trial.total_steps, "val_loss": evaluate(model)})
>>> result = tune_schedule(train_fn, budget_steps=2000, optimizer_lr=0.1)  # doctest: +SKIP
>>> result.best.phi, result.best.lr_curve[:3]                               # doctest: +SKIP

The study is the same as a server study's (:func:`tuning.study.run_study`: the horizon
ladder, truthful Optuna records, the finalists' seed re-runs, tuned comparisons and a
:class:`~tuning.results.StudyResult`); only the trainable differs: the user's function, given
a :class:`trainables.function_trial.Trial`, runs as the Ray Tune function trainable in this
process's Ray (``ray.init(address=...)`` when Ray is not initialised yet). Nothing of the
user's code goes anywhere else (design.md, "Your own training code"). Recording in a phitune
server is a sink (``sink=``); :mod:`service.library` builds one from a URL.

What a built-in study does that this one does not: no model or dataset is known here, so
curvature measurement is off and the φ recommendation uses the budget features only (η_max,
T, batch size, optimizer); the schedule-free compare arm needs phitune to build the optimizer
and is refused.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import ray
from ray import tune

from trainables.config import TrainConfig, metric_mode
from trainables.function_trial import USER_FUNCTION, run_user_function
from tuning.arms import SCHEDULE_FREE, resolve_arm
from tuning.executor import RestoredRunMismatchError
from tuning.results import RecordingSink, StudyResult, StudySink
from tuning.specs import LadderSpec, Resources, SearchSpace, StudySpec
from tuning.study import run_study

__all__ = ["DEFAULT_STORAGE", "METRICS", "tune_schedule", "user_trainable"]

logger = logging.getLogger(__name__)

#: Metrics a study can optimise (the direction follows from the name: accuracy up, else down).
METRICS: tuple[str, ...] = ("val_loss", "val_accuracy", "val_perplexity")
#: Where the rungs' Tune experiments are kept when ``storage_path`` is not given.
DEFAULT_STORAGE = "~/phitune_results"
_SEARCH_FIELDS = tuple(f.name for f in fields(SearchSpace))


def user_trainable(train_fn: Callable[..., Any],
                   with_parameters: Mapping[str, Any] | None = None) -> Callable[[dict], None]:
    """The Ray Tune function trainable that runs ``train_fn(trial)`` on each trial config.

    ``train_fn`` may already be wrapped by ``ray.tune.with_parameters`` (it then receives the
    trial where it expected the config); ``with_parameters`` does that wrapping here: large
    objects go to Ray's object store once, not into every trial's config.
    """
    if with_parameters:
        def trainable(config: dict, **params: Any) -> None:
            run_user_function(train_fn, config, **params)

        trainable.__name__ = getattr(train_fn, "__name__", "train_fn")
        return tune.with_parameters(trainable, **dict(with_parameters))

    def plain(config: dict) -> None:
        run_user_function(train_fn, config)

    plain.__name__ = getattr(train_fn, "__name__", "train_fn")
    return plain


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _resources(value: Resources | Mapping[str, float] | None) -> Resources:
    if value is None:
        return Resources()
    if isinstance(value, Resources):
        return value
    unknown = sorted(set(value) - {"cpu", "gpu", "memory_mb"})
    if unknown:
        raise ValueError(f"resources: unknown key(s) {unknown}; valid: cpu, gpu, memory_mb")
    try:
        return Resources(**{k: float(v) for k, v in value.items()})
    except ValueError as exc:
        raise ValueError(f"resources: {exc}") from None


def build_spec(
    *, budget_steps: int, optimizer_lr: float, optimizer: str = "sgd",
    metric: str = "val_loss", mode: str | None = None,
    budget_fractions: Sequence[float] = (0.25, 0.5, 1.0), num_trials: int = 8,
    compare: Sequence[str] = (), seed: int = 0,
    resources: Resources | Mapping[str, float] | None = None,
    storage_path: str | None = None, name: str, max_concurrent_trials: int = 2,
    batch_size: int = 128, eval_every: int = 0, finalists: int | None = None,
    finalist_seeds: int = 2, seeds: int = 1,
    compare_tuning: Literal["ladder", "fixed"] = "ladder", max_failures: int = 1,
    max_failed_trials: int | None = None, ladder: LadderSpec | None = None,
    optuna_storage_url: str | None = None, **search: Any,
) -> StudySpec:
    """The :class:`StudySpec` of a library-mode study; ValueError names a bad argument."""
    budget_steps = _positive_int("budget_steps", budget_steps)
    num_trials = _positive_int("num_trials", num_trials)
    if isinstance(optimizer_lr, bool) or not isinstance(optimizer_lr, numbers.Real) or not (
            optimizer_lr > 0 and math.isfinite(optimizer_lr)):
        raise ValueError(f"optimizer_lr must be a finite number > 0, got {optimizer_lr!r}")
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw' (it picks the paper's default φ "
                         f"and the φ prior), got {optimizer!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if mode is not None and mode != metric_mode(metric):
        raise ValueError(f"mode={mode!r} contradicts metric {metric!r} (optimised "
                         f"{metric_mode(metric)}); leave mode unset")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(compare, str):
        compare = (compare,)
    for arm in compare:
        try:
            resolved = resolve_arm(arm)
        except ValueError as exc:
            raise ValueError(f"compare: {exc}") from None
        if resolved == SCHEDULE_FREE:
            raise ValueError("compare: 'schedulefree' needs phitune to build the optimizer; "
                             "library mode compares schedules only (your function builds it)")
    unknown = sorted(set(search) - set(_SEARCH_FIELDS))
    if unknown:
        raise TypeError(f"tune_schedule() got unknown argument(s) {unknown}; search settings "
                        f"are {', '.join(_SEARCH_FIELDS)}")
    train = TrainConfig(model=USER_FUNCTION, dataset=USER_FUNCTION, lr=float(optimizer_lr),
                        optimizer=optimizer, metric=metric, seed=int(seed),  # type: ignore[arg-type]
                        batch_size=batch_size, eval_every=eval_every)
    storage = Path(storage_path or DEFAULT_STORAGE).expanduser() / name
    return StudySpec(
        study_id=name, train=train, total_steps=budget_steps, search=SearchSpace(**search),
        budget_fractions=tuple(float(f) for f in budget_fractions), num_trials=num_trials,
        max_concurrent_trials=max_concurrent_trials, resources=_resources(resources),
        ladder=ladder or LadderSpec(), finalists=finalists, finalist_seeds=finalist_seeds,
        seed=int(seed), storage_path=str(storage), max_failures=max_failures,
        max_failed_trials=max_failed_trials, compare=tuple(compare), seeds=seeds,
        compare_tuning=compare_tuning, optuna_storage_url=optuna_storage_url)


def tune_schedule(
    train_fn: Callable[..., Any], *, budget_steps: int, optimizer_lr: float,
    optimizer: str = "sgd", metric: str = "val_loss", mode: str | None = None,
    budget_fractions: Sequence[float] = (0.25, 0.5, 1.0), num_trials: int = 8,
    compare: Sequence[str] = (), seed: int = 0,
    resources: Resources | Mapping[str, float] | None = None, address: str | None = None,
    storage_path: str | None = None, name: str | None = None,
    with_parameters: Mapping[str, Any] | None = None, sink: StudySink | None = None,
    **settings: Any,
) -> StudyResult:
    """Tune the UBA schedule (φ, phases, η_max) of ``train_fn`` for ``budget_steps`` updates.

    ``train_fn(trial)`` trains one run as told by its :class:`~trainables.function_trial.Trial`
    (``trial.total_steps``, ``trial.seed``, ``trial.lr``, ``trial.scheduler(optimizer)``) and
    ends with ``trial.report({"step": trial.total_steps, metric: value})``. It runs as a Ray
    Tune trial on this process's Ray: the one already initialised, else ``ray.init(address)``
    (None: a fresh local Ray, or the cluster ``RAY_ADDRESS`` names; ``"auto"``: the cluster
    ``ray start`` runs on this machine; ``"ray://host:10001"``: a remote one), shut down again
    at the end.

    The plan is the service's: every budget in ``budget_fractions`` of ``budget_steps`` is a
    rung of the horizon ladder (complete schedules from scratch), ``num_trials`` candidates
    enter at its lowest rung, finalists are re-trained with extra seeds, each arm of
    ``compare`` (``cosine``, ``rex``, ``wsd``, ``uba_default``, ...) is tuned by the same
    ladder and evaluated on the same seeds. Same arguments and ``seed`` → the same
    candidates.

    ``metric``: ``val_loss`` (default), ``val_accuracy`` or ``val_perplexity``; ``mode`` may be
    given but must agree. ``resources``: per trial, ``{"cpu": 1, "gpu": 0.5, "memory_mb": 0}``.
    ``with_parameters``: large objects (datasets) passed to ``train_fn(trial, **them)`` through
    Ray's object store (or pass a ``tune.with_parameters``-wrapped ``train_fn``).
    ``storage_path``/``name``: the rungs' Tune experiments live in
    ``storage_path/name/`` (default ``~/phitune_results/library-<time>``); calling again with
    the same ``name`` and arguments restores them: finished trials are reused, not retrained.
    ``sink``: receives every trial's progress and the result (a
    :class:`~tuning.results.StudySink`; :func:`service.library.tune_schedule` records into a
    phitune server). ``settings``: :class:`~tuning.specs.SearchSpace` fields (``phi_min``,
    ``phi_max``, ``phases_max``, ``eta_max_factors``, ``sampler``, ...) and the study's
    ``max_concurrent_trials``, ``batch_size`` (for the φ prior), ``eval_every``,
    ``finalists``, ``finalist_seeds``, ``seeds``, ``compare_tuning``, ``max_failures``,
    ``max_failed_trials``, ``ladder`` (:class:`~tuning.specs.LadderSpec`) and
    ``optuna_storage_url``.

    Raises ValueError naming the argument for bad input, and
    :class:`tuning.study.StudyFailedError` when no trial of a budget finished (the message
    carries the trials' reasons, e.g. a function that never reported the metric).
    """
    if not callable(train_fn):
        raise ValueError(f"train_fn must be callable, got {type(train_fn).__name__}")
    name = name or time.strftime("library-%Y%m%d-%H%M%S")
    spec = build_spec(budget_steps=budget_steps, optimizer_lr=optimizer_lr,
                      optimizer=optimizer, metric=metric, mode=mode,
                      budget_fractions=budget_fractions, num_trials=num_trials,
                      compare=compare, seed=seed, resources=resources,
                      storage_path=storage_path, name=name, **settings)
    started = False
    if not ray.is_initialized():
        # None: a fresh local Ray, unless Ray's own RAY_ADDRESS names one (a Ray Job's
        # driver); never whatever `ray start` head this machine last recorded (Ray's default
        # attaches to it, and waits forever for one that has died)
        if address is None and "RAY_ADDRESS" not in os.environ:
            address = "local"
        ray.init(address=address)
        started = True
    elif address is not None:
        logger.info("study %s: Ray is already initialised; address=%r not used", name, address)
    try:
        trainable = user_trainable(train_fn, with_parameters)
        logger.info("study %s: experiments under %s", name, spec.storage_path)
        return run_study(spec, sink if sink is not None else RecordingSink(),
                         trainable=trainable)
    except RestoredRunMismatchError as exc:
        # e.g. a rerun after trials failed: the later stages were planned from other results
        raise RestoredRunMismatchError(
            f"{exc}. name={name!r} holds runs of another plan under {spec.storage_path}: "
            "pass a new name (or remove that directory) to start this study afresh") from exc
    finally:
        if started:
            ray.shutdown()
