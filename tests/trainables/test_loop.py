"""run_training on real data: budget, reports, LR = schedule, exact resume, divergence, config."""

from __future__ import annotations

import math

import pytest
import torch

from trainables import ConfigError, DivergedError, get_dataset, run_training, steps_per_epoch
from trainables.loop import EpochSampler, TrainConfig
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
    "schedule": "uba",
    "schedule_params": {"phi": 5.0, "phases": 1, "eta_min": 0.0},
    "seed": 0,
    "device": "cpu",
}


class Recorder:
    """A report callback that keeps every metrics dict and checkpoint state."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.metrics: list[dict] = []
        self.states: list[dict | None] = []
        self.stop_after = stop_after

    def __call__(self, metrics, state):
        self.metrics.append(dict(metrics))
        self.states.append(state)
        if self.stop_after is not None and metrics["step"] >= self.stop_after:
            raise KeyboardInterrupt("simulated worker failure")


def test_reports_at_eval_points_and_learns():
    rec = Recorder()
    final = run_training({**BASE, "total_steps": 120, "eval_every": 40}, rec)
    assert [m["step"] for m in rec.metrics] == [40, 80, 120]
    assert [m["done"] for m in rec.metrics] == [False, False, True]
    assert final == rec.metrics[-1]
    for key in ("train_loss", "val_loss", "val_accuracy", "lr", "samples_per_s", "epoch"):
        assert all(math.isfinite(m[key]) for m in rec.metrics), key
    assert final["val_accuracy"] > 0.85  # real digits, ~3 epochs of an MLP
    assert rec.metrics[0]["train_loss"] > final["train_loss"]
    assert final["epoch"] == pytest.approx(120 * 32 / get_dataset("digits").num_train)
    assert all(
        s is not None and s["step"] == m["step"]
        for m, s in zip(rec.metrics, rec.states, strict=True)
    )


def test_lr_per_step_is_the_schedule_and_top_level_phi_overrides():
    cfg = {**BASE, "eval_every": 1, "phi": 2.5, "phases": 2}
    rec = Recorder()
    run_training(cfg, rec)
    sched = create_schedule("uba", 30, eta_max=0.1, phi=2.5, phases=2, eta_min=0.0)
    # step s (1-based) uses the scheduler's 0-based index s-1 (design: t = i + 1)
    expected = [sched.lr(i) for i in range(30)]
    assert [m["lr"] for m in rec.metrics] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    default = create_schedule("uba", 30, eta_max=0.1, phi=5.0, phases=1)
    assert [m["lr"] for m in rec.metrics] != pytest.approx([default.lr(i) for i in range(30)])


def test_baseline_schedule_by_name():
    rec = Recorder()
    run_training({**BASE, "schedule": "cosine", "schedule_params": {}, "eval_every": 1}, rec)
    sched = create_schedule("cosine", 30, eta_max=0.1)
    assert [m["lr"] for m in rec.metrics] == pytest.approx([sched.lr(i) for i in range(30)])


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {
            "model": "cnn",
            "model_kwargs": {"width": 4},
            "optimizer": "adamw",
            "lr": 3e-3,
            "schedule_params": {"phi": 0.5, "phases": 2, "variant": "cyclic"},
            "weight_decay": 0.01,
        },
    ],
    ids=["sgd-mlp", "adamw-cnn-2phase"],
)
def test_interrupted_and_resumed_run_is_identical(extra):
    cfg = {**BASE, **extra, "total_steps": 40, "eval_every": 5, "checkpoint_every": 0}
    full = Recorder()
    run_training(cfg, full)

    crashed = Recorder(stop_after=15)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, crashed)
    state = crashed.states[-1]
    assert state["step"] == 15

    resumed = Recorder()
    run_training(cfg, resumed, resume_state=state)
    assert [m["step"] for m in resumed.metrics] == [20, 25, 30, 35, 40]
    lrs_full = [m["lr"] for m in full.metrics]
    lrs_resumed = [m["lr"] for m in crashed.metrics + resumed.metrics]
    assert lrs_resumed == lrs_full  # identical schedule position, exactly
    for a, b in zip(full.metrics, crashed.metrics + resumed.metrics, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
    final_a, final_b = full.states[-1], resumed.states[-1]
    for k, v in final_a["model"].items():
        assert torch.equal(v, final_b["model"][k]), k


def test_checkpoint_every_adds_reports_with_fresh_metrics():
    rec = Recorder()
    run_training({**BASE, "total_steps": 12, "eval_every": 6, "checkpoint_every": 4}, rec)
    assert [m["step"] for m in rec.metrics] == [4, 6, 8, 12]
    assert all("val_accuracy" in m for m in rec.metrics)
    rec = Recorder()
    run_training({**BASE, "total_steps": 12, "eval_every": 6, "checkpoint_every": -1}, rec)
    assert rec.states == [None, None]


def test_resume_refuses_a_different_budget():
    rec = Recorder()
    run_training({**BASE, "total_steps": 10, "eval_every": 5}, rec)
    with pytest.raises(ConfigError, match="total_steps"):
        run_training({**BASE, "total_steps": 20}, Recorder(), resume_state=rec.states[0])


def test_divergence_stops_with_the_step():
    rec = Recorder()
    with pytest.raises(DivergedError, match=r"at step \d+") as e:
        run_training(
            {
                **BASE,
                "lr": 1e12,
                "total_steps": 40,
                "eval_every": 40,
                "schedule_params": {"phi": 0.0},
            },
            rec,
        )
    assert 1 <= e.value.step <= 40 and not math.isfinite(e.value.loss)
    assert e.value.lr == pytest.approx(1e12)
    assert rec.metrics == []


def test_language_model_reports_perplexity(tmp_path):
    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog. " * 60)
    cfg = {
        **BASE,
        "model": "transformer_lm",
        "model_kwargs": {"d_model": 16, "n_head": 2},
        "dataset": "text",
        "dataset_kwargs": {"path": str(tmp_path / "t.txt"), "block_size": 16},
        "optimizer": "adamw",
        "lr": 3e-3,
        "batch_size": 8,
        "total_steps": 30,
        "eval_every": 15,
        "metric": "val_perplexity",
        "schedule_params": {"phi": 0.5},
    }
    rec = Recorder()
    final = run_training(cfg, rec)
    assert final["val_perplexity"] == pytest.approx(math.exp(final["val_loss"]))
    assert final["tokens_per_s"] == pytest.approx(16 * final["samples_per_s"])
    assert final["val_loss"] < math.log(len(set("the quick brown fox jumps over the lazy dog. ")))


def test_epoch_sampler_is_without_replacement_per_epoch():
    g = torch.Generator().manual_seed(0)
    s = EpochSampler(10, 3, g)
    first = torch.cat([s.next() for _ in range(3)])
    assert len(set(first.tolist())) == 9 and s.epoch == 1
    s.next()
    assert s.epoch == 2  # 1 leftover index dropped, new permutation
    assert steps_per_epoch(get_dataset("digits"), 32) == get_dataset("digits").num_train // 32


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("total_steps", 0, "total_steps"),
        ("lr", -1.0, "lr"),
        ("lr", float("nan"), "lr"),
        ("optimizer", "lion", "optimizer"),
        ("momentum", 1.0, "momentum"),
        ("device", "tpu", "device"),
        ("amp", "fp8", "amp"),
        ("metric", "f1", "metric"),
        ("batch_size", 10_000, "exceeds"),
        ("model", "nope", "unknown model"),
        ("schedule", "nope", "nope"),
    ],
)
def test_bad_config_values_are_rejected_clearly(key, value, match):
    with pytest.raises(ValueError, match=match):
        run_training({**BASE, key: value}, Recorder())


def test_missing_required_keys_and_nesterov_rule():
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig.from_mapping({k: v for k, v in BASE.items() if k != "lr"})
    with pytest.raises(ConfigError, match="nesterov"):
        TrainConfig.from_mapping({**BASE, "optimizer": "adamw", "nesterov": True})
    assert TrainConfig.from_mapping({**BASE, "nesterov": True}).nesterov


def test_bf16_autocast_and_channels_last_on_cpu_and_exact_resume():
    cfg = {
        **BASE,
        "model": "cnn",
        "model_kwargs": {"width": 4},
        "amp": "bf16",
        "channels_last": True,
        "total_steps": 12,
        "eval_every": 6,
    }
    full = Recorder()
    run_training(cfg, full)
    assert all(math.isfinite(m["val_loss"]) for m in full.metrics)
    first = Recorder(stop_after=6)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, first)
    resumed = Recorder()
    run_training(cfg, resumed, resume_state=first.states[-1])
    assert resumed.metrics[-1]["val_loss"] == full.metrics[-1]["val_loss"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_requested_without_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        run_training({**BASE, "device": "cuda"}, Recorder())


def test_resume_from_the_final_checkpoint_trains_no_further():
    rec = Recorder()
    final = run_training({**BASE, "total_steps": 10, "eval_every": 10}, rec)
    again = Recorder()
    out = run_training({**BASE, "total_steps": 10}, again, resume_state=rec.states[-1])
    assert again.metrics == [] and out["done"] is True and out["step"] == 10
    assert out["val_loss"] == final["val_loss"]
