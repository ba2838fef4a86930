"""Lifecycle against real processes: cancel within 10 s (no trial left running, in the store or
in Optuna), a cancel right after the POST (no process of the study left), kill -9 of the API
and of the driver mid-study (the study still completes, nothing finished is re-run), diverging
trials recorded with their reason. Cancel and driver kill run both with a per-study local Ray
and with the shared Ray head ``phitune serve`` starts. Real uvicorn, real driver, real Ray,
real training on digits."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from service.cli.demo import _stop, free_port, start_api
from service.client import PhiTuneClient
from service.launch.kinds import STUDY, marker
from service.launch.runner import kill_session, marked_pids, session_pids
from service.store import Store

pytestmark = pytest.mark.e2e

TOKEN = "lifecycle-test-token"
SPEC: dict[str, Any] = {
    "model": "mlp",
    "dataset": "digits",
    "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9},
    "batch_size": 64,
    "budget": {"steps": 120},
    "search": {"phi": {"min": 0.2, "max": 40.0}, "phases": {"min": 1, "max": 2}},
    "num_trials": 4,
    "max_concurrent_trials": 2,
    "eval_every": 30,
    "ladder": {"rungs": 1},  # one horizon: all 4 trials train the full budget (restore counts)
    "seed": 3,
}


class Api:
    """One API server process over a data dir; restartable (the data dir survives). ``ray``:
    ``per-study`` (each driver starts a local Ray) or ``shared`` (``phitune serve`` starts one
    head on its own ports; a restarted API attaches to it)."""

    def __init__(self, data_dir: Path, ray: str = "per-study") -> None:
        self.data_dir = data_dir
        self.ray = ray
        self.env = {"PHITUNE_RAY_NUM_CPUS": "2", "PHITUNE_RAY_DASHBOARD": "false",
                    "PHITUNE_API_TOKEN": TOKEN, "PHITUNE_RECONCILE_INTERVAL_S": "0",
                    "PHITUNE_CANCEL_GRACE_S": "4", "PHITUNE_LOCAL_RAY": ray,
                    "PHITUNE_DATASET_DIR": os.environ.get("PHITUNE_DATASET_DIR",
                                                          str(data_dir / "data"))}
        if ray == "shared":
            self.env.update(PHITUNE_RAY_HEAD_PORT=str(free_port()),
                            PHITUNE_RAY_HEAD_DASHBOARD_PORT=str(free_port()))
        self.proc, self.url = start_api(data_dir, None, data_dir / "api.log", extra_env=self.env)

    def client(self) -> PhiTuneClient:
        return PhiTuneClient(self.url, token=TOKEN)

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def restart(self) -> None:
        self.proc, self.url = start_api(self.data_dir, None, self.data_dir / "api.log",
                                        extra_env=self.env)

    def store(self) -> Store:
        return Store(f"sqlite:///{self.data_dir / 'phitune.db'}", migrate=False)

    def env_dashboard(self) -> str:
        return f"http://127.0.0.1:{self.env['PHITUNE_RAY_HEAD_DASHBOARD_PORT']}"


    def stop_head(self) -> None:
        sid = self.data_dir / "ray-head.sid"
        if sid.exists():
            kill_session(int(sid.read_text()))


@pytest.fixture(params=["per-study"])
def api(request, tmp_path):
    server = Api(tmp_path, ray=request.param)
    yield server
    _stop(server.proc)
    # never leave drivers or local Rays behind
    for row in server.store().list_studies(limit=100)[0]:
        if row.driver_pid:
            kill_session(row.driver_pid)
        for pid in marked_pids(marker(STUDY, row.id)):
            os.kill(pid, signal.SIGKILL)
    server.stop_head()


both_rays = pytest.mark.parametrize("api", ["per-study", "shared"], indirect=True)


def optuna_states(api: Api, study_id: str) -> list[str]:
    """States of every Optuna trial of the study (all its rungs/budgets)."""
    import optuna

    url = f"sqlite:///{api.data_dir / 'phitune.db'}"
    return [t.state.name for name in optuna.get_all_study_names(url)
            if name.startswith(study_id) for t in optuna.load_study(study_name=name,
                                                                    storage=url).trials]


def log_of(api: Api, study_id: str) -> str:
    path = api.data_dir / "logs" / f"{study_id}.log"
    return path.read_text()[-5000:] if path.exists() else "(no driver log)"


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@both_rays
def test_cancel_stops_driver_and_trials_within_10s(api):
    spec = {**SPEC, "budget": {"steps": 20_000}, "eval_every": 50}
    with api.client() as client:
        study = client.submit(spec)
        wait_for(lambda: client.get(study.id).progress.trials_running >= 1, 180,
                 "a running trial")
        pid = api.store().get_study(study.id).driver_pid
        job = marker(STUDY, study.id)
        if api.ray == "per-study":
            assert pid and len(session_pids(pid)) > 3, "driver + local Ray + trial workers"
        else:
            assert len(marked_pids(job)) >= 2, "driver + trial workers on the shared head"
            assert client.get(study.id).dashboard_url == api.env_dashboard()
        t0 = time.monotonic()
        cancelled = client.cancel(study.id)
        assert cancelled.status == "cancelled"
        assert cancelled.progress.trials_running == 0, "finalised in the response already"
        wait_for(lambda: not session_pids(pid) and not marked_pids(job), 10,
                 "driver, Ray and trials to exit", 0.1)
        elapsed = time.monotonic() - t0
        time.sleep(1)  # the cancel's finaliser runs once the processes are gone
        final = client.get(study.id)
        trials = client.trials(study.id).data
    assert elapsed < 10
    assert final.status == "cancelled" and final.error == "cancelled by user"
    assert trials, "trials recorded before the cancel are kept"
    assert not [t for t in trials if t.status in ("running", "pending")], trials
    assert any(t.status == "cancelled" for t in trials), trials
    states = optuna_states(api, study.id)
    assert states and "RUNNING" not in states, states
    # a late report from the dying driver must not resurrect it
    time.sleep(1)
    assert api.store().get_study(study.id).status == "cancelled"
    print(f"cancel ({api.ray} Ray): all processes gone {elapsed:.2f} s after DELETE; "
          f"Optuna trials {states}")


def test_cancel_right_after_submit_leaves_no_process(api):
    """The cancel races the driver's start (it may not have recorded its pid yet)."""
    with api.client() as client:
        study = client.submit(SPEC)
        client.cancel(study.id)
    job = marker(STUDY, study.id)
    wait_for(lambda: not marked_pids(job), 15, "every process of the study to exit", 0.1)
    time.sleep(3)  # a driver that slipped through would be starting Ray by now
    assert not marked_pids(job)
    row = api.store().get_study(study.id)
    assert row.status == "cancelled"
    assert not session_pids(row.driver_pid)
    assert not [t for t in api.store().list_trials(study.id) if t.status == "running"]


def test_api_kill9_mid_study_then_restart(api):
    with api.client() as client:
        study = client.submit(SPEC)
        wait_for(lambda: client.get(study.id).progress.trials_total >= 1, 180, "first trial")
    api.kill9()
    pid = api.store().get_study(study.id).driver_pid
    assert session_pids(pid), "the driver survives its API (own session)"
    api.restart()
    with api.client() as client:
        final = client.wait(study.id, timeout=400, poll=1.0)
        assert final.status == "succeeded", (final.error, log_of(api, study.id))
        assert client.best(study.id).total_steps == 120
    row = api.store().get_study(study.id)
    assert row.launches == 1 and row.driver_pid == pid, "a live driver is not relaunched"


#: one trial at a time, so that on a quiet machine (a trial of 120 digits steps takes about a
#: second) two trials are still to run when the driver is killed 1.5 s after the first ended
KILL_SPEC: dict[str, Any] = {**SPEC, "max_concurrent_trials": 1}


@both_rays
def test_driver_kill9_mid_study_resumes_without_rerunning(api):
    with api.client() as client:
        study = client.submit(KILL_SPEC)
    store = api.store()

    def some_finished() -> bool:
        trials = store.list_trials(study.id)
        return (any(t.status == "terminated" for t in trials)
                and any(t.status == "running" for t in trials))

    wait_for(some_finished, 300, "one finished and one running trial", 0.2)
    time.sleep(1.5)  # > TUNE_GLOBAL_CHECKPOINT_S: Tune has saved the experiment state
    pid = store.get_study(study.id).driver_pid
    before = {t.trial_id: (t.status, t.step, t.updated_at) for t in store.list_trials(study.id)}
    # per-study: the driver and its local Ray die together, like a node; shared head: the
    # driver dies and Ray ends its job's workers
    assert kill_session(pid) > 0
    wait_for(lambda: not session_pids(pid), 10, "driver session to die")
    assert store.get_study(study.id).status == "running"

    api.kill9()
    api.restart()  # reconcile: driver dead → relaunch → Tuner.restore
    with api.client() as client:
        final = client.wait(study.id, timeout=400, poll=1.0)
        assert final.status == "succeeded", (final.error, log_of(api, study.id))
        result = client.result(study.id)
    row = store.get_study(study.id)
    assert row.launches == 2 and row.driver_pid != pid
    log = (api.data_dir / "logs" / f"{study.id}.log").read_text()
    assert "restoring budget 120" in log, log[-3000:]

    after = {t.trial_id: (t.status, t.step, t.updated_at) for t in store.list_trials(study.id)}
    assert set(before) <= set(after), "no trial lost"
    assert len(after) == KILL_SPEC["num_trials"], f"no extra trial sampled: {sorted(after)}"
    finished_before = {k: v for k, v in before.items() if v[0] == "terminated"}
    assert finished_before
    for trial_id, state in finished_before.items():
        assert after[trial_id] == state, f"finished trial {trial_id} was re-run"
    assert result.budgets[0].num_trials == KILL_SPEC["num_trials"]
    assert "RUNNING" not in optuna_states(api, study.id)


def test_diverging_trials_are_errors_with_the_reason(api):
    # η_max searched in [1e3, 1e4]: the loss is NaN within 5 steps (DivergedError)
    spec = {**SPEC, "search": {"phi": {"min": 0.2, "max": 0.3}, "phases": {"min": 1, "max": 1},
                               "eta_max": {"min": 1e3, "max": 1e4}},
            "num_trials": 2, "budget": {"steps": 60}, "eval_every": 20}
    with api.client() as client:
        study = client.submit(spec)
        final = client.wait(study.id, timeout=300, poll=1.0)
        trials = client.trials(study.id).data
    assert final.status == "failed", log_of(api, study.id)
    assert "diverged" in (final.error or ""), final.error
    assert trials and all(t.status == "error" for t in trials), trials
    assert all("diverged" in (t.error or "") for t in trials), [t.error for t in trials]
