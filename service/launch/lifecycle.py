"""The job lifecycle shared by studies and curvature jobs: queue, start, cancel, reconcile.

``queued`` → ``running`` → ``succeeded | failed | cancelled``. A job is stored ``queued`` and
started in submission order while fewer than ``max_concurrent_studies`` of its kind run (the
database claims the slot atomically, :meth:`service.store.Store.claim_next`), so several API
replicas can share one store. The API calls :func:`start_queued` after each submit and cancel
and on a short timer, :func:`reconcile` at startup and on a longer one (Katib's controller loop,
in miniature).

A driver that stops (cancel, death, failure) must not leave a trial ``running``: its store
rows and its Optuna trials are finalised (:func:`finalize_stopped`), by the driver itself when
it can, by the cancel once the driver's processes are gone, and by :func:`reconcile` for
whatever a crash left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from service.config import Settings
from service.errors import TooManyStudiesError
from service.launch.kinds import KINDS, STUDY, DriverRef, JobKind, LaunchDeferred
from service.launch.runner import Runner
from service.schemas import TERMINAL_STATUSES
from service.store import (
    QueueFullError,
    QueueLimit,
    Store,
    StudyRow,
    is_library_study,
    utcnow,
)

logger = logging.getLogger(__name__)

#: A job claimed less than this long ago without a recorded driver is still being launched.
LAUNCH_WINDOW = timedelta(seconds=60)
#: Terminal studies whose Optuna trials reconcile re-checks (a dying driver may still have
#: asked for a trial after the cancel finalised the others).
OPTUNA_SWEEP_WINDOW = timedelta(minutes=10)
#: When this API process started: a library study's silence counts only from then (an API
#: that was down missed heartbeats the library process kept sending).
UP_SINCE = utcnow()


def queue_limit(settings: Settings) -> QueueLimit:
    """The queue bound a new job is stored under (:meth:`Store.enqueue`, atomic)."""
    return QueueLimit(max_running=settings.max_concurrent_studies,
                      max_queued=settings.max_queued_studies)


@contextmanager
def full_queue_is_429(kind: JobKind) -> Iterator[None]:
    """A submit the store refused (:class:`QueueFullError`) is the API's 429, which names the
    counts and the settings."""
    try:
        yield
    except QueueFullError as exc:
        raise TooManyStudiesError(exc.running, exc.queued,
                                  "studies" if kind is STUDY else "curvature jobs") from None


def start_queued(store: Store, runner: Runner, settings: Settings) -> list[str]:
    """Start queued jobs, oldest first, while slots are free; returns the ids started.

    Safe to call from any number of threads and API replicas at once: each start is a claim
    the database grants to one caller only.
    """
    started = []
    for kind in KINDS:
        if not store.count_status(kind.table, "queued"):
            continue  # a read, not the claim's write lock, when nothing waits
        while (job_id := store.claim_next(kind.table, settings.max_concurrent_studies)):
            try:
                runner.launch(kind, job_id)
            except LaunchDeferred as exc:
                store.requeue(kind.table, job_id, count=False)
                logger.warning("%s %s: launch deferred (%s)", kind.name, job_id, exc)
                break
            except Exception as exc:  # noqa: BLE001 - the job must not hold its slot forever
                # back to the queue for the next poll (a cluster that is still starting), up
                # to max_launches attempts; then failed with the reason
                attempts = store.requeue(kind.table, job_id)
                logger.exception("%s %s: launch %d failed", kind.name, job_id, attempts)
                if attempts >= settings.max_launches:
                    store.finish_job(kind.table, job_id, "failed", error=(
                        f"launch failed {attempts} times: {type(exc).__name__}: {exc}"))
                break
            logger.info("%s %s: started from the queue", kind.name, job_id)
            started.append(job_id)
    return started


def cancel_job(store: Store, runner: Runner, settings: Settings, kind: JobKind,
               job_id: str) -> bool:
    """Cancel a queued or running job; returns False when it had ended already.

    The row is marked first and the driver read after, so a launch that records its driver
    a moment later sees the cancel and stops it (:meth:`LocalProcessRunner.launch`). Trials
    are finalised now (the response shows none running) and again once the driver's
    processes are gone (a dying driver may still write a row or ask Optuna for a trial).
    """
    if not store.finish_job(kind.table, job_id, "cancelled", error="cancelled by user"):
        return False
    row = store.get_job(kind.table, job_id)
    if kind is STUDY:
        store.finalize_trials(job_id, "cancelled", "study cancelled")
    driver = DriverRef.of(row) if row is not None else DriverRef()
    runner.cancel(kind, job_id, driver,
                  after=lambda: finalize_stopped(store, settings, kind, job_id))
    start_queued(store, runner, settings)  # the slot is free now
    return True


def finalize_stopped(store: Store, settings: Settings, kind: JobKind, job_id: str,
                     *, optuna: bool = True) -> None:
    """Give the trials of a job that has ended their final state: store rows still
    ``running``/``pending`` become ``cancelled`` (a cancelled study) or ``error``, and Optuna
    trials still RUNNING become FAIL (their values are partial; TPE must not learn from
    them). Idempotent."""
    if kind is not STUDY:
        return
    row = store.get_study(job_id)
    if row is None or row.status not in TERMINAL_STATUSES:
        return
    if row.status == "cancelled":
        store.finalize_trials(job_id, "cancelled", "study cancelled")
    else:
        store.finalize_trials(job_id, "error", f"driver stopped (study {row.status})")
    if optuna and settings.optuna_in_store:
        failed = fail_running_optuna_trials(settings.sqlalchemy_url, [job_id])
        if failed:
            logger.info("study %s: %d Optuna trials RUNNING → FAIL", job_id, failed)


def fail_running_optuna_trials(url: str, study_ids: Iterable[str]) -> int:
    """Mark every RUNNING trial of these studies' Optuna studies (named ``<study id>`` or
    ``<study id>-...``) FAIL in the RDB storage at ``url``; returns how many.

    Only for studies that have ended: a running driver tells Optuna itself.
    """
    import optuna
    from optuna.trial import TrialState
    from sqlalchemy import create_engine, inspect

    wanted = set(study_ids)
    if not wanted:
        return 0
    engine = create_engine(url)
    try:
        if not {"studies", "trials"} <= set(inspect(engine).get_table_names()):
            return 0  # no Optuna study was ever stored here
    finally:
        engine.dispose()
    storage = optuna.storages.RDBStorage(url, skip_compatibility_check=True,
                                         skip_table_creation=True)
    count = 0
    try:
        for study in storage.get_all_studies():
            if study.study_name[:36] not in wanted:  # phitune study ids are uuid4 strings
                continue
            for trial in storage.get_all_trials(study._study_id, deepcopy=False,
                                                states=(TrialState.RUNNING,)):
                try:
                    storage.set_trial_system_attr(trial._trial_id, "phitune_stopped",
                                                  "the phitune study ended")
                    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                    count += 1
                except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                    pass  # finished meanwhile (the driver told it)
    finally:
        storage.engine.dispose()
    return count


def _driver_gone(store: Store, runner: Runner, kind: JobKind, row: Any,
                 max_launches: int) -> str | None:
    """A running job whose driver is gone: relaunch it (returns its id) or, after
    ``max_launches``, fail it with the end of its log."""
    driver = DriverRef.of(row)
    if runner.driver_alive(driver):
        return None
    if not driver.known and row.started_at is not None and \
            utcnow() - row.started_at < LAUNCH_WINDOW:
        return None  # just claimed: the request that claimed it is launching it
    current = store.get_job(kind.table, row.id)  # it may have moved on while we looked
    if current is None or current.status in TERMINAL_STATUSES:
        return None
    runner.cleanup(kind, row.id, driver)
    if (current.launches or 0) >= max_launches:
        tail = runner.log_tail(kind, row.id, driver).strip().splitlines()[-5:]
        store.finish_job(kind.table, row.id, "failed", error=(
            f"driver died {current.launches} times (max_launches); last log lines: "
            + " | ".join(tail)))
        logger.error("%s %s: driver died %d times, failed", kind.name, row.id,
                     current.launches)
        return None
    if kind is STUDY:
        # interrupted, not ended: the relaunched driver restores and resumes them
        store.finalize_trials(row.id, "pending", None)
    logger.warning("%s %s: driver %s is gone, relaunching", kind.name, row.id,
                   driver.job_id or driver.pid)
    runner.launch(kind, row.id)
    return row.id


def fail_silent_library_studies(store: Store, settings: Settings, *,
                                up_since: datetime | None = None,
                                now: datetime | None = None) -> list[str]:
    """Fail every running library study whose process has been silent (no heartbeat, no
    trial record) for ``library_heartbeat_timeout_s``: killed, or its machine lost; its trials
    still running end ``error``. Returns the ids failed.

    Silence counts only while this API has been up (``up_since``, this process's start by
    default): after a restart, a live process's next heartbeat arrives within its interval,
    so nothing is failed before the API has been up for the timeout. The failure itself is
    one conditional update: a heartbeat that lands first keeps the study running."""
    now = now or utcnow()
    timeout = timedelta(seconds=settings.library_heartbeat_timeout_s)
    cutoff = now - timeout
    if (up_since or UP_SINCE) > cutoff:
        return []
    failed = []
    for row in store.rows_with_status(StudyRow, "running"):
        if not is_library_study(row):
            continue
        last = row.heartbeat_at or row.started_at or row.created_at
        last = last if last.tzinfo else last.replace(tzinfo=UTC)  # SQLite keeps no zone
        if last >= cutoff:
            continue
        error = (f"library process stopped heartbeating at {last.isoformat()} (no heartbeat "
                 f"for {settings.library_heartbeat_timeout_s:g} s, "
                 "PHITUNE_LIBRARY_HEARTBEAT_TIMEOUT_S): the process running "
                 "service.library.tune_schedule was killed or lost its connection; its "
                 "trials were not reported")
        if store.fail_silent_library_study(row.id, cutoff, error):
            store.finalize_trials(row.id, "error", "library process stopped heartbeating")
            logger.error("study %s: library process silent since %s, failed", row.id,
                         last.isoformat())
            failed.append(row.id)
    return failed


def reconcile(store: Store, runner: Runner, settings: Settings) -> list[str]:
    """Bring every job in line with its driver after an API or driver died; returns the ids
    (re)launched.

    - ``running`` without a live driver: relaunch (the new driver restores the study's Tune
      experiments: finished trials are kept, the searcher resumes) or, after
      ``max_launches``, fail it with the end of its log.
    - ended jobs with trials still ``running`` (a driver killed mid-trial, an API that died
      during a cancel): finalise them, and their Optuna trials.
    - ``running`` library studies (the user's process runs them: no driver to watch or
      relaunch) whose process stopped heartbeating: failed
      (:func:`fail_silent_library_studies`).
    - ``queued``: start as many as there are free slots.
    """
    launched = []
    fail_silent_library_studies(store, settings)
    for kind in KINDS:
        for row in store.rows_with_status(kind.table, "running"):
            if is_library_study(row):
                continue  # the user's process runs it: no driver to watch or relaunch
            if (job_id := _driver_gone(store, runner, kind, row, settings.max_launches)):
                launched.append(job_id)
    ended = set(store.studies_with_unfinished_trials(tuple(TERMINAL_STATUSES)))
    for study_id in sorted(ended):
        finalize_stopped(store, settings, STUDY, study_id, optuna=False)
    if settings.optuna_in_store:
        ended |= set(store.recently_finished(StudyRow, utcnow() - OPTUNA_SWEEP_WINDOW))
        fail_running_optuna_trials(settings.sqlalchemy_url, ended)
    launched += start_queued(store, runner, settings)
    return launched
