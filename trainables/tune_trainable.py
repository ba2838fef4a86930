"""Ray Tune function trainable around :func:`trainables.loop.run_training`.

Ray 2.5x-2.6x: inside Tune use ``ray.tune.report`` / ``ray.tune.get_checkpoint`` /
``ray.tune.Checkpoint`` (``ray.train.report`` raises under the Train V2 default). Each report
at an eval point carries a checkpoint directory with one ``state.pt`` (model, optimizer,
scheduler, RNG and sampler state); when Tune restarts a failed trial
(``FailureConfig(max_failures=...)``) it hands that checkpoint back and the run continues at
the identical schedule position and batch.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from trainables.loop import run_training

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"


def save_state(state: dict[str, Any], directory: str | Path) -> Path:
    """Write a run_training checkpoint state into ``directory`` (plain tensors + primitives)."""
    path = Path(directory) / STATE_FILE
    torch.save(state, path)
    return path


def load_state(directory: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state`.

    ``weights_only=True``: a checkpoint is data, never code, even if the storage path is
    shared with other users of the cluster.
    """
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def tune_report(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
    """``run_training``'s report callback for Tune: metrics plus an optional checkpoint."""
    from ray import tune

    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="phitune-ckpt-") as tmp:
        save_state(state, tmp)
        # Tune copies the directory into the trial's storage before report() returns.
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def restored_state() -> dict[str, Any] | None:
    """The state of the checkpoint Tune restored this trial from, if any."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        state = load_state(directory)
    logger.info("trial restored from checkpoint at step %s", state.get("step"))
    return state


def uba_trainable(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: train one trial config (see ``run_training``) and report.

    Use with ``tune.with_resources(uba_trainable, {"cpu": c, "gpu": g})``; a fractional ``g``
    packs several small trials on one GPU (each sees it as ``cuda:0``). Errors, including
    :class:`trainables.errors.DivergedError`, propagate so Tune records the trial as errored
    with the reason.
    """
    run_training(config, tune_report, resume_state=restored_state())
