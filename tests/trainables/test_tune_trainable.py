"""uba_trainable through a real Ray Tune Tuner: metrics, checkpoints, errors, failure resume."""

from __future__ import annotations

import pytest
import torch

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from trainables.loop import run_training  # noqa: E402
from trainables.tune_trainable import (  # noqa: E402
    load_state,
    restored_state,
    tune_report,
    uba_trainable,
)

CONFIG = {
    "model": "mlp",
    "model_kwargs": {"hidden_sizes": [16]},
    "dataset": "digits",
    "optimizer": "sgd",
    "lr": 0.1,
    "batch_size": 32,
    "total_steps": 20,
    "eval_every": 10,
    "schedule": "uba",
    "schedule_params": {"eta_min": 0.0, "variant": "cyclic"},
    "phases": 1,
    "seed": 0,
    "device": "cpu",
    "metric": "val_accuracy",
}


@pytest.fixture(scope="module")
def ray_local():
    # address="local": always a fresh cluster, never one another process left running
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _tuner(trainable, param_space, tmp_path, name, max_failures=0):
    return tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="val_accuracy", mode="max"),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(tmp_path),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=0,
        ),
    )


def test_trials_report_metrics_checkpoints_and_divergence_errors(ray_local, tmp_path):
    """Two trials in one Tuner: a healthy one, and one that diverges (lr = 1e12)."""
    space = {**CONFIG, "phi": 5.0, "lr": tune.grid_search([0.1, 1e12])}
    results = _tuner(uba_trainable, space, tmp_path, "two").fit()
    assert len(results) == 2 and results.num_errors == 1
    ok = next(r for r in results if r.error is None)
    bad = next(r for r in results if r.error is not None)
    assert ok.metrics["step"] == 20 and ok.metrics["done"] is True
    assert 0.5 < ok.metrics["val_accuracy"] <= 1.0
    assert ok.checkpoint is not None
    with ok.checkpoint.as_directory() as d:
        state = load_state(d)
    assert state["step"] == 20 and "model" in state and "sampler" in state
    # Ray records the divergence as the trial's error, with the step
    assert bad.config["lr"] == 1e12
    assert "diverged" in str(bad.error) and "at step" in str(bad.error)


def test_a_trial_over_its_memory_budget_fails_alone_with_a_clear_error(ray_local, tmp_path):
    """Each trial reserves Ray ``memory`` (tuning.specs.Resources) and carries the same budget
    as ``memory_limit_mb``: the too-big model fails with the reason, the other trial runs."""
    from tuning.specs import Resources

    resources = Resources(cpu=1, memory_mb=300).as_ray()
    assert resources["memory"] == 300 * 2**20
    space = {**CONFIG, "phi": 5.0, "memory_limit_mb": 300,
             "model_kwargs": tune.grid_search([{"hidden_sizes": [16]},
                                               {"hidden_sizes": [8000, 8000]}])}
    tuner = tune.Tuner(
        tune.with_resources(uba_trainable, resources), param_space=space,
        tune_config=tune.TuneConfig(metric="val_accuracy", mode="max"),
        run_config=tune.RunConfig(name="memory", storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert len(results) == 2 and results.num_errors == 1
    ok = next(r for r in results if r.error is None)
    bad = next(r for r in results if r.error is not None)
    assert ok.metrics["step"] == 20
    assert "trial memory budget of 300 MB" in str(bad.error), bad.error


@pytest.mark.slow
def test_worker_failure_resumes_at_the_identical_schedule_position(ray_local, tmp_path):
    """A trial that crashes after its step-10 checkpoint is restarted by Tune from it."""
    marker = tmp_path / "crashed-once"

    def flaky(config):
        def report(metrics, state):
            tune_report(metrics, state)
            if metrics["step"] == 10 and not marker.exists():
                marker.touch()
                raise RuntimeError("simulated worker failure")

        run_training(config, report, resume_state=restored_state())

    space = {**CONFIG, "phi": 5.0, "eval_every": 5}
    result = _tuner(flaky, space, tmp_path, "flaky", max_failures=1).fit()[0]
    assert marker.exists() and result.error is None

    reference: list[tuple[dict, dict | None]] = []
    run_training(space, lambda m, s: reference.append((m, s)))  # uninterrupted, in-process
    # Depending on timing, Tune's progress log of a restarted trial holds the whole history
    # or only what came after the restore; the post-restore steps must be there and match.
    df = result.metrics_dataframe.drop_duplicates("step", keep="last").set_index("step")
    ref = {int(m["step"]): m for m, _ in reference}
    assert {15, 20} <= set(df.index) <= set(ref)
    for step, row in df.iterrows():
        assert row["lr"] == ref[step]["lr"] and row["val_loss"] == ref[step]["val_loss"], step
    with result.checkpoint.as_directory() as d:
        resumed = load_state(d)["model"]
    final = reference[-1][1]["model"]
    assert all(torch.equal(resumed[k], final[k]) for k in final)
