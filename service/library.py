"""Library mode, recorded in a phitune server: the study runs here, the server shows it.

>>> from service.library import tune_schedule
>>> result = tune_schedule(train_fn, budget_steps=2000, optimizer_lr=0.1,   # doctest: +SKIP
...                        server="http://127.0.0.1:8000", token="...")
>>> # phitune list / phitune best <id> / the dashboards show it like any study

:func:`tuning.library.tune_schedule` runs the study (the ladder, the Optuna records, the
finalists, the comparisons) with the user's function on the user's Ray. This module adds the
server: it creates a ``trainer: library`` study there (stored ``running``; the server runs no
driver for it and gives it no slot), records every trial through :class:`ServerSink` (a
:class:`tuning.results.StudySink`) and ends the study with the result, or with the error
before re-raising it. While the study runs, a thread heartbeats (:class:`Heartbeat`, every
``heartbeat_s``): a process killed with ``kill -9`` stops heartbeating, and the server fails
its study after ``PHITUNE_LIBRARY_HEARTBEAT_TIMEOUT_S`` instead of showing it running forever.
Nothing but records goes to the server, over HTTP with the client: the user's code and data
stay in this process and its Ray.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from service.client import Conflict, PhiTuneClient
from service.schemas import StudyCreate, StudyPublic
from tuning.library import build_spec
from tuning.library import tune_schedule as run_local
from tuning.results import StudyResult, TrialRecord

__all__ = ["Heartbeat", "ServerSink", "study_create", "tune_schedule"]

logger = logging.getLogger(__name__)


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float as None: JSON has no NaN (the server refuses
    it), and a diverged run's NaN means "no value" there."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


class ServerSink:
    """A :class:`tuning.results.StudySink` recording a library study in a phitune server:
    each trial event is a ``PUT .../trials/{trial_id}``, the result a ``:finish``.

    Trial events run in Ray Tune's callback hooks, so a failed call is logged, not raised
    (the run goes on; a later event of the same trial replaces the lost one). The result is
    sent by :func:`tune_schedule` after the run, where a failure must be seen: ``on_finish``
    only keeps it.
    """

    def __init__(self, client: PhiTuneClient | None, study_id: str) -> None:
        self.client = client
        self.study_id = study_id
        self.result: StudyResult | None = None
        self.failed_calls = 0

    def __getstate__(self) -> dict[str, Any]:
        """Ray Tune pickles its run config (our callback with it) into the experiment state:
        that copy is inert (no client, so no API token on disk and no socket to pickle); a
        restored run records through the sink of the call that restores it."""
        return {"client": None, "study_id": self.study_id, "result": None,
                "failed_calls": 0}

    def on_start(self, *, dashboard_url: str | None) -> None:
        logger.info("study %s: recording its trials in the server", self.study_id)

    def on_trial(self, record: TrialRecord) -> None:
        body = record.to_dict()
        trial_id = body.pop("trial_id")
        body["metrics"] = {k: float(v) for k, v in body["metrics"].items()
                           if isinstance(v, int | float) and math.isfinite(v)}
        body = finite_json(body)
        if self.client is None:
            return
        try:
            self.client.record_trial(self.study_id, trial_id, body)
        except Exception:  # noqa: BLE001 - a lost record must not stop the study
            self.failed_calls += 1
            logger.exception("study %s: recording trial %s failed", self.study_id, trial_id)

    def on_finish(self, result: StudyResult) -> None:
        self.result = result


#: Default seconds between a library process's heartbeats (the server's timeout, 120 s by
#: default, should be several times this).
HEARTBEAT_S = 30.0


class Heartbeat:
    """A daemon thread telling the server every ``interval_s`` that this process still runs
    library study ``study_id`` (``POST /v1/studies/{id}:heartbeat``), from :meth:`start`
    until :meth:`stop`.

    Why a thread: the study's own calls (trial records) come only when trials report, and a
    trial may train for longer than the server waits. A failed heartbeat (the server
    restarting, a network blip) is logged and retried at the next beat; a 409 (the study
    ended: cancelled, or failed after a silence longer than the server's timeout) stops the
    thread, and is kept in :attr:`ended` for :func:`tune_schedule`'s message."""

    def __init__(self, client: PhiTuneClient, study_id: str, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"heartbeat_s: must be > 0 seconds, got {interval_s}")
        self.client = client
        self.study_id = study_id
        self.interval_s = interval_s
        self.beats = 0
        self.ended: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"phitune-heartbeat-{study_id[:8]}")

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 30)

    def beat(self) -> bool:
        """One heartbeat; False once the study has ended (then the thread stops)."""
        try:
            answer = self.client.heartbeat_study(self.study_id)
        except Conflict as exc:
            self.ended = str(exc)
            logger.error("study %s: the server no longer takes this study's heartbeats "
                         "(%s); the run goes on here but its records are refused",
                         self.study_id, exc)
            return False
        except Exception:  # noqa: BLE001 - the next beat retries; the study goes on
            logger.warning("study %s: heartbeat failed; retrying in %g s", self.study_id,
                           self.interval_s, exc_info=True)
            return True
        if self.beats == 0 and self.interval_s > answer.timeout_s / 2:
            logger.warning("study %s: heartbeat every %g s, but the server fails a library "
                           "study silent for %g s (PHITUNE_LIBRARY_HEARTBEAT_TIMEOUT_S): one "
                           "late beat would fail it; pass a smaller heartbeat_s",
                           self.study_id, self.interval_s, answer.timeout_s)
        self.beats += 1
        return True

    def _run(self) -> None:
        while self.beat() and not self._stop.wait(self.interval_s):
            pass


def study_create(*, name: str, budget_steps: int, optimizer_lr: float,
                 optimizer: str = "sgd", metric: str = "val_loss",
                 budget_fractions: Sequence[float] = (0.25, 0.5, 1.0), num_trials: int = 8,
                 compare: Sequence[str] = (), seed: int = 0,
                 resources: Any = None, **settings: Any) -> StudyCreate:
    """The ``trainer: library`` :class:`StudyCreate` the server shows for a library study:
    the budget, optimizer, metric, search size, comparison and seeds as given (what the
    API's readers need: the metric picks the direction, the budget the full horizon).
    Settings without a field there (the search ranges, the ladder) stay in this process's
    :class:`tuning.specs.StudySpec`."""
    spec = build_spec(budget_steps=budget_steps, optimizer_lr=optimizer_lr,
                      optimizer=optimizer, metric=metric, budget_fractions=budget_fractions,
                      num_trials=num_trials, compare=compare, seed=seed,
                      resources=resources, name=name, **settings)
    return StudyCreate(
        trainer="library", name=name, optimizer={"name": spec.train.optimizer,
                                                 "lr": spec.train.lr},
        budget={"steps": spec.total_steps, "fractions": list(spec.budget_fractions)},
        metric=spec.metric, num_trials=spec.num_trials, compare=list(spec.compare),
        seed=spec.seed, seeds=spec.seeds, finalists=spec.finalists,
        finalist_seeds=spec.finalist_seeds, compare_tuning=spec.compare_tuning,
        max_concurrent_trials=spec.max_concurrent_trials,
        batch_size=spec.train.batch_size, max_failed_trials=spec.max_failed_trials,
        resources={"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
        **({"eval_every": spec.train.eval_every} if spec.train.eval_every >= 1 else {}))


def tune_schedule(train_fn: Callable[..., Any], *, server: str, token: str | None = None,
                  name: str | None = None, client: PhiTuneClient | None = None,
                  on_created: Callable[[StudyPublic], None] | None = None,
                  heartbeat_s: float = HEARTBEAT_S, **kwargs: Any) -> StudyResult:
    """:func:`tuning.library.tune_schedule` recorded in the phitune server at ``server``.

    Creates the study there (``token``: the server's API token, needed for every write),
    runs it here with a :class:`ServerSink`, and finishes it with the result, which the
    API's ``/result`` and ``/best``, ``phitune best ID`` and the dashboards then read. On an
    exception (bad arguments, a study whose trials all failed, Ctrl-C) the server study is
    marked failed with the error and the exception re-raised. ``on_created`` receives the
    created study (its ``id``) before anything trains. ``heartbeat_s``: seconds between the
    heartbeats that keep the study running in the server (:class:`Heartbeat`; the server
    fails it after ``PHITUNE_LIBRARY_HEARTBEAT_TIMEOUT_S`` without one). Other arguments are
    :func:`tuning.library.tune_schedule`'s; the result is the same :class:`StudyResult`.
    """
    import time

    name = name or time.strftime("library-%Y%m%d-%H%M%S")
    spec_kwargs = {k: v for k, v in kwargs.items()
                   if k not in ("address", "storage_path", "with_parameters", "sink", "mode")}
    spec = study_create(name=name, **spec_kwargs)  # ValueError before anything is created
    if not heartbeat_s > 0:
        raise ValueError(f"heartbeat_s: must be > 0 seconds, got {heartbeat_s}")
    if "sink" in kwargs:
        raise TypeError("tune_schedule(server=...) records through its own sink; pass "
                        "sink= to tuning.library.tune_schedule instead")
    own = client is None
    client = client or PhiTuneClient(server, token=token)
    try:
        study = client.submit(spec)
        if on_created is not None:
            on_created(study)
        logger.info("study %s: created in %s as %s", name, server, study.id)
        sink = ServerSink(client, study.id)
        heartbeat = Heartbeat(client, study.id, heartbeat_s).start()
        try:
            try:
                result = run_local(train_fn, name=name, sink=sink, **kwargs)
            except BaseException as exc:
                try:
                    client.finish_study(study.id,
                                        error=f"{type(exc).__name__}: {exc}"[:20_000])
                except Exception:  # noqa: BLE001 - the original error matters more
                    logger.exception("study %s: marking it failed in %s failed", study.id,
                                     server)
                raise
            client.finish_study(study.id, result=finite_json(result.to_dict()))
        finally:
            heartbeat.stop()
        return result
    finally:
        if own:
            client.close()
