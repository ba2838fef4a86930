"""The job lifecycle against real processes and a real store: reconcile, the queue, cancel,
driver identity and trial finalisation (store rows and Optuna trials). A finished child stands
in for a dead driver and ``sleep`` in its own session for a live one."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from datetime import timedelta

import pytest

from service.config import Settings
from service.launch.kinds import CURVATURE, JOB_MARKER, STUDY, DriverRef, JobKind, marker
from service.launch.lifecycle import cancel_job, reconcile, start_queued
from service.launch.runner import (
    LocalProcessRunner,
    is_driver,
    marked_pids,
    process_start,
    session_pids,
)
from service.store import Store, StudyRow, utcnow
from service.store.curvature_jobs import create_job


class RecordingRunner(LocalProcessRunner):
    """The real runner, except that a launch is recorded instead of starting a driver."""

    def __init__(self, settings: Settings, store: Store) -> None:
        super().__init__(settings, store)
        self.launched: list[str] = []

    def launch(self, kind: JobKind, job_id: str) -> str:
        self.launched.append(job_id)
        self.store.record_launch(job_id, pid=None, table=kind.table)
        return "recorded"


@dataclasses.dataclass(frozen=True)
class SleepKind(JobKind):
    """A study whose "driver" is ``sleep`` (plus a child), so launches cost nothing."""

    def entrypoint(self, python: str, job_id: str) -> list[str]:
        return ["bash", "-c", "sleep 60 & sleep 60 & wait"]


SLEEPING_STUDY = SleepKind("study", StudyRow, "-", "")


@pytest.fixture()
def env(tmp_path):
    settings = Settings(data_dir=tmp_path, max_concurrent_studies=4, cancel_grace_s=0.5)
    store = Store(settings.sqlalchemy_url)
    return store, RecordingRunner(settings, store), settings


def dead_pid() -> int:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    return proc.pid


def new_study(store: Store, status: str, pid: int | None, launches: int = 0,
              age_s: float = 3600, start: str | None = None) -> str:
    row, _ = store.create_study({"model": "mlp"}, status)
    then = utcnow() - timedelta(seconds=age_s)
    store.update_study(row.id, status=status, driver_pid=pid, launches=launches,
                       created_at=then, started_at=then if status != "queued" else None,
                       driver_start=start)
    return row.id


def test_reconcile_relaunches_dead_drivers_and_starts_the_queue_in_order(env):
    store, runner, settings = env
    live = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        dead_running = new_study(store, "running", dead_pid(), launches=1)
        alive = new_study(store, "running", live.pid, launches=1,
                          start=process_start(live.pid))
        # the pid is alive, but it is another process than the recorded driver: a reused pid
        reused = new_study(store, "running", live.pid, launches=1, start="other-boot:1")
        just_claimed = new_study(store, "running", None, age_s=1)  # its POST is launching it
        finished = new_study(store, "succeeded", dead_pid(), launches=1)
        exhausted = new_study(store, "running", dead_pid(), launches=3)
        queued = [new_study(store, "queued", None, age_s=100 - i) for i in range(3)]
        settings.logs_path.mkdir(parents=True, exist_ok=True)
        runner.log_path(STUDY, exhausted).write_text("line 1\nMemoryError: out of memory\n")

        relaunched = reconcile(store, runner, settings)

        # running after the relaunches: dead_running, alive, reused, just_claimed → 4 = cap
        assert sorted(relaunched) == sorted([dead_running, reused])
        assert store.get_study(dead_running).launches == 2
        for untouched in (alive, just_claimed, finished):
            assert untouched not in runner.launched
        gone = store.get_study(exhausted)
        assert gone.status == "failed" and "died 3 times" in gone.error
        assert "MemoryError: out of memory" in gone.error
        assert [store.get_study(q).status for q in queued] == ["queued"] * 3
        assert session_pids(live.pid), "a live driver is never touched"

        # two slots free up: the two oldest queued studies start, in submission order
        store.finish_study(dead_running, "succeeded")
        store.finish_study(reused, "failed")
        assert reconcile(store, runner, settings) == queued[:2]
        assert [store.get_study(q).status for q in queued] == ["running", "running", "queued"]
    finally:
        live.kill()
        live.wait()


def test_driver_identity_is_pid_plus_start_time():
    live = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        start = process_start(live.pid)
        assert start and start == process_start(live.pid)
        assert is_driver(DriverRef(pid=live.pid, start=start))
        assert is_driver(DriverRef(pid=live.pid))  # rows from before start times were kept
        assert not is_driver(DriverRef(pid=live.pid, start=start + "0"))
    finally:
        live.kill()
        live.wait()
    assert not is_driver(DriverRef(pid=live.pid, start=start))
    assert process_start(live.pid) is None


def test_cancel_kills_the_whole_session_after_the_grace_period(tmp_path):
    """A process that ignores SIGTERM (as a wedged Ray agent does) is SIGKILLed."""
    settings = Settings(data_dir=tmp_path, cancel_grace_s=0.5)
    store = Store(settings.sqlalchemy_url)
    runner = LocalProcessRunner(settings, store)
    # bash and its children ignore SIGTERM (SIG_IGN is inherited across exec)
    stubborn = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 60 & sleep 60 & wait"],
                                start_new_session=True)

    time.sleep(0.3)
    assert len(session_pids(stubborn.pid)) >= 2
    done: list[bool] = []
    runner.cancel(STUDY, "s", DriverRef(pid=stubborn.pid, start=process_start(stubborn.pid)),
                  after=lambda: done.append(True))
    deadline = time.monotonic() + 5
    while (session_pids(stubborn.pid) or not done) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not session_pids(stubborn.pid)
    assert done == [True], "the finaliser runs once the processes are gone"
    stubborn.wait(5)


def test_cancel_also_ends_marked_processes_outside_the_session(tmp_path):
    """A shared Ray head's workers of the job are not in the driver's session; they carry the
    job marker in their environment and end with the cancel all the same."""
    settings = Settings(data_dir=tmp_path, cancel_grace_s=0.3)
    store = Store(settings.sqlalchemy_url)
    runner = LocalProcessRunner(settings, store)
    job = marker(STUDY, "s1")
    worker = subprocess.Popen(["sleep", "60"], start_new_session=True,
                              env={**os.environ, JOB_MARKER: job})
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True,
                                 env={**os.environ, JOB_MARKER: marker(STUDY, "s10")})
    try:
        time.sleep(0.2)
        assert marked_pids(job) == [worker.pid]
        runner.cancel(STUDY, "s1", DriverRef())  # the driver had not recorded its pid yet
        worker.wait(5)
        assert bystander.poll() is None, "another job's process is not touched"
    finally:
        bystander.kill()
        bystander.wait()


def test_cancel_right_after_submit_leaves_no_process(tmp_path):
    """The cancel lands between the claim and the launch recording its driver: the launch
    sees the cancel after recording the pid and stops the driver it just started."""
    settings = Settings(data_dir=tmp_path, cancel_grace_s=0.3)
    store = Store(settings.sqlalchemy_url)
    runner = LocalProcessRunner(settings, store)
    sid = store.create_study({"model": "mlp"}, "race")[0].id
    assert store.claim_next(StudyRow, 1) == sid
    assert cancel_job(store, runner, settings, STUDY, sid)  # no driver known yet
    runner.launch(SLEEPING_STUDY, sid)  # the claimer's launch, a moment too late
    row = store.get_study(sid)
    assert row.status == "cancelled" and row.driver_pid
    deadline = time.monotonic() + 5
    while session_pids(row.driver_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not session_pids(row.driver_pid)
    assert not marked_pids(marker(STUDY, sid))


def test_queue_starts_both_kinds_and_cancel_frees_a_slot(tmp_path):
    settings = Settings(data_dir=tmp_path, max_concurrent_studies=1, cancel_grace_s=0.3)
    store = Store(settings.sqlalchemy_url)
    runner = RecordingRunner(settings, store)
    first, second = (store.create_study({"model": "mlp"}, n)[0].id for n in ("1", "2"))
    jobs = [create_job(store, {"model": "mlp"}).id for _ in range(2)]
    assert start_queued(store, runner, settings) == [first, jobs[0]]
    assert store.get_job(CURVATURE.table, jobs[1]).status == "queued"
    assert cancel_job(store, runner, settings, STUDY, first)
    assert store.get_study(second).status == "running", "the cancel started the next one"
    assert not cancel_job(store, runner, settings, STUDY, first), "already ended"
    assert cancel_job(store, runner, settings, CURVATURE, jobs[1])  # cancel while queued
    assert store.get_job(CURVATURE.table, jobs[1]).status == "cancelled"


def test_ended_study_has_no_running_trial_in_the_store_or_in_optuna(env):
    """What a killed driver leaves (a running store row, a RUNNING Optuna trial) is finalised
    by reconcile once the study has ended; a finished Optuna trial keeps its value."""
    import optuna

    store, runner, settings = env
    sid = new_study(store, "running", dead_pid(), launches=3)
    store.upsert_trial(sid, "t1", budget_steps=10, status="running", params={}, step=3,
                       metrics={})
    study = optuna.create_study(study_name=f"{sid}-budget-10", storage=settings.sqlalchemy_url,
                                direction="maximize")
    done = study.ask()
    study.tell(done, 0.5)
    study.ask()  # the trial the driver was running when it died
    other = optuna.create_study(study_name="someone-else", storage=settings.sqlalchemy_url)
    other.ask()

    reconcile(store, runner, settings)  # third death: failed, then finalised

    assert store.get_study(sid).status == "failed"
    assert [t.status for t in store.list_trials(sid)] == ["error"]
    states = [t.state for t in optuna.load_study(study_name=f"{sid}-budget-10",
                                                 storage=settings.sqlalchemy_url).trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert optuna.load_study(study_name="someone-else", storage=settings.sqlalchemy_url
                             ).trials[0].state == optuna.trial.TrialState.RUNNING


def test_a_failed_launch_requeues_then_fails_after_max_launches(tmp_path):
    class Unreachable(RecordingRunner):
        def launch(self, kind: JobKind, job_id: str) -> str:
            raise RuntimeError("No available agent to submit job, please try again later.")

    settings = Settings(data_dir=tmp_path, max_concurrent_studies=1, max_launches=2)
    store = Store(settings.sqlalchemy_url)
    runner = Unreachable(settings, store)
    sid = store.create_study({"model": "mlp"}, "x")[0].id
    assert start_queued(store, runner, settings) == []
    row = store.get_study(sid)
    assert (row.status, row.launches, row.started_at) == ("queued", 1, None), "back in line"
    assert start_queued(store, runner, settings) == []
    row = store.get_study(sid)
    assert row.status == "failed" and "launch failed 2 times" in row.error
    assert "No available agent" in row.error


def test_reconcile_relaunches_a_curvature_job_like_a_study(env):
    store, runner, settings = env
    job = create_job(store, {"model": "mlp"}).id
    assert store.claim_next(CURVATURE.table, 1) == job
    store.record_launch(job, pid=dead_pid(), table=CURVATURE.table)
    assert reconcile(store, runner, settings) == [job]
    row = store.get_job(CURVATURE.table, job)
    assert (row.status, row.launches) == ("running", 2)
    store.record_launch(job, pid=dead_pid(), table=CURVATURE.table)  # dies a third time
    settings.logs_path.mkdir(parents=True, exist_ok=True)
    runner.log_path(CURVATURE, job).write_text("RuntimeError: no GPU\n")
    assert reconcile(store, runner, settings) == []
    row = store.get_job(CURVATURE.table, job)
    assert row.status == "failed" and "no GPU" in row.error
