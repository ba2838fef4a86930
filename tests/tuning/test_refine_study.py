"""Refinement as a study step (``refine: true``, Defazio et al. 2023): a real study (Ray,
Optuna, digits) refines UBA's best full-budget run and a linear-decay run from the gradient
norms those runs recorded, tunes each refined schedule's lr by the same ladder (the norms
resampled to a shorter rung), reports the compute, trains both on the evaluation seeds and
lets them compete for the winner; the refined row rebuilds as a scheduler for a user's loop.
Bad input is refused naming ``refine``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import ray
import torch

from service import schemas
from trainables.config import TrainConfig
from trainables.errors import ConfigError
from trainables.grad_norms import GradNorms
from tuning.arms import REFINED_LINEAR, REFINED_UBA, arm_config
from tuning.results import RecordingSink, Winner
from tuning.schedules import create_schedule, resample_norms
from tuning.specs import SearchSpace, StudySpec
from tuning.study import run_study

torch.set_num_threads(1)
T = 60


def spec(tmp_path, **kw) -> StudySpec:
    base = dict(
        study_id="refine-test",
        train=TrainConfig(model="mlp", dataset="digits", lr=0.2, batch_size=64, eval_every=20,
                          model_kwargs={"hidden_sizes": [32]}),
        total_steps=T,
        search=SearchSpace(phi_min=0.3, phi_max=30, phases_min=1, phases_max=1),
        num_trials=3,  # a ladder of two rungs: 3 candidates at 20 steps, the best at 60
        max_concurrent_trials=2,
        storage_path=str(tmp_path / "ray"),
        seeds=2,
        refine=True,
    )
    return StudySpec(**{**base, **kw})


# ------------------------------------------------------------------ pure: no Ray


def test_resampled_norms_keep_the_run_at_full_length_and_compress_it_otherwise():
    norms = [3.0, 1.0, 2.0, 5.0]
    assert resample_norms(norms, 4) == norms  # the full budget: as recorded
    assert resample_norms(norms, 7) == pytest.approx([3.0, 2.0, 1.0, 1.5, 2.0, 3.5, 5.0])
    assert resample_norms(norms, 2) == [3.0, 5.0]  # first and last kept
    assert resample_norms([2.0] * 60, 20) == [2.0] * 20  # constant norms stay linear decay


def test_a_refined_arm_config_carries_its_norms_and_bad_norms_are_refused_naming_the_field():
    base = TrainConfig(model="mlp", dataset="digits", lr=0.2)
    norms = [1.0 + (i % 7) for i in range(T)]
    params = {"lr": 0.3, "norms": norms, "refine_optimizer": "sgd"}
    full = arm_config(REFINED_UBA, base.for_budget(T), params)
    assert full.schedule == "refined" and full.lr == 0.3
    assert full.schedule_params == {"norms": norms, "optimizer": "sgd"}
    rung = arm_config(REFINED_UBA, base.for_budget(20), params)
    assert rung.schedule_params["norms"] == resample_norms(norms, 20)
    # the config survives the Ray boundary and is the formula the library computes
    again = TrainConfig.from_mapping(full.to_dict())
    assert create_schedule("refined", T, eta_max=again.lr, **again.schedule_kwargs()).values() \
        == create_schedule("refined", T, eta_max=0.3, norms=norms, optimizer="sgd").values()
    for bad, match in [([1.0] * (T - 1), "one per update"), ([1.0] * (T - 1) + [float("nan")],
                       r"norms\[59\]"), ([-1.0] + [1.0] * (T - 1), r"norms\[0\]")]:
        with pytest.raises(ConfigError, match=match):
            full.with_schedule("refined", lr=0.3, norms=bad, optimizer="sgd")
    with pytest.raises(ConfigError, match="schedule_params.optimizer"):
        full.with_schedule("refined", lr=0.3, norms=norms, optimizer="rmsprop")


@pytest.mark.parametrize("kw", [
    dict(budget_fractions=(0.5,)),  # no full-budget run requested
    dict(budget_fractions=(0.25, 0.5)),
    dict(train=TrainConfig(model="user", dataset="user", lr=0.2)),  # records no norms
])
def test_refine_without_a_full_budget_or_norms_is_a_value_error_naming_refine(tmp_path, kw):
    with pytest.raises(ValueError, match="^refine: "):
        spec(tmp_path, **kw)
    spec(tmp_path, refine=False, **kw)  # without refine the spec is fine


def test_a_winner_without_a_schedule_in_its_params_says_where_the_schedule_is():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    win = Winner(budget_steps=T, arm="uba", mean=0.5, eta_max=0.1, uba_mean=0.5, margin=0.0,
                 wins=0, ties=0, losses=0, n=1, tuned=True, params={"phi": 1.0})
    with pytest.raises(ValueError, match="'uba'.*result.best"):
        win.to_scheduler(opt)
    with pytest.raises(ValueError, match="'uba'"):
        schemas.Winner.model_validate(dataclasses.asdict(win)).to_scheduler(opt)


# ------------------------------------------------------------------ a real study


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _trained_configs(root: Path, experiment_glob: str) -> list[dict]:
    """The trial configs Ray trained in the experiments matching ``experiment_glob``."""
    return [json.loads(p.read_text())["trial"]
            for p in sorted(root.glob(f"{experiment_glob}/*/params.json"))]


def _used_lrs(sched, opt: torch.optim.Optimizer, steps: int) -> list[float]:
    used = []
    for _ in range(steps):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return used


def test_refine_tunes_and_compares_refined_uba_and_linear(local_ray, tmp_path):
    sink = RecordingSink()
    result = run_study(spec(tmp_path), sink)
    root = tmp_path / "ray"

    rows = {r.schedule: r for r in result.baselines if r.budget_steps == T}
    assert set(rows) == {"uba", REFINED_UBA, REFINED_LINEAR}, rows
    for r in rows.values():  # the same evaluation seeds for every arm
        assert r.seeds == [0, 1] and r.n == 2 and not r.errors and r.tuned

    # the sources: UBA's best full-budget run, and a linear run at the study's lr trained for
    # refinement (no linear compare arm here)
    best = result.best
    assert best is not None and best.total_steps == T
    uba_src = rows[REFINED_UBA].params["source"]
    assert uba_src["arm"] == "uba" and uba_src["trial_id"] == best.trial_id
    assert uba_src["eta_max"] == pytest.approx(best.eta_max) and uba_src["counted_in"] == "search"
    lin_src = rows[REFINED_LINEAR].params["source"]
    (lin_run,) = [t for t in sink.trials.values() if t.trial_id == lin_src["trial_id"]]
    assert lin_run.params["arm"] == "linear" and lin_run.params["lr"] == pytest.approx(0.2)
    assert lin_run.status == "terminated" and lin_run.step == T

    for arm in (REFINED_UBA, REFINED_LINEAR):
        row, src = rows[arm], rows[arm].params["source"]
        # the schedule is the formula applied to the norms the source run recorded
        recorded = GradNorms.from_dict(sink.trials[src["trial_id"]].grad_norms)
        assert recorded.norm == "l2" and recorded.total_steps == T
        norms = list(recorded.per_step())
        want = create_schedule("refined", T, eta_max=row.eta_max, norms=norms, optimizer="sgd")
        p = row.params
        assert (p["schedule"], p["total_steps"], p["optimizer"]) == ("refined", T, "sgd")
        assert p["norms"] == norms and p["eta_max"] == row.eta_max
        # ... and is what its evaluation seeds trained
        evals = [c for c in _trained_configs(root, "compare-*") if c.get("arm") == arm]
        assert sorted(c["seed"] for c in evals) == [0, 1]
        for c in evals:
            assert c["schedule"] == "refined" and c["lr"] == pytest.approx(row.eta_max)
            assert c["schedule_params"]["norms"] == norms
        # its lr was tuned by the ladder: a sweep at the short rung on resampled norms, the
        # best promoted to the full budget on the recorded ones
        search = _trained_configs(root, f"{arm}-it*")
        by_steps = {}
        for c in search:
            by_steps.setdefault(c["total_steps"], []).append(c)
            assert c["schedule_params"]["norms"] == resample_norms(norms, c["total_steps"])
        assert sorted(by_steps) == [20, T] and len(by_steps[20]) == 3 and len(by_steps[T]) == 1
        assert len({c["lr"] for c in by_steps[20]}) == 3  # three lrs swept
        assert row.eta_max == pytest.approx(by_steps[T][0]["lr"])
        # its compute: the ladder (3 x 20 + 60) plus, for linear, the source run it trained
        steps = sum(c["total_steps"] for c in search) + (T if arm == REFINED_LINEAR else 0)
        assert row.tuning_units == pytest.approx(steps / T)
        # the row rebuilds as a scheduler for a user's loop, on both sides of the API
        client_row = schemas.BaselineRow.model_validate_json(
            schemas.BaselineRow(**dataclasses.asdict(row)).model_dump_json())
        for side in (row, client_row):
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
            assert _used_lrs(side.to_scheduler(opt), opt, T) == pytest.approx(
                want.values(), rel=1e-12)
    compute = result.compute
    assert compute.refine_steps == round(
        (rows[REFINED_UBA].tuning_units + rows[REFINED_LINEAR].tuning_units) * T)
    assert compute.steps == (compute.search_steps + compute.finalist_steps
                             + compute.compare_tuning_steps + compute.refine_steps
                             + compute.compare_steps)
    assert compute.compare_steps == 3 * 2 * T  # three arms x two evaluation seeds

    # they compete for the winner on the paired seeds
    (winner,) = result.winners
    assert winner.arm == max(rows.values(), key=lambda r: (r.mean, r.schedule == "uba")).schedule
    assert winner.n == 2
    if winner.arm != "uba":  # a refined winner carries its schedule
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        assert _used_lrs(winner.to_scheduler(opt), opt, T) == pytest.approx(
            create_schedule("refined", T, eta_max=winner.eta_max,
                            norms=winner.params["norms"]).values(), rel=1e-12)


def test_with_a_linear_compare_arm_refine_refines_its_tuned_run(local_ray, tmp_path):
    """``compare: [linear]``: refined-linear refines the tuned linear arm's full-budget pick
    (its compute counted in that arm's tuning, no extra source run)."""
    sink = RecordingSink()
    result = run_study(spec(tmp_path, compare=("linear",), seeds=1), sink)

    rows = {r.schedule: r for r in result.baselines if r.budget_steps == T}
    assert set(rows) == {"uba", "linear", REFINED_UBA, REFINED_LINEAR}, rows
    src = rows[REFINED_LINEAR].params["source"]
    assert src["arm"] == "linear" and src["counted_in"] == "compare arm linear"
    assert src["eta_max"] == pytest.approx(rows["linear"].eta_max)  # the linear arm's pick
    run = sink.trials[src["trial_id"]]
    assert run.params["arm"] == "linear" and run.params["kind"] == "search" and run.step == T
    assert rows[REFINED_LINEAR].params["norms"] == list(
        GradNorms.from_dict(run.grad_norms).per_step())
    # no source run trained for refinement: the refined arms' compute is their two ladders
    assert not list((tmp_path / "ray").glob("refined-linear-source-*"))
    assert rows[REFINED_LINEAR].tuning_units == pytest.approx(rows[REFINED_UBA].tuning_units)
    assert result.compute.refine_steps == round(2 * rows[REFINED_UBA].tuning_units * T)
    assert result.winner is not None and result.winner.arm in rows
