"""Extending a finished study, as a user does it: a real server, a real driver, a real local
Ray, real training on digits; the study is extended with the CLI and followed with the client.

What an extension must show: the earlier iteration's Tune experiments are restored, not
re-trained (their trial files and store rows are untouched, the compute adds only the new
iteration's steps, and, where mlflow is installed, the MLflow runs the service's setting
logged are not logged again); the per-horizon Optuna studies hold the old trials unchanged
plus the new ones; the result is replaced and its best is at least as good as before.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from service.cli.demo import _stop, start_api
from service.client import AsyncPhiTuneClient, Conflict, PhiTuneClient

pytestmark = pytest.mark.e2e
HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None

#: Two rungs (16 and 32 steps, η = 2): 2 candidates at 16 steps, the better one at 32.
SPEC = {
    "name": "extend me",
    "model": "mlp",
    "model_kwargs": {"hidden_sizes": [16]},
    "dataset": "digits",
    "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9},
    "batch_size": 32,
    "budget": {"steps": 32},
    "eval_every": 8,
    "num_trials": 2,
    "ladder": {"eta": 2},
    "max_concurrent_trials": 2,
    "seed": 2,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("phitune")
    env = {"PHITUNE_RAY_NUM_CPUS": "2", "PHITUNE_RAY_DASHBOARD": "false",
           "PHITUNE_DATASET_DIR": os.environ.get("PHITUNE_DATASET_DIR", str(data_dir / "data"))}
    if HAS_MLFLOW:  # the service's MLflow setting, end to end (skipped where mlflow is absent)
        env["PHITUNE_MLFLOW_TRACKING_URI"] = f"sqlite:///{data_dir / 'mlflow.db'}"
    proc, url = start_api(data_dir, None, data_dir / "api.log", extra_env=env)
    yield url, data_dir
    _stop(proc)


def _log(data_dir: Path, study_id: str) -> str:
    path = data_dir / "logs" / f"{study_id}.log"
    return path.read_text() if path.exists() else "(no driver log)"


def _trial_files(results: Path) -> dict[str, bytes]:
    """Every trial's result file (one row per report), by path: a re-trained trial rewrites
    it with new timestamps."""
    return {str(p.relative_to(results)): p.read_bytes() for p in results.glob("*/*/result.json")}


def _optuna_trials(data_dir: Path, study_id: str, steps: int) -> list[tuple]:
    study = optuna.load_study(study_name=f"{study_id}-budget-{steps}",
                              storage=f"sqlite:///{data_dir / 'phitune.db'}")
    return [(t.number, t.state.name, t.params, t.value, t.user_attrs.get("iteration"))
            for t in study.trials]


def _mlflow_runs(data_dir: Path, study_id: str) -> dict[str, tuple]:
    """MLflow runs of the study (PHITUNE_MLFLOW_TRACKING_URI): id -> (status, end, metric)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{data_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"phitune-{study_id}")
    assert experiment is not None
    return {r.info.run_id: (r.info.status, r.info.end_time, r.data.metrics.get("val_accuracy"),
                            r.data.tags.get("phitune.experiment"))
            for r in client.search_runs([experiment.experiment_id])}


def test_extend_adds_an_iteration_without_retraining_the_first(server) -> None:
    url, data_dir = server
    with PhiTuneClient(url) as client:
        study = client.submit(SPEC)
        with pytest.raises(Conflict, match="only a succeeded study"):
            asyncio.run(_extend_async(url, study.id))  # not finished yet: 409
        done = client.wait(study.id, timeout=240, poll=0.5)
        assert done.status == "succeeded", (done.error, _log(data_dir, study.id))
        before = client.result(study.id)
        trials_before = {t.trial_id: t for t in client.trials(study.id).data}
    results = data_dir / "ray_results" / study.id
    files_before = _trial_files(results)
    top_before = _optuna_trials(data_dir, study.id, 32)
    low_before = _optuna_trials(data_dir, study.id, 16)
    assert len(files_before) == 3 and len(top_before) == 1 and len(low_before) == 2
    mlflow_before = _mlflow_runs(data_dir, study.id) if HAS_MLFLOW else {}
    if HAS_MLFLOW:
        assert len(mlflow_before) == 3, "one MLflow run per trial"

    out = subprocess.run([sys.executable, "-m", "service.cli", "--url", url, "extend",
                          study.id, "--iterations", "1", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    queued = json.loads(out.stdout)
    assert queued["status"] in ("queued", "running")
    assert queued["spec"]["ladder"]["iterations"] == 2 and queued["spec"]["num_trials"] == 4

    with PhiTuneClient(url) as client:
        final = client.wait(study.id, timeout=240, poll=0.5)
        assert final.status == "succeeded", (final.error, _log(data_dir, study.id))
        assert final.spec.ladder.iterations == 2 and final.spec.num_trials == 4
        after = client.result(study.id)
        trials_after = {t.trial_id: t for t in client.trials(study.id).data}

    # the first iteration was restored, not re-trained
    log = _log(data_dir, study.id)
    assert "restoring budget 16 (experiment it0-rung0-16)" in log
    assert "restoring budget 32 (experiment it0-rung1-32)" in log
    files_after = _trial_files(results)
    assert {k: files_after[k] for k in files_before} == files_before
    assert len(files_after) == 6, "one new iteration: 2 runs at 16 steps, 1 at 32"
    for tid, t in trials_before.items():
        assert trials_after[tid].updated_at == t.updated_at and \
            trials_after[tid].metrics == t.metrics, tid
    assert len(trials_after) == len(trials_before) + 3
    # compute counts both iterations: the old one's steps plus 2 × 16 + 32 new ones
    assert after.compute.search_steps == before.compute.search_steps + 2 * 16 + 32
    assert after.compute.steps == before.compute.steps + 2 * 16 + 32
    assert {r.steps: r.num_trials for r in after.rungs} == {16: 4, 32: 2}

    if HAS_MLFLOW:  # the restored runs were not logged again, the new ones were
        mlflow_after = _mlflow_runs(data_dir, study.id)
        assert {k: mlflow_after[k] for k in mlflow_before} == mlflow_before
        assert sorted(v[3] for k, v in mlflow_after.items() if k not in mlflow_before) == [
            "it1-rung0-16", "it1-rung0-16", "it1-rung1-32"]

    # the Optuna study of each horizon kept its trials and got the new ones
    top_after = _optuna_trials(data_dir, study.id, 32)
    low_after = _optuna_trials(data_dir, study.id, 16)
    assert top_after[:1] == top_before and len(top_after) == 2
    assert low_after[:2] == low_before and len(low_after) == 4
    assert [t[4] for t in low_after[2:]] == [1, 1]
    assert all(t[1] == "COMPLETE" for t in top_after + low_after)
    new_points = [t[2] for t in low_after[2:]]
    assert all(p not in [t[2] for t in low_before] for p in new_points), "new candidates"

    # the new result replaces the old: its best is over both iterations' full-budget runs
    assert after.best is not None and before.best is not None
    assert after.best.value >= before.best.value
    assert after.best.value == max(t[3] for t in top_after)


async def _extend_async(url: str, study_id: str) -> None:
    async with AsyncPhiTuneClient(url) as client:
        await client.extend(study_id, 1)


def test_a_warm_started_study_extends_from_the_same_first_points(server) -> None:
    """``warm_start_from`` keeps working through an extension: the extended driver re-plans
    the first iteration from the same warm-start points and restores it (a changed plan
    would fail the study with RestoredRunMismatchError instead)."""
    url, data_dir = server
    with PhiTuneClient(url) as client:
        source = next(s for s in client.list(status="succeeded").data if s.name == "extend me")
        study = client.submit({**SPEC, "name": "warm", "warm_start_from": source.id})
        done = client.wait(study.id, timeout=240, poll=0.5)
        assert done.status == "succeeded", (done.error, _log(data_dir, study.id))
        low_before = _optuna_trials(data_dir, study.id, 16)
        client.extend(study.id, 1)
        final = client.wait(study.id, timeout=240, poll=0.5)
        assert final.status == "succeeded", (final.error, _log(data_dir, study.id))
    assert "restoring budget 16 (experiment it0-rung0-16)" in _log(data_dir, study.id)
    low_after = _optuna_trials(data_dir, study.id, 16)
    assert low_after[:2] == low_before and len(low_after) == 4
    # the source's best full-budget schedule is among its first candidates (the warm start,
    # after the φ model's recommendation)
    with PhiTuneClient(url) as client:
        best = client.best(source.id)
    assert any(t[2]["phi"] == pytest.approx(best.phi) for t in low_before), (low_before, best)
