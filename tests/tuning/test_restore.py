"""How a study's finished Tune experiments come back (a relaunched or extended driver): an
experiment that exists under the storage path is restored, its finished runs are not trained
again, and a restored run that differs from what the driver plans now is an error, never a
result paired with the wrong schedule. Real Ray, real training on digits."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import ray
from ray import tune

from trainables.config import TrainConfig
from trainables.tune_trainable import uba_trainable
from tuning.executor import RestoredRunMismatchError, run_candidates, run_configs
from tuning.ladder import Candidate
from tuning.results import RecordingSink
from tuning.specs import SearchSpace, StudySpec


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tiny_spec(study_id: str, tmp_path) -> StudySpec:
    """16 steps of a 16-unit MLP on digits, its experiments under ``tmp_path/ray``."""
    return StudySpec(
        study_id=study_id, total_steps=16, num_trials=1,
        train=TrainConfig(model="mlp", dataset="digits", lr=0.2, batch_size=32, eval_every=8,
                          model_kwargs={"hidden_sizes": [16]}),
        search=SearchSpace(phi_min=0.5, phi_max=5, phases_min=1, phases_max=1),
        storage_path=str(tmp_path / "ray"))


def test_a_finished_experiment_is_restored_not_retrained(local_ray, tmp_path) -> None:
    spec = tiny_spec("restore", tmp_path)
    runs = [(Candidate(0, {"phi": 1.0, "phases": 1}), 0)]
    first = run_candidates(spec, "it0-rung0-16", 16, runs, uba_trainable, RecordingSink())
    assert first[0].completed and first[0].trained_steps == 16
    (result_file,) = (tmp_path / "ray" / "it0-rung0-16").glob("*/result.json")
    written = result_file.read_bytes()  # a re-trained run would append new rows

    sink = RecordingSink()
    again = run_candidates(spec, "it0-rung0-16", 16, runs, uba_trainable, sink)
    assert (again[0].value, again[0].trial_id) == (first[0].value, first[0].trial_id)
    assert result_file.read_bytes() == written
    assert not sink.trials, "no trial started, reported or finished again"

    other = [(Candidate(0, {"phi": 3.0, "phases": 1}), 0)]  # another plan for candidate 0
    with pytest.raises(RestoredRunMismatchError, match="candidate 0 .* 'phi': 1.0"):
        run_candidates(spec, "it0-rung0-16", 16, other, uba_trainable, RecordingSink())


def test_an_experiment_killed_before_its_first_snapshot_starts_afresh(local_ray, tmp_path) -> None:
    # A driver killed between building the Tuner (tuner.pkl written) and Tune's first experiment
    # snapshot leaves a directory Tuner.can_restore accepts; Tuner.restore then ran one trial
    # with no config (a ConfigError, seen in CI). It must train the planned runs instead.
    spec = tiny_spec("unstarted", tmp_path)

    tune.Tuner(uba_trainable, run_config=tune.RunConfig(name="it0-rung0-16",
                                                        storage_path=spec.storage_path))
    assert tune.Tuner.can_restore(str(tmp_path / "ray" / "it0-rung0-16"))

    runs = [(Candidate(0, {"phi": 1.0, "phases": 1}), 0),
            (Candidate(1, {"phi": 3.0, "phases": 1}), 0)]
    sink = RecordingSink()
    outcomes = run_candidates(spec, "it0-rung0-16", 16, runs, uba_trainable, sink)
    assert [o.completed and o.trained_steps == 16 for o in outcomes] == [True, True]
    assert {r.status for r in sink.trials.values()} == {"terminated"}
    (aside,) = (tmp_path / "ray").glob("it0-rung0-16.unstarted-*")  # moved aside, not deleted
    assert (aside / "tuner.pkl").exists()


def _crash_once_trainable(marker: str):
    """A function trainable that checkpoints each of its 4 steps and, on its first run only,
    dies after step 3 (``marker`` records that the crash happened)."""
    def train(config: dict) -> None:
        start = 0
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                start = json.loads((Path(d) / "state.json").read_text())["step"]
        for step in range(start + 1, 5):
            with tempfile.TemporaryDirectory() as d:
                (Path(d) / "state.json").write_text(json.dumps({"step": step}))
                tune.report({"step": step, "val_loss": 1.0 / step, "resumed_at": start},
                            checkpoint=tune.Checkpoint.from_directory(d))
            if step == 3 and not os.path.exists(marker):
                Path(marker).write_text("crashed")
                raise RuntimeError("driver lost (simulated)")

    return train


def test_a_snapshot_naming_a_deleted_checkpoint_resumes_from_the_newest(local_ray,
                                                                       tmp_path) -> None:
    # CI's driver kill -9: with num_to_keep=1, saving checkpoint N deletes N-1 while the stored
    # experiment snapshot still names N-1; restore then failed the trial ("does not exist on
    # storage anymore"). Here: a trial errors after its third checkpoint, then the race is made
    # exact (the snapshot's checkpoint is gone, a newer one is on disk).
    spec = replace(tiny_spec("missing-ckpt", tmp_path), max_failures=0)
    train = _crash_once_trainable(str(tmp_path / "crashed"))
    first = run_configs(spec, "exp", 4, [({"candidate": 0}, spec.train)], train, RecordingSink(),
                        "search")
    assert first[0].error is not None
    (trial_dir,) = (Path(spec.storage_path) / "exp").glob("*_00000_*")
    (named,) = sorted(trial_dir.glob("checkpoint_*"))  # num_to_keep=1: the snapshot's one
    newer = named.with_name(f"checkpoint_{int(named.name.split('_')[1]) + 1:06d}")
    named.rename(newer)  # saved N+1 and deleted N, then died before the next snapshot

    again = run_configs(spec, "exp", 4, [({"candidate": 0}, spec.train)], train, RecordingSink(),
                        "search")
    result = again[0]
    assert result.error is None, result.error
    assert result.metrics["step"] == 4 and result.metrics["resumed_at"] == 3  # nothing twice
