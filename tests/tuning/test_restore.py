"""How a study's finished Tune experiments come back (a relaunched or extended driver): an
experiment that exists under the storage path is restored, its finished runs are not trained
again, and a restored run that differs from what the driver plans now is an error, never a
result paired with the wrong schedule. Real Ray, real training on digits."""

from __future__ import annotations

import pytest
import ray

from trainables.config import TrainConfig
from trainables.tune_trainable import uba_trainable
from tuning.executor import RestoredRunMismatchError, run_candidates
from tuning.ladder import Candidate
from tuning.results import RecordingSink
from tuning.specs import SearchSpace, StudySpec


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_finished_experiment_is_restored_not_retrained(local_ray, tmp_path) -> None:
    spec = StudySpec(
        study_id="restore", total_steps=16, num_trials=1,
        train=TrainConfig(model="mlp", dataset="digits", lr=0.2, batch_size=32, eval_every=8,
                          model_kwargs={"hidden_sizes": [16]}),
        search=SearchSpace(phi_min=0.5, phi_max=5, phases_min=1, phases_max=1),
        storage_path=str(tmp_path / "ray"))
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
    spec = StudySpec(
        study_id="unstarted", total_steps=16, num_trials=1,
        train=TrainConfig(model="mlp", dataset="digits", lr=0.2, batch_size=32, eval_every=8,
                          model_kwargs={"hidden_sizes": [16]}),
        search=SearchSpace(phi_min=0.5, phi_max=5, phases_min=1, phases_max=1),
        storage_path=str(tmp_path / "ray"))
    from ray import tune

    tune.Tuner(uba_trainable, run_config=tune.RunConfig(name="it0-rung0-16",
                                                        storage_path=spec.storage_path))
    assert tune.Tuner.can_restore(str(tmp_path / "ray" / "it0-rung0-16"))

    runs = [(Candidate(0, {"phi": 1.0, "phases": 1}), 0), (Candidate(1, {"phi": 3.0, "phases": 1}), 0)]
    sink = RecordingSink()
    outcomes = run_candidates(spec, "it0-rung0-16", 16, runs, uba_trainable, sink)
    assert [o.completed and o.trained_steps == 16 for o in outcomes] == [True, True]
    assert {r.status for r in sink.trials.values()} == {"terminated"}
    (aside,) = (tmp_path / "ray").glob("it0-rung0-16.unstarted-*")  # moved aside, not deleted
    assert (aside / "tuner.pkl").exists()
