"""Library mode recorded in a real phitune server (``service.library.tune_schedule(...,
server=URL)``): the user's own loop (``tests/tuning/test_library.py``'s logistic regression on
digits) runs on a real local Ray in this process; a real API (``phitune serve``, with a token)
shows the study like any other: running, then succeeded, its trials, ``/best`` equal to the
local result's best, and ``phitune best ID`` printing it. A study whose function never reports
the metric ends failed there, with the reason, and the error is re-raised here. A study whose
process is ``kill -9``ed mid-trial stops heartbeating, and the server fails it after its
heartbeat timeout, where it stayed running as long as the process was alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from service.cli.demo import _stop, start_api
from service.cli.format import format_best
from service.cli.main import main as cli_main
from service.client import PhiTuneClient
from service.library import tune_schedule
from tests.tuning.test_library import load_digits, logreg, never_reports_the_metric
from tuning.study import StudyFailedError

pytestmark = pytest.mark.e2e

TOKEN = "library-e2e-token"
T = 30
KW = dict(budget_steps=T, optimizer_lr=0.1, budget_fractions=(0.5, 1.0), num_trials=2,
          finalist_seeds=0, seed=0, resources={"cpu": 1})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("library-api")
    api, url = start_api(tmp, None, tmp / "api.log", extra_env={
        "PHITUNE_API_TOKEN": TOKEN, "PHITUNE_RAY_DASHBOARD": "false"})
    try:
        yield url
    finally:
        _stop(api)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_library_study_shows_in_the_server_like_any_study(server, local_ray, tmp_path,
                                                           capsys) -> None:
    seen: dict[str, object] = {}

    def created(study) -> None:
        with PhiTuneClient(server, token=TOKEN) as c:
            listed = {s.id: s.status for s in c.list().data}
        seen.update(id=study.id, listed=listed.get(study.id), trainer=study.spec.trainer)

    result = tune_schedule(logreg, server=server, token=TOKEN, name="lib-e2e",
                           storage_path=str(tmp_path), on_created=created,
                           with_parameters={"data": load_digits()}, **KW)
    study_id = str(seen["id"])
    assert (seen["listed"], seen["trainer"]) == ("running", "library")
    assert result.best is not None
    with PhiTuneClient(server, token=TOKEN) as client:
        study = client.get(study_id)
        assert study.status == "succeeded" and study.error is None
        assert study.spec.budget.steps == T and study.spec.metric == "val_loss"
        assert {s.id: s.status for s in client.list().data}[study_id] == "succeeded"
        trials = client.trials(study_id)
        assert trials.count >= KW["num_trials"]
        assert {t.status for t in trials.data} == {"terminated"}
        assert {t.budget_steps for t in trials.data} == {T // 2, T}
        assert all("val_loss" in t.metrics for t in trials.data)
        best = client.best(study_id)
        assert best.model_dump() == result.best.to_dict()
        assert study.progress.best_value == pytest.approx(
            min(t.metrics["val_loss"] for t in trials.data if t.budget_steps == T))
        assert client.result(study_id).budgets[-1].budget_steps == T
    capsys.readouterr()
    assert cli_main(["--url", server, "--token", TOKEN, "best", study_id]) == 0
    out = capsys.readouterr().out
    assert format_best(best) in out


def test_a_failing_study_is_marked_failed_and_the_error_raised(server, local_ray,
                                                              tmp_path) -> None:
    ids: list[str] = []
    with pytest.raises(StudyFailedError, match="must carry the study's metric 'val_loss'"):
        tune_schedule(never_reports_the_metric, server=server, token=TOKEN, name="lib-fail",
                      storage_path=str(tmp_path), on_created=lambda s: ids.append(s.id),
                      **dict(KW, num_trials=1, budget_fractions=(1.0,)))
    with PhiTuneClient(server, token=TOKEN) as client:
        study = client.get(ids[0])
        assert study.status == "failed"
        assert study.error is not None and "StudyFailedError" in study.error
        assert "val_loss" in study.error
        assert {t.status for t in client.trials(ids[0]).data} == {"error"}


#: The user's process: a library study whose one trial trains (sleeps) far longer than the
#: server's heartbeat timeout without a report, so only the heartbeat keeps it running.
KILLED_USER = """
import sys, time
from pathlib import Path
from service.library import tune_schedule

url, token, marker, storage = sys.argv[1:5]

def trains_for_long(trial):
    Path(marker).touch()
    time.sleep(600)

tune_schedule(trains_for_long, server=url, token=token, name="lib-killed",
              heartbeat_s=0.5, storage_path=storage, budget_steps=10, optimizer_lr=0.1,
              budget_fractions=(1.0,), num_trials=1, finalist_seeds=0, seed=0,
              resources={"cpu": 1}, on_created=lambda s: print(s.id, flush=True))
"""


def test_a_killed_library_process_fails_its_study_after_the_heartbeat_timeout(tmp_path
                                                                              ) -> None:
    timeout = 3.0
    api, url = start_api(tmp_path, None, tmp_path / "api.log", extra_env={
        "PHITUNE_API_TOKEN": TOKEN, "PHITUNE_LOCAL_RAY": "per-study",
        "PHITUNE_RAY_DASHBOARD": "false", "PHITUNE_RECONCILE_INTERVAL_S": "0.5",
        "PHITUNE_LIBRARY_HEARTBEAT_TIMEOUT_S": str(timeout)})
    script, marker = tmp_path / "user.py", tmp_path / "training"
    script.write_text(KILLED_USER)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(tmp_path / "user.log", "wb") as log:
        user = subprocess.Popen(  # its own process group: kill -9 takes its local Ray along
            [sys.executable, str(script), url, TOKEN, str(marker), str(tmp_path / "ray")],
            stdout=subprocess.PIPE, stderr=log, text=True,
            cwd=Path(__file__).resolve().parents[2], env=env, start_new_session=True)
    try:
        study_id = (user.stdout.readline() if user.stdout else "").strip()
        assert study_id, (tmp_path / "user.log").read_text()[-3000:]
        deadline = time.monotonic() + 240
        while not marker.exists():  # the trial is training in a Ray worker
            assert user.poll() is None, (tmp_path / "user.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "user.log").read_text()[-3000:]
            time.sleep(0.2)
        with PhiTuneClient(url, token=TOKEN) as client:
            time.sleep(2 * timeout)  # no report for twice the timeout: the heartbeats hold
            alive = client.get(study_id)
            assert alive.status == "running", alive.error
            os.killpg(user.pid, signal.SIGKILL)
            user.wait()
            killed_at = time.monotonic()
            while (study := client.get(study_id)).status == "running":
                assert time.monotonic() - killed_at < 30, "still running 30 s after the kill"
                time.sleep(0.25)
            waited = time.monotonic() - killed_at
            assert study.status == "failed"
            assert study.error is not None
            assert study.error.startswith("library process stopped heartbeating at ")
            assert f"no heartbeat for {timeout:g} s" in study.error
            assert waited >= timeout - 1.0, waited  # not before its last beat is that old
            assert {t.status for t in client.trials(study_id).data} <= {"error"}
    finally:
        try:
            os.killpg(user.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        user.wait()
        _stop(api)
