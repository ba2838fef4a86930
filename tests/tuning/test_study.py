"""Real studies run through `tuning` alone (no service): real Ray, Optuna (RDB storage read back
with plain ``optuna.load_study``), the horizon ladder, ASHA when asked, training on digits."""

from __future__ import annotations

import pytest
import ray

from trainables.config import TrainConfig
from tuning.results import RecordingSink as NullSink
from tuning.specs import LadderSpec, Resources, SearchSpace, StudySpec
from tuning.study import InsufficientResourcesError, run_study


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def spec(tmp_path, **kw):
    base = dict(
        study_id="budget-test",
        train=TrainConfig(model="mlp", dataset="digits", lr=0.2, batch_size=64, eval_every=20),
        total_steps=60,
        search=SearchSpace(phi_min=0.3, phi_max=30, phases_min=1, phases_max=1),
        budget_fractions=(1.0, 0.5),
        num_trials=2,
        max_concurrent_trials=2,
        storage_path=str(tmp_path / "ray"),
        compare=("cosine", "clr", "schedulefree"),
        seeds=2,
        target=0.5,
    )
    return StudySpec(**{**base, **kw})


def test_requested_budgets_are_rungs_of_one_ladder_with_baselines_and_target(local_ray, tmp_path):
    sink = NullSink()
    result = run_study(spec(tmp_path), sink)

    assert [b.budget_steps for b in result.budgets] == [30, 60]
    assert all(b.best is not None for b in result.budgets)
    # every arm at every budget ran on the same two seeds, with a mean and std
    # the 50 % budget is the ladder's first rung: 2 candidates there, the better one at 100 %
    assert [(r.steps, r.num_trials, r.requested) for r in result.rungs] == [
        (30, 2, True), (60, 1, True)]
    for steps in (30, 60):
        arms = {r.schedule: r for r in result.baselines if r.budget_steps == steps}
        assert set(arms) == {"uba", "cosine", "triangular", "schedulefree"}, arms
        for r in arms.values():
            assert r.seeds == [0, 1] and r.n == 2 and 0 <= r.mean <= 1
    # the curve has one row per budget and names the best baseline
    assert [row.budget_steps for row in result.budget_curve] == [30, 60]
    assert all(row.best_baseline in ("cosine", "triangular") for row in result.budget_curve)
    assert result.target is not None and result.target.kind in (
        "measured", "interpolated", "not_reached")
    # compute: 2 x 30 + 60 search steps; each compare arm tuned by the same ladder (the same
    # 120 steps); then 2 budgets x 4 arms x 2 evaluation seeds
    assert result.compute.search_steps == 120
    assert result.compute.compare_tuning_steps == 3 * 120
    assert result.compute.compare_steps == 2 * 30 * 4 + 2 * 60 * 4
    assert result.compute.units == pytest.approx(result.compute.steps / 60)
    for r in result.baselines:  # every arm tuned, at UBA's compute
        assert r.tuned and r.tuning_units == pytest.approx(2.0), r
    # the winner of each budget is the best mean, with its paired margin over UBA
    assert [w.budget_steps for w in result.winners] == [30, 60]
    for w in result.winners:
        rows = {r.schedule: r for r in result.baselines if r.budget_steps == w.budget_steps}
        assert w.mean == max(r.mean for r in rows.values())
        assert w.arm == "uba" or w.margin >= 0
        assert w.uba_mean == rows["uba"].mean and w.n == 2
    # the sink saw search trials (UBA's and the arms') and comparison trials, labelled as such
    kinds = {t.params.get("kind") for t in sink.trials.values()}
    assert kinds == {"search", "compare"}
    tuned = [t for t in sink.trials.values() if t.params.get("kind") == "search"
             and t.params.get("arm")]
    assert sorted({t.params["arm"] for t in tuned}) == ["cosine", "schedulefree", "triangular"]
    assert len(sink.trials) == 2 + 1 + 3 * (2 + 1) + 2 * 4 * 2
    # the schedule-free arm trained with the schedule-free optimizer at a constant LR
    sf = [t for t in sink.trials.values() if t.params.get("arm") == "schedulefree"
          and t.params["kind"] == "compare"]
    assert sf and all(t.params["optimizer"] == "sgd_schedulefree"
                      and t.params["schedule"] == "constant" for t in sf), sf[:1]


def test_gpu_request_on_a_cpu_cluster_is_refused_not_left_pending(local_ray, tmp_path):
    with pytest.raises(InsufficientResourcesError, match="GPU=0"):
        run_study(spec(tmp_path, resources=Resources(cpu=1, gpu=1)), NullSink())


#: Functions that measure curvature when they run as a Ray task (tuning.phi_from_curvature).
MEASURING_TASKS = ("measure_curvature", "recommend_for", "recommend_with_report")


def _curvature_tasks() -> int:
    """Ray tasks run so far in this Ray session whose function measures curvature, read from
    Ray's task events (``ray.timeline``; workers report them about once a second)."""
    import time

    time.sleep(2)
    return sum(1 for e in ray.timeline()
               if str(e.get("name", "")).rsplit(".", 1)[-1] in MEASURING_TASKS)


def test_curvature_suggestions_warm_start_the_search_and_report_their_gap(local_ray, tmp_path):
    from tuning.curvature import HistoryPoint

    history = (HistoryPoint(model="mlp", dataset="digits", optimizer="sgd", budget_steps=50,
                            tuned_phi=3.0, study_id="earlier"),)
    s = spec(tmp_path, budget_fractions=(1.0,), total_steps=40, num_trials=4, compare=(),
             seeds=1, curvature=True, history=history)
    sink = NullSink()
    before = _curvature_tasks()
    result = run_study(s, sink)

    assert result.curvature is not None
    assert result.curvature["lambda_max"] > 0 and result.curvature["kappas"]
    # curvature was measured once, by one Ray task, for the recommendation and the suggestions:
    # the report is the one the φ model's features came from
    assert _curvature_tasks() - before == 1
    model = next(sg for sg in result.suggestions if sg["source"] == "model")
    assert model["evidence"]["features"]["init_lambda_max"] == pytest.approx(
        result.curvature["lambda_max"])
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


def _states_and_steps(url, name):
    import optuna

    study = optuna.load_study(study_name=name, storage=url)
    return [(t.state.name, t.user_attrs.get("trained_steps"), t.value) for t in study.trials]


def test_optuna_storage_holds_only_truthful_values_and_finalists_average_seeds(local_ray,
                                                                               tmp_path):
    from tuning.proposer import optuna_study_name

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = spec(tmp_path, budget_fractions=(1.0,), total_steps=90, num_trials=4, compare=(),
             seeds=1, target=None, optuna_storage_url=url, finalists=1, finalist_seeds=1,
             train=TrainConfig(model="mlp", dataset="digits", lr=0.2, batch_size=64,
                               eval_every=10))
    sink = NullSink()
    result = run_study(s, sink)

    # rung T/3: 4 complete schedules of 30 steps; rung T: the best one, 90 steps
    low = _states_and_steps(url, optuna_study_name(s, 30))
    top = _states_and_steps(url, optuna_study_name(s, 90))
    assert [(state, steps) for state, steps, _ in low] == [("COMPLETE", 30)] * 4
    assert [(state, steps) for state, steps, _ in top] == [("COMPLETE", 90)]
    promoted = max(low, key=lambda t: t[2])
    assert result.best.phi == pytest.approx(
        next(r.params["phi"] for r in sink.trials.values()
             if r.budget_steps == 90 and r.params["kind"] == "search"))
    # the finalist was re-trained with one extra seed; the best reports mean ± std over 2
    (fin,) = result.finalists
    assert fin.n == 2 and result.best.n_seeds == 2 and len(result.best.seeds) == 2
    assert result.best.value == pytest.approx(sum(fin.values) / 2)
    assert top[0][2] in fin.values and promoted[2] is not None
    assert result.compute.search_steps == 4 * 30 + 90
    assert result.compute.finalist_steps == 90
    assert result.compute.units == pytest.approx((4 * 30 + 2 * 90) / 90)


def test_asha_when_asked_prunes_in_optuna_instead_of_completing(local_ray, tmp_path):
    from tuning.proposer import optuna_study_name

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = spec(tmp_path, budget_fractions=(1.0,), total_steps=80, num_trials=4, compare=(),
             seeds=1, target=None, optuna_storage_url=url, method="asha", finalists=0,
             max_concurrent_trials=1,
             train=TrainConfig(model="mlp", dataset="digits", lr=0.2, batch_size=64,
                               eval_every=10))
    result = run_study(s, NullSink())
    trials = _states_and_steps(url, optuna_study_name(s, 80))
    assert len(trials) == 4
    for state, steps, _ in trials:
        assert state in ("COMPLETE", "PRUNED", "FAIL")
        assert (state == "COMPLETE") == (steps == 80), trials
    assert result.best is not None and result.method == "asha"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"ladder": LadderSpec(eta=1)}, "eta"),
     ({"ladder": LadderSpec(rungs=3), "num_trials": 8}, "rungs"),
     ({"ladder": LadderSpec(min_fraction=0.1)}, "min_fraction"),
     ({"ladder": LadderSpec(brackets=5)}, "brackets"),
     ({"method": "hyperband"}, "method")],
)
def test_a_ladder_that_cannot_fit_is_refused_naming_the_field(tmp_path, kwargs, field):
    with pytest.raises(ValueError, match=field):
        spec(tmp_path, total_steps=60, budget_fractions=(1.0,), **kwargs)
