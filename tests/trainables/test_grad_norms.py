"""Per-step gradient norms: the norm each optimizer uses, every update of a real run, exact
across checkpoint/resume, block means past 20 000 steps, and refinable as they come."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from trainables import run_training
from trainables.grad_norms import (
    GRAD_NORMS,
    MAX_FULL_RESOLUTION,
    GradNormRecorder,
    GradNorms,
    norm_type,
)
from tuning.schedules import create_schedule

BASE = {
    "model": "mlp",
    "model_kwargs": {"hidden_sizes": [32]},
    "dataset": "digits",
    "optimizer": "sgd",
    "lr": 0.1,
    "batch_size": 32,
    "total_steps": 30,
    "eval_every": 10,
    "schedule": "cosine",
    "seed": 0,
    "device": "cpu",
}


class Reports:
    def __init__(self, stop_after: int | None = None) -> None:
        self.metrics: list[dict] = []
        self.states: list[dict | None] = []
        self.stop_after = stop_after

    def __call__(self, metrics, state):
        self.metrics.append(copy.deepcopy(metrics))
        self.states.append(state)
        if self.stop_after is not None and metrics["step"] >= self.stop_after:
            raise KeyboardInterrupt("simulated worker failure")


def test_norm_type_per_optimizer() -> None:
    assert [norm_type(o) for o in ("sgd", "sgd_schedulefree", "adamw", "adamw_schedulefree")] \
        == ["l2", "l2", "l1", "l1"]
    with pytest.raises(ValueError, match="optimizer='lion'"):
        norm_type("lion")


@pytest.mark.parametrize(("norm", "ord_"), [("l2", 2), ("l1", 1)])
def test_recorder_is_the_norm_of_the_concatenated_gradient(norm: str, ord_: int) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    rec = GradNormRecorder(list(model.parameters()), norm, total_steps=20)  # type: ignore[arg-type]
    want = []
    for i in range(20):
        model.zero_grad(set_to_none=True)
        model(torch.randn(4, 5)).pow(2).sum().mul(i + 1).backward()
        flat = torch.cat([p.grad.flatten() for p in model.parameters()]).double()
        want.append(float(torch.linalg.vector_norm(flat, ord_)))
        rec.record()
        if i % 7 == 6:
            rec.flush()
    got = rec.result()
    assert got is not None and got.norm == norm and got.stride == 1
    assert list(got.values) == pytest.approx(want, rel=1e-6)  # float32 per-tensor norms


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_every_update_of_a_real_run_is_recorded_in_the_final_report(optimizer: str) -> None:
    reports = Reports()
    lr = 0.1 if optimizer == "sgd" else 1e-3
    final = run_training({**BASE, "optimizer": optimizer, "lr": lr}, reports)
    assert all(GRAD_NORMS not in m for m in reports.metrics[:-1])  # only the last one
    norms = GradNorms.from_metrics(final)
    assert norms is not None and norms == GradNorms.from_dict(reports.metrics[-1][GRAD_NORMS])
    assert norms.norm == norm_type(optimizer) and norms.total_steps == 30
    assert len(norms.values) == 30 and all(math.isfinite(v) and v > 0 for v in norms.values)
    # what refinement consumes, as it comes
    s = create_schedule("refined", 30, eta_max=lr, **norms.schedule_params())
    assert s.params["optimizer"] == ("sgd" if optimizer == "sgd" else "adam")
    assert max(s.values()) == pytest.approx(lr) and s.values()[-1] == 0.0
    off = run_training({**BASE, "optimizer": optimizer, "lr": lr}, Reports(),
                       record_grad_norms=False)
    assert GRAD_NORMS not in off and off["val_loss"] == final["val_loss"]  # no side effect


def test_norms_survive_checkpoint_and_resume_exactly() -> None:
    cfg = {**BASE, "total_steps": 40, "eval_every": 5}
    full = Reports()
    run_training(cfg, full)
    crashed = Reports(stop_after=15)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, crashed)
    state = crashed.states[-1]
    assert state[GRAD_NORMS]["recorded"] == 15
    resumed = Reports()
    run_training(cfg, resumed, resume_state=state)
    assert resumed.metrics[-1][GRAD_NORMS] == full.metrics[-1][GRAD_NORMS]
    # the final checkpoint, restored: nothing trains, the norms are still reported
    again = run_training(cfg, Reports(), resume_state=resumed.states[-1])
    assert again[GRAD_NORMS] == full.metrics[-1][GRAD_NORMS]
    # a checkpoint from before norms were recorded: a partial sequence is not reported
    old = {k: v for k, v in state.items() if k != GRAD_NORMS}
    late = Reports()
    run_training(cfg, late, resume_state=old)
    assert late.metrics[-1]["done"] and GRAD_NORMS not in late.metrics[-1]


def test_long_runs_keep_block_means_and_expand_to_every_step() -> None:
    T = 2 * MAX_FULL_RESOLUTION + 4  # stride 3, the last block has 2 steps
    w = torch.nn.Parameter(torch.zeros(1))
    rec = GradNormRecorder([w], "l2", T)
    for i in range(T):
        w.grad = torch.tensor([float(i % 10 + 1)])
        rec.record()
        if i % 16 == 15:
            rec.flush()
    got = rec.result()
    assert got is not None and got.stride == 3 and len(got.values) == math.ceil(T / 3)
    want = [(i % 10 + 1) for i in range(T)]
    assert got.values[0] == pytest.approx(sum(want[:3]) / 3)
    assert got.values[-1] == pytest.approx(sum(want[-2:]) / 2)
    per_step = got.per_step()
    assert len(per_step) == T and per_step[:3] == (got.values[0],) * 3
    assert GradNorms.from_dict(got.to_dict()) == got
    with pytest.raises(ValueError, match="values"):
        GradNorms("l2", T, 3, got.values[:-1])
