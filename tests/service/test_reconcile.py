"""Reconcile: which studies the API relaunches, with real processes standing in for drivers
(a finished child = a dead driver, ``sleep`` in its own session = a live one)."""

from __future__ import annotations

import subprocess
import time
from datetime import timedelta

import pytest

from service.api.main import reconcile
from service.config import Settings
from service.launch.runner import LocalProcessRunner, session_pids
from service.store import Store, utcnow


class RecordingRunner(LocalProcessRunner):
    """The real runner, except that a launch is recorded instead of starting a driver."""

    def __init__(self, settings: Settings, store: Store) -> None:
        super().__init__(settings, store)
        self.launched: list[str] = []

    def launch(self, study_id: str) -> str:
        self.launched.append(study_id)
        self.store.record_launch(study_id, pid=None)
        return "recorded"


@pytest.fixture()
def env(tmp_path):
    settings = Settings(data_dir=tmp_path)
    store = Store(settings.sqlalchemy_url)
    return store, RecordingRunner(settings, store), settings


def dead_pid() -> int:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    return proc.pid


def new_study(store: Store, status: str, pid: int | None, launches: int = 0,
              age_s: float = 3600) -> str:
    row, _ = store.create_study({"model": "mlp"}, status)
    store.update_study(row.id, status=status, driver_pid=pid, launches=launches,
                       created_at=utcnow() - timedelta(seconds=age_s))
    return row.id


def test_reconcile_relaunches_only_dead_drivers(env, tmp_path):
    store, runner, settings = env
    live = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        dead_running = new_study(store, "running", dead_pid(), launches=1)
        dead_queued = new_study(store, "queued", dead_pid(), launches=1)
        alive = new_study(store, "running", live.pid, launches=1)
        just_accepted = new_study(store, "queued", None, age_s=1)  # its POST is launching it
        orphaned = new_study(store, "queued", None, age_s=3600)  # API died before launching
        finished = new_study(store, "succeeded", dead_pid(), launches=1)
        exhausted = new_study(store, "running", dead_pid(), launches=3)
        (settings.logs_path).mkdir(parents=True, exist_ok=True)
        runner.log_path(exhausted).write_text("line 1\nMemoryError: out of memory\n")

        relaunched = reconcile(store, runner, max_launches=3)

        assert sorted(relaunched) == sorted([dead_running, dead_queued, orphaned])
        assert sorted(runner.launched) == sorted(relaunched)
        assert store.get_study(dead_running).launches == 2
        for untouched in (alive, just_accepted, finished):
            assert untouched not in runner.launched
        gone = store.get_study(exhausted)
        assert gone.status == "failed" and "died 3 times" in gone.error
        assert "MemoryError: out of memory" in gone.error
        assert session_pids(live.pid), "a live driver is never touched"
    finally:
        live.kill()
        live.wait()


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
    runner.cancel("s", stubborn.pid)
    deadline = time.monotonic() + 5
    while session_pids(stubborn.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not session_pids(stubborn.pid)
    stubborn.wait(5)
