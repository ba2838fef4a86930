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

from trainables.autolrs import AUTOLRS, run_autolrs
from trainables.config import TrainConfig
from trainables.loop import run_training
from trainables.preflight import memory_limit

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
#: Key under which a Tune param_space carries the trial config dict (one grid over candidates).
TRIAL_KEY = "trial"


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

    ``config`` is :meth:`TrainConfig.to_dict` itself, or holds it under ``"trial"`` (what the
    search's grid over candidates varies, next to bookkeeping keys); it becomes a
    :class:`TrainConfig` again here, the other side of the Ray boundary. A config with
    ``schedule == "autolrs"`` is an AutoLRS run (:func:`trainables.autolrs.run_autolrs`,
    which picks its lr stage by stage and reports ``trained_steps_total``); every other is
    :func:`run_training`, so one trainable serves every arm of a study.

    Use with ``tune.with_resources(uba_trainable, {"cpu": c, "gpu": g})``; a fractional ``g``
    packs several small trials on one GPU (each sees it as ``cuda:0``). Errors, including
    :class:`trainables.errors.DivergedError`, propagate so Tune records the trial as errored
    with the reason. ``memory_limit_mb`` in the config caps the trial's own allocations
    (CPU; :func:`trainables.preflight.memory_limit`), so one greedy trial fails alone.
    """
    cfg = TrainConfig.from_mapping(config.get(TRIAL_KEY, config))
    on_cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    with memory_limit(cfg.memory_limit_mb, device=torch.device("cpu" if on_cpu else "cuda")):
        run = run_autolrs if cfg.schedule == AUTOLRS else run_training
        run(cfg, tune_report, resume_state=restored_state())
