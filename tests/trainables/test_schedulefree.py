"""Schedule-free optimizers in the trial loop: they learn, evaluate at their averaged weights
(BatchNorm recalibrated there), leave training untouched by evaluation, resume exactly, and a
scheduled config is refused with the field named."""

from __future__ import annotations

import pytest
import torch

from tests.trainables.test_loop import Recorder  # the report recorder of the loop tests
from trainables import ConfigError, run_training
from trainables.config import TrainConfig

pytest.importorskip("schedulefree")

SF = {
    "model": "mlp",
    "model_kwargs": {"hidden_sizes": [32]},
    "dataset": "digits",
    "optimizer": "sgd_schedulefree",
    "lr": 1.0,
    "momentum": 0.9,
    "batch_size": 32,
    "total_steps": 60,
    "eval_every": 60,
    "schedule": "constant",
    "schedule_params": {"warmup_steps": 5},
    "seed": 0,
    "device": "cpu",
    "checkpoint_every": -1,
}


@pytest.mark.parametrize("optimizer,lr", [("sgd_schedulefree", 1.0),
                                          ("adamw_schedulefree", 0.01)])
def test_schedule_free_optimizers_learn_real_digits(optimizer, lr):
    final = run_training({**SF, "optimizer": optimizer, "lr": lr}, lambda m, s: None)
    assert final["val_accuracy"] > 0.85
    assert final["lr"] == pytest.approx(lr)  # constant after the optimizer's own warmup


def test_warmup_lives_in_the_optimizer_not_in_the_lr_schedule():
    """The LR scheduler stays flat at η_max; the optimizer scales its steps during warmup
    (warming up twice would square the ramp)."""
    rec = Recorder()
    run_training({**SF, "total_steps": 20, "eval_every": 1, "schedule_params":
                  {"warmup_steps": 10}}, rec)
    assert {m["lr"] for m in rec.metrics} == {1.0}


def test_evaluation_does_not_change_the_training_run():
    """Swapping the averaged weights in and out for every evaluation leaves the training
    trajectory as it is: the final evaluation matches a run that evaluates only at the end."""
    often, once = Recorder(), Recorder()
    run_training({**SF, "eval_every": 7}, often)
    run_training(SF, once)
    assert often.metrics[-1]["val_loss"] == pytest.approx(once.metrics[-1]["val_loss"],
                                                          rel=1e-5)
    assert often.metrics[-1]["train_loss"] != once.metrics[-1]["train_loss"]  # other windows


def test_metrics_are_those_of_the_averaged_weights():
    """The reported val_loss is the model at the schedule-free average x, not at the gradient
    point y: evaluating the checkpointed (train-mode, y) weights gives another number."""
    from trainables.loop import _prepare, evaluate

    rec = Recorder()
    final = run_training({**SF, "checkpoint_every": 0}, rec)
    cfg = TrainConfig.from_mapping({**SF, "checkpoint_every": 0})
    p = _prepare(cfg, None)
    p.model.load_state_dict(rec.states[-1]["model"])  # y, the point gradients were taken at
    at_y = evaluate(p.forward, p.model, p.bundle, cfg, p.device)
    assert at_y["val_loss"] != pytest.approx(final["val_loss"], rel=1e-6)


def test_batchnorm_statistics_are_recomputed_at_the_averaged_weights():
    """A BatchNorm CNN: the reported metrics are the schedulefree README's recipe (average
    weights swapped in, BatchNorm statistics recomputed over the first training batches)."""
    from trainables.loop import _BN_RECALIBRATION_BATCHES, _prepare, evaluate

    cfg_d = {**SF, "model": "cnn", "model_kwargs": {"width": 8}, "lr": 0.5, "total_steps": 80,
             "eval_every": 80, "checkpoint_every": 0}
    rec = Recorder()
    final = run_training(cfg_d, rec)
    assert final["val_accuracy"] > 0.85

    def at_average() -> float:
        cfg = TrainConfig.from_mapping(cfg_d)
        p = _prepare(cfg, None)
        state = rec.states[-1]
        p.model.load_state_dict(state["model"])
        p.optimizer.load_state_dict(state["optimizer"])
        p.optimizer.eval()
        norms = [m for m in p.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        p.model.train()
        bs = cfg.batch_size
        with torch.no_grad():
            for i in range(min(_BN_RECALIBRATION_BATCHES, p.bundle.num_train // bs)):
                p.model(p.bundle.train_x[i * bs:(i + 1) * bs])
        return evaluate(p.forward, p.model, p.bundle, cfg, p.device)["val_loss"]

    assert final["val_loss"] == pytest.approx(at_average(), rel=1e-6)


def test_interrupted_and_resumed_schedule_free_run_is_identical():
    cfg = {**SF, "optimizer": "adamw_schedulefree", "lr": 0.01, "total_steps": 40,
           "eval_every": 5, "checkpoint_every": 0}
    full = Recorder()
    run_training(cfg, full)
    crashed = Recorder(stop_after=15)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, crashed)
    resumed = Recorder()
    run_training(cfg, resumed, resume_state=crashed.states[-1])
    for a, b in zip(full.metrics, crashed.metrics + resumed.metrics, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
    for k, v in full.states[-1]["model"].items():
        assert torch.equal(v, resumed.states[-1]["model"][k]), k


def test_a_schedule_with_a_schedule_free_optimizer_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"schedule='uba'.*'constant'"):
        run_training({**SF, "schedule": "uba"}, lambda m, s: None)
    with pytest.raises(ConfigError, match="optimizer='lion'"):
        run_training({**SF, "optimizer": "lion"}, lambda m, s: None)
