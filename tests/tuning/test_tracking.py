"""Optional trackers on a real tiny study (real Ray, real training on digits): MLflow on a
local SQLite store read back with ``MlflowClient``, W&B in offline mode (its run directory appears
under the study's storage with the metrics). Each is skipped, saying so, when its package is not
installed (CI installs from the locks, which leave both out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import ray

from trainables.config import TrainConfig
from tuning.results import RecordingSink
from tuning.specs import SearchSpace, StudySpec, TrackingSpec
from tuning.study import run_study
from tuning.tracking import TrackerUnavailableError, mlflow_experiment_name, tracking_callbacks


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tiny(tmp_path, study_id: str, tracking: TrackingSpec) -> StudySpec:
    """One candidate, one rung of 16 steps: the smallest study that trains and reports."""
    return StudySpec(
        study_id=study_id, total_steps=16, num_trials=1, max_concurrent_trials=1,
        train=TrainConfig(model="mlp", dataset="digits", lr=0.2, batch_size=32, eval_every=8,
                          model_kwargs={"hidden_sizes": [16]}),
        search=SearchSpace(phi_min=0.5, phi_max=5, phases_min=1, phases_max=1),
        storage_path=str(tmp_path / "ray"), tracking=tracking)


def test_mlflow_gets_one_run_per_trial_with_its_metrics(local_ray, tmp_path) -> None:
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'phitune[mlflow]')")
    from mlflow.tracking import MlflowClient

    # MLflow 3 refuses a file: store unless MLFLOW_ALLOW_FILE_STORE=true; SQLite is its
    # recommended local backend, as offline as a folder
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_study(tiny(tmp_path, "mlflow-test", TrackingSpec(mlflow_tracking_uri=uri)),
                       RecordingSink())
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("phitune-mlflow-test")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["phitune.study_id"] == "mlflow-test"
    assert run.data.tags["phitune.experiment"] == "it0-rung0-16"
    assert run.data.metrics["val_accuracy"] == pytest.approx(result.best.value)
    assert run.data.metrics["step"] == 16
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert len(history) == 2, "one value per evaluation (steps 8 and 16)"
    assert float(run.data.params["trial/phi"]) == pytest.approx(result.best.phi)


def wandb_history(run_file: Path) -> list[dict[str, Any]]:
    """The logged history rows of an offline W&B run (``run-<id>.wandb``): a 7-byte header,
    then LevelDB-log records (32 KiB blocks; checksum, length, type, data) each holding one
    ``wandb_internal_pb2.Record``. wandb 0.31 ships no reader of its own."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, buf, rows = run_file.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B", data[:7]
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                             for i in record.history.item})
    return rows


def test_wandb_offline_writes_the_runs_beside_the_trials(local_ray, tmp_path,
                                                         monkeypatch) -> None:
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'phitune[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")  # what the service's driver env sets
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracking = TrackingSpec(wandb_project="phitune-test", wandb_mode="offline")
    result = run_study(tiny(tmp_path, "wandb-test", tracking), RecordingSink())
    wandb_dir = tmp_path / "ray" / "wandb"
    runs = sorted(wandb_dir.glob("offline-run-*/run-*.wandb"))
    debug = sorted(wandb_dir.rglob("debug*.log"))
    why = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")][:50], \
        [p.read_text()[-1500:] for p in debug]
    assert len(runs) == 1, why
    rows = [r for r in wandb_history(runs[0]) if "val_accuracy" in r]
    assert [r["step"] for r in rows] == [8, 16], ("one row per evaluation", rows, why)
    assert rows[-1]["val_accuracy"] == pytest.approx(result.best.value)


def test_a_configured_tracker_without_its_package_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "mlflow", None)  # as if not installed
    with pytest.raises(TrackerUnavailableError, match=r"mlflow is not installed.*phitune\[mlflow\]"):
        tracking_callbacks(TrackingSpec(mlflow_tracking_uri="file:/tmp/x"), "s", "it0")
    assert tracking_callbacks(TrackingSpec(), "s", "it0") == [], "off by default"
    assert mlflow_experiment_name(TrackingSpec(mlflow_experiment="mine"), "s") == "mine"
