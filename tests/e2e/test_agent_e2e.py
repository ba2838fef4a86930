"""Agent mode end to end, as a user runs it: a real API server and driver on a real local Ray
plan an external study; two ``phitune agent`` processes train it with a plain PyTorch script
(``examples/agent_digits.py``, which imports nothing of phitune); one agent is ``kill -9``ed
mid-run. The study succeeds, the killed run is trained again under a second lease, and every
trial's result is counted exactly once: in the store's external trials, in the study's trials
and in the Optuna records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.cli.demo import _stop, start_api
from service.client import PhiTuneClient

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TRIALS = 3
STEPS = 40
SPEC = {
    "name": "e2e agents", "trainer": "external",
    "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9},
    "budget": {"steps": STEPS}, "metric": "val_loss", "num_trials": TRIALS,
    "max_concurrent_trials": 2, "eval_every": STEPS, "seed": 3,
    "search": {"phases": {"min": 1, "max": 1}},
}


def start_agent(url: str, study_id: str, name: str, log: Path, delay: float
                ) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", "--url", url, "agent", study_id, "--name",
             name, "--poll", "0.3", "--", sys.executable,
             str(REPO / "examples" / "agent_digits.py"), "--delay", str(delay)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)


def test_two_agents_one_killed_mid_run(tmp_path):
    from service.store import Store
    from service.store.external import list_external_trials, list_leases

    env = {"PHITUNE_RAY_NUM_CPUS": "2", "PHITUNE_RAY_DASHBOARD": "false",
           "PHITUNE_LEASE_TTL_S": "3", "PHITUNE_EXTERNAL_POLL_S": "0.2",
           "PHITUNE_DATASET_DIR": os.environ.get("PHITUNE_DATASET_DIR", str(tmp_path / "d"))}
    api, url = start_api(tmp_path, None, tmp_path / "api.log", extra_env=env)
    agents: list[subprocess.Popen] = []
    study = None
    try:
        with PhiTuneClient(url) as client:
            study = client.submit(SPEC)
            store = Store(f"sqlite:///{tmp_path / 'phitune.db'}", migrate=False)
            killed = start_agent(url, study.id, "a", tmp_path / "agent-a.log", delay=0.2)
            agents.append(killed)
            # agent a holds a lease and its run is under way: kill -9 it mid-run
            deadline = time.monotonic() + 240
            while not any(le.holder.endswith("/a") for le in list_leases(store, study.id)):
                assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()[-3000:]
                assert killed.poll() is None, (tmp_path / "agent-a.log").read_text()
                time.sleep(0.2)
            survivor = start_agent(url, study.id, "b", tmp_path / "agent-b.log", delay=0.0)
            agents.append(survivor)
            time.sleep(2.0)  # torch import + a few of its 40 updates (0.2 s each)
            (lost,) = [le for le in list_leases(store, study.id) if le.holder.endswith("/a")]
            os.kill(killed.pid, signal.SIGKILL)
            killed.wait()

            final = client.wait(study.id, timeout=420, poll=1.0)
            logs = "\n".join((tmp_path / f).read_text()[-3000:] for f in (
                "agent-a.log", "agent-b.log")) + driver_log(tmp_path, study.id)
            assert final.status == "succeeded", (final.error, logs)
            assert survivor.wait(timeout=60) == 0, logs  # it stops by itself: the study ended
            trials = client.trials(study.id).data
            result = client.result(study.id)

        externals = list_external_trials(store, study.id)
        leases = list_leases(store, study.id)
        store.engine.dispose()
    finally:
        for proc in agents:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if study is not None:  # a failed run must not leave its driver waiting for agents
            with PhiTuneClient(url) as client:
                if client.get(study.id).status in ("queued", "running"):
                    client.cancel(study.id)
        _stop(api)

    # the killed run was never reported by a, and trained again under a second lease by b
    assert lost.attempt == 1
    again = [le for le in leases if le.trial_id == lost.trial_id]
    assert [le.attempt for le in again] == [1, 2] and again[1].holder.endswith("/b"), leases
    # every trial trained and counted once: store, the study's trials, the result
    assert len(externals) == TRIALS and {e.status for e in externals} == {"succeeded"}
    assert len({e.trial_id for e in externals}) == TRIALS
    assert len(leases) == TRIALS + 1  # one extra: the killed run's second lease
    by_id = {t.trial_id: t for t in trials}
    assert set(by_id) == {e.trial_id for e in externals}
    for e in externals:
        t = by_id[e.trial_id]
        assert t.status == "terminated" and t.step == STEPS
        assert t.metrics["val_loss"] == pytest.approx(e.metrics["val_loss"])
        assert e.payload["total_steps"] == STEPS and len(e.payload["lr_curve"]) == STEPS
    (budget,) = result.budgets
    assert budget.num_trials == TRIALS and budget.num_failed == 0
    assert budget.best is not None and budget.best.value == pytest.approx(
        min(e.metrics["val_loss"] for e in externals))
    # the Optuna records: one COMPLETE trial per run, none twice
    import optuna

    storage = f"sqlite:///{tmp_path / 'phitune.db'}"
    summaries = [s for s in optuna.get_all_study_summaries(storage)
                 if s.study_name.startswith(study.id)]
    assert summaries, "the study's Optuna records are in the store"
    states = [t.state.name for s in summaries
              for t in optuna.load_study(study_name=s.study_name, storage=storage).trials]
    assert states.count("COMPLETE") == TRIALS and len(states) == TRIALS, states


def driver_log(data_dir: Path, study_id: str) -> str:
    path = data_dir / "logs" / f"{study_id}.log"
    return path.read_text()[-4000:] if path.exists() else "(no driver log)"
