"""``max_failed_trials`` through the real experiment runner (``tuning.executor.run_configs``) on a
real local Ray: trials that fail are counted, the experiment stops past the limit (the
remaining trials never start) and the study ends with an error naming the field."""

from __future__ import annotations

import pytest
import ray
from ray import tune

from trainables.config import TrainConfig
from trainables.tune_trainable import TRIAL_KEY
from tuning.executor import run_configs
from tuning.failed_trials import FailedTrialsGuard, TooManyFailedTrialsError, guard_for
from tuning.results import RecordingSink
from tuning.specs import StudySpec

pytestmark = pytest.mark.slow  # one real Ray start (~30-60 s on the shared CI machine)


def crashing_trainable(config: dict) -> None:
    """Odd seeds crash (a stand-in for a trial whose model does not fit); even ones report."""
    seed = config[TRIAL_KEY]["seed"]
    if seed % 2 == 1:
        raise ValueError(f"trial with seed {seed} cannot run")
    tune.report({"step": 1, "val_accuracy": 0.5})


def test_experiment_stops_past_max_failed_trials(tmp_path) -> None:
    spec = StudySpec(study_id="failing", train=TrainConfig(model="mlp", dataset="digits"),
                     total_steps=10, method="asha", num_trials=8, max_concurrent_trials=1,
                     max_failures=0, max_failed_trials=1, storage_path=str(tmp_path / "ray"))
    configs = [({"candidate": i}, spec.train.for_budget(10, seed=i)) for i in range(1, 9)]
    sink = RecordingSink()
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(TooManyFailedTrialsError, match="max_failed_trials=1"):
            run_configs(spec, "exp", 10, configs, crashing_trainable, sink, "search")
    finally:
        ray.shutdown()
    errors = [r for r in sink.trials.values() if r.status == "error"]
    assert len(errors) == 2  # seeds 1 and 3; the limit is "more than 1"
    assert len(sink.trials) < len(configs)  # the rest never started
    assert guard_for("failing", 1).failed == 2


def test_guard_is_one_object_per_study_and_refuses_negative_limits() -> None:
    assert guard_for("a", None) is None
    assert guard_for("a", 2) is guard_for("a", 2)
    assert guard_for("b", 2) is not guard_for("a", 2)
    with pytest.raises(ValueError, match="max_failed_trials"):
        FailedTrialsGuard(-1)
    with pytest.raises(ValueError, match="max_failed_trials"):
        StudySpec(study_id="x", train=TrainConfig(model="mlp", dataset="digits"),
                  total_steps=10, method="asha", max_failed_trials=-2)
