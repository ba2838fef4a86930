"""Agent mode: a plain PyTorch training script that phitune tunes without importing it.

Run it under an agent of an external study (see the README, "Your own training code"):

    phitune agent STUDY_ID -- python examples/agent_digits.py

For each trial the agent runs this script with two environment variables:
``PHITUNE_TRIAL_FILE``, a JSON file with the run's horizon (``total_steps``), ``seed``, the
study's ``metric`` and ``lr_curve`` (the absolute learning rate of every update), and
``PHITUNE_RESULT_FILE``, where the script writes a JSON object with the metric. Nothing here
imports phitune: the only contract is the two files. The data are scikit-learn's handwritten
digits (read from its csv.gz, nothing downloaded), the model a logistic regression.

``--delay S`` sleeps S seconds after every update, to watch several agents share a study (the
tests use it to kill an agent mid-run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def load_digits(seed: int = 0) -> dict[str, torch.Tensor]:
    """scikit-learn's 1 797 digits (8x8, 0..16), a fixed 80/20 train/validation split."""
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


def train(trial: dict, data: dict[str, torch.Tensor], batch_size: int = 32,
          delay: float = 0.0) -> dict[str, float]:
    """``trial["total_steps"]`` SGD updates, update t at ``lr_curve[t - 1]``; the final
    validation metrics."""
    torch.set_num_threads(1)
    torch.manual_seed(trial["seed"])
    model = torch.nn.Linear(64, 10)
    lrs = trial["lr_curve"]
    opt = torch.optim.SGD(model.parameters(), lr=lrs[0], momentum=0.9)
    batches = torch.Generator().manual_seed(trial["seed"])
    x, y = data["x_train"], data["y_train"]
    for t in range(1, trial["total_steps"] + 1):
        for group in opt.param_groups:  # the schedule: absolute lr of update t
            group["lr"] = lrs[t - 1]
        idx = torch.randint(len(y), (batch_size,), generator=batches)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if delay:
            time.sleep(delay)
    with torch.no_grad():
        logits = model(data["x_val"])
        return {"val_loss": F.cross_entropy(logits, data["y_val"]).item(),
                "val_accuracy": (logits.argmax(1) == data["y_val"]).float().mean().item(),
                "train_loss": loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds to sleep after every update (default 0)")
    args = parser.parse_args()
    trial = json.loads(Path(os.environ["PHITUNE_TRIAL_FILE"]).read_text())
    metrics = train(trial, load_digits(), delay=args.delay)
    Path(os.environ["PHITUNE_RESULT_FILE"]).write_text(json.dumps(metrics))
    print(f"trial {trial['trial_id']}: {trial['metric']}={metrics[trial['metric']]:.4f}")


if __name__ == "__main__":
    main()
