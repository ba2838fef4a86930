"""Library mode: tune the learning-rate schedule of your own PyTorch training loop.

Run:  python examples/library_digits.py   (a fresh local Ray; 4.5 min measured on 2 shared
      CPUs; run it again and every rung is restored from /tmp/phitune-library, 12 s)

Your code keeps its model, data and loop; it only takes three things from the trial phitune
hands it: the horizon (``trial.total_steps``), the schedule (``trial.scheduler(optimizer)``,
whose peak is ``trial.lr``) and ``trial.report(...)`` with the metric at the last step. The
data here are scikit-learn's handwritten digits (read from its csv.gz, nothing downloaded),
the model a logistic regression; nothing below imports phitune's own models or datasets.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tuning.library import tune_schedule


def load_digits(seed: int = 0) -> dict[str, torch.Tensor]:
    """scikit-learn's 1 797 digits (8x8, 0..16), 80/20 train/validation split."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs scikit-learn's data file: pip install --no-deps scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets/data/digits.csv.gz"
    arr = np.loadtxt(path, delimiter=",")
    x = torch.tensor(arr[:, :-1] / 16.0, dtype=torch.float32)
    y = torch.tensor(arr[:, -1], dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = len(y) // 5
    va, tr = perm[:n_val], perm[n_val:]
    return {"x_train": x[tr], "y_train": y[tr], "x_val": x[va], "y_val": y[va]}


def train_fn(trial, data: dict[str, torch.Tensor], batch_size: int = 32) -> None:
    """One run: ``trial.total_steps`` SGD updates along the trial's schedule."""
    torch.set_num_threads(1)  # one trial per CPU; Ray runs several side by side
    torch.manual_seed(trial.seed)
    model = torch.nn.Linear(64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=trial.lr, momentum=0.9)
    sched = trial.scheduler(opt)  # sched.step() after every opt.step()
    batches = torch.Generator().manual_seed(trial.seed)
    start = 0
    state = trial.checkpoint  # a trial Ray restarts resumes here, on the same schedule
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        batches.set_state(state["batches"])
        start = state["step"]
    x, y = data["x_train"], data["y_train"]
    eval_every = max(1, trial.total_steps // 5)
    for step in range(start + 1, trial.total_steps + 1):
        idx = torch.randint(len(y), (batch_size,), generator=batches)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % eval_every == 0 or step == trial.total_steps:
            with torch.no_grad():
                logits = model(data["x_val"])
                val_loss = F.cross_entropy(logits, data["y_val"]).item()
                val_acc = (logits.argmax(1) == data["y_val"]).float().mean().item()
            trial.report(
                {"step": step, "val_loss": val_loss, "val_accuracy": val_acc,
                 "train_loss": loss.item()},
                checkpoint={"step": step, "model": model.state_dict(),
                            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                            "batches": batches.get_state()})


def main() -> None:
    result = tune_schedule(
        train_fn, with_parameters={"data": load_digits()},  # data go through Ray's object store
        budget_steps=200, optimizer_lr=0.1, metric="val_loss",
        budget_fractions=(0.25, 0.5, 1.0), num_trials=8, compare=["cosine"], seed=0,
        resources={"cpu": 1}, storage_path="/tmp/phitune-library", name="digits-logreg")
    best = result.best
    print(f"best at {best.total_steps} steps: phi={best.phi:.3g} phases={best.phases} "
          f"eta_max={best.eta_max:.3g} val_loss={best.value:.4f}")
    for row in result.baselines:  # every arm tuned by the same ladder, same eval seeds
        if row.budget_steps == best.total_steps and row.mean is not None:
            print(f"  {row.schedule:>8} (eta_max={row.eta_max:.3g}): val_loss={row.mean:.4f}")
    if result.winner is not None:
        print(f"winner at {result.winner.budget_steps} steps: {result.winner.arm}")
    for rung in result.rungs:
        print(f"rung {rung.steps:>4} steps: {rung.num_completed}/{rung.num_trials} finished")


if __name__ == "__main__":
    main()
