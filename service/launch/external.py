"""Agent mode on the driver side: the proxy trainable of a ``trainer: external`` study.

Why a proxy and not a second scheduler: each external trial is an ordinary Ray Tune trial of
the study's experiments, only its body does not train. It offers its trial file in the store
(:func:`service.store.external.offer_trial`), waits until an agent has leased, trained and
reported it, and ``tune.report``\\ s that result at ``step = total_steps``. So Ray keeps
everything it does for built-in trials: the ladder's rungs wait for all their trials,
``max_concurrent_trials`` bounds how many trials are offered at once, a restarted driver
restores the experiments (a trial whose result is stored reports it again at once, without
a new lease), ``max_failures`` retries a failed run (offered again), and the Optuna records
are the same as for a built-in trainable. A run the agent reports as failed fails the trial
with the agent's reason.

The trial config is the study's :class:`~trainables.config.TrainConfig` with the
:data:`~trainables.function_trial.USER_FUNCTION` marker as model and dataset (library mode's
marker: the user's code brings both); the proxy only reads the run's horizon, seed, metric
and schedule from it (:class:`~trainables.function_trial.Trial`), never a registry.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from service.schemas import TrialFile
from service.store import Store
from service.store.external import get_external_trial, offer_trial

logger = logging.getLogger(__name__)

#: Ray resources of one proxy trial: it only polls the store (the agents' machines train), so
#: it must not hold a CPU a built-in trial could use; concurrency is ``max_concurrent_trials``.
PROXY_RESOURCES = {"cpu": 0.05, "gpu": 0.0}


class ExternalTrialFailedError(RuntimeError):
    """The agent reported the run as failed (non-zero exit, no or a malformed result file);
    the message is the agent's reason. Plain ``args`` so it survives Ray's pickling."""


def trial_file(config: Mapping[str, Any], trial_id: str, study_id: str) -> TrialFile:
    """The trial file an agent trains from: horizon, seed, metric, the schedule's name and
    parameters and its absolute lr at every update (``tuning.schedules.create_schedule`` of
    the trial config, via :class:`~trainables.function_trial.Trial`)."""
    from trainables.config import metric_mode
    from trainables.function_trial import Trial

    trial = Trial(config)
    schedule = dict(trial.config)
    name = schedule.pop("schedule")
    schedule.pop("lr", None)
    schedule.pop("total_steps", None)
    return TrialFile(trial_id=trial_id, study_id=study_id, total_steps=trial.total_steps,
                     seed=trial.seed, metric=trial.metric, mode=metric_mode(trial.metric),
                     optimizer=trial.optimizer, lr=trial.lr, schedule=name,
                     schedule_params=schedule, lr_curve=trial.lr_curve, tags=trial.tags)


def external_trainable(store_url: str, study_id: str,
                       poll_s: float = 1.0) -> Callable[[dict[str, Any]], None]:
    """The Ray Tune function trainable of an external study: offer, wait, report (see the
    module docstring). Captures only the store URL, the study id and the poll period, so it
    pickles into Ray workers and the experiment state."""

    def external_trial(config: dict[str, Any]) -> None:
        from ray import tune

        trial_id = tune.get_context().get_trial_id()
        store = Store(store_url, migrate=False)
        try:
            payload = trial_file(config, trial_id, study_id)
            row = offer_trial(store, study_id, trial_id, payload.model_dump(mode="json"))
            logger.info("study %s: external trial %s offered (%d steps)", study_id, trial_id,
                        payload.total_steps)
            while row.status not in ("succeeded", "failed"):
                time.sleep(poll_s)
                current = get_external_trial(store, study_id, trial_id)
                if current is None:  # deleted under us: offer it again
                    current = offer_trial(store, study_id, trial_id,
                                          payload.model_dump(mode="json"))
                row = current
            if row.status == "failed":
                raise ExternalTrialFailedError(f"agent reported a failed run: {row.error}")
            metrics = {k: float(v) for k, v in (row.metrics or {}).items()
                       if isinstance(v, int | float) and math.isfinite(v) and k != "step"}
            tune.report({**metrics, "step": payload.total_steps})
        finally:
            store.engine.dispose()

    return external_trial
