"""A real multi-budget study with baselines, run through `tuning` alone (no service): real Ray,
Optuna, ASHA and training on scikit-learn's digits."""

from __future__ import annotations

import pytest
import ray

from tuning.results import NullSink
from tuning.specs import Resources, SearchSpace, StudySpec, TrainSpec
from tuning.study import InsufficientResourcesError, run_study


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def spec(tmp_path, **kw):
    base = dict(
        study_id="budget-test",
        train=TrainSpec(model="mlp", dataset="digits", lr=0.2, batch_size=64, eval_every=20),
        total_steps=60,
        search=SearchSpace(phi_min=0.3, phi_max=30, phases_min=1, phases_max=1),
        budget_fractions=(1.0, 0.5),
        num_trials=2,
        max_concurrent_trials=2,
        storage_path=str(tmp_path / "ray"),
        compare=("cosine", "clr"),
        seeds=2,
        target=0.5,
    )
    return StudySpec(**{**base, **kw})


def test_budgets_run_smallest_first_with_baselines_and_target(local_ray, tmp_path):
    sink = NullSink()
    result = run_study(spec(tmp_path), sink)

    assert [b.budget_steps for b in result.budgets] == [30, 60]
    assert all(b.best is not None for b in result.budgets)
    # every arm at every budget ran on the same two seeds, with a mean and std
    for steps in (30, 60):
        arms = {r["schedule"]: r for r in result.baselines if r["budget_steps"] == steps}
        assert set(arms) == {"uba", "cosine", "triangular"}, arms
        for r in arms.values():
            assert r["seeds"] == [0, 1] and r["n"] == 2 and 0 <= r["mean"] <= 1
    # the curve has one row per budget and names the best baseline
    assert [row["budget_steps"] for row in result.budget_curve] == [30, 60]
    assert all(row["best_baseline"] in ("cosine", "triangular") for row in result.budget_curve)
    assert result.target is not None and result.target["kind"] in (
        "measured", "interpolated", "not_reached")
    # the sink saw search trials and comparison trials, labelled as such
    kinds = {t.params.get("kind") for t in sink.trials.values()}
    assert kinds == {"search", "compare"}
    assert len(sink.trials) == 2 * 2 + 2 * 3 * 2


def test_gpu_request_on_a_cpu_cluster_is_refused_not_left_pending(local_ray, tmp_path):
    with pytest.raises(InsufficientResourcesError, match="GPU=0"):
        run_study(spec(tmp_path, resources=Resources(cpu=1, gpu=1)), NullSink())


def test_curvature_suggestions_warm_start_the_search_and_report_their_gap(local_ray, tmp_path):
    from tuning.curvature import HistoryPoint

    history = (HistoryPoint(model="mlp", dataset="digits", optimizer="sgd", budget_steps=50,
                            tuned_phi=3.0, study_id="earlier"),)
    s = spec(tmp_path, budget_fractions=(1.0,), total_steps=40, num_trials=4, compare=(),
             seeds=1, curvature=True, history=history, early_stopping=False)
    sink = NullSink()
    result = run_study(s, sink)

    assert result.curvature is not None
    assert result.curvature["lambda_max"] > 0 and result.curvature["kappas"]
    sources = {sg["source"] for sg in result.suggestions}
    assert {"theory", "paper_default", "history"} <= sources, sources
    evaluated_phis = {round(t.params["phi"], 6) for t in sink.trials.values()}
    for sg in result.suggestions:
        (gap,) = sg["gaps"]
        assert gap["budget_steps"] == 40
        if gap["status"] == "evaluated":
            assert round(gap["phi_evaluated"], 6) in evaluated_phis
            assert gap["gap"] >= 0  # nothing beats the tuned best
    history_gap = next(sg for sg in result.suggestions if sg["source"] == "history")["gaps"][0]
    assert history_gap["phi_evaluated"] == pytest.approx(3.0)
    assert history_gap["status"] == "evaluated"


def test_search_state_lives_in_an_optuna_rdb_storage(local_ray, tmp_path):
    import optuna

    from tuning.search import optuna_study_name

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = spec(tmp_path, budget_fractions=(1.0,), total_steps=30, num_trials=2, compare=(),
             seeds=1, optuna_storage_url=url, early_stopping=False)
    result = run_study(s, NullSink())
    study = optuna.load_study(study_name=optuna_study_name(s, 30), storage=url)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2
    assert {"phi", "phases"} <= set(trials[0].params)
    best = max(t.value for t in trials)
    assert best == pytest.approx(result.best.value)
