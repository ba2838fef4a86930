"""Optional experiment trackers: Ray's MLflow and W&B logger callbacks for every rung.

Why Ray's callbacks and not calls in the trainable: they log each trial's reported metrics
and config from the driver side, so the training loop stays tracker-free, a restored
experiment keeps its callbacks (they are part of its run config), and each tracker is one
optional package (``phitune[mlflow]``, ``phitune[wandb]``) that only a configured study
imports.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from tuning.specs import TrackingSpec


class TrackerUnavailableError(RuntimeError):
    """A tracker is configured but its package is not installed where the driver runs."""


def _require(module: str, what: str, extra: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise TrackerUnavailableError(
            f"{what} is configured but {module} is not installed ({exc}): "
            f"pip install 'phitune[{extra}]'") from None


def mlflow_experiment_name(tracking: TrackingSpec, study_id: str) -> str:
    """The MLflow experiment a study logs to: the configured one, else ``phitune-<study id>``."""
    return tracking.mlflow_experiment or f"phitune-{study_id}"


def tracking_callbacks(tracking: TrackingSpec, study_id: str, experiment: str,
                       storage_path: str = "") -> list[Any]:
    """Logger callbacks for the Tune experiment ``experiment`` of study ``study_id``: one MLflow
    run / W&B run per trial, tagged with the study and the experiment (the rung).

    W&B runs are written under ``<storage_path>/wandb`` (beside the TensorBoard files):
    Ray's default, the trial's driver-side folder, is synced to the storage before the
    logging actor has finished its run, which leaves a truncated copy there."""
    callbacks: list[Any] = []
    if tracking.mlflow_tracking_uri:
        _require("mlflow", f"MLflow logging (tracking URI {tracking.mlflow_tracking_uri})",
                 "mlflow")
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(MLflowLoggerCallback(
            tracking_uri=tracking.mlflow_tracking_uri,
            experiment_name=mlflow_experiment_name(tracking, study_id),
            tags={"phitune.study_id": study_id, "phitune.experiment": experiment}))
    if tracking.wandb_project:
        _require("wandb", f"W&B logging (project {tracking.wandb_project})", "wandb")
        from ray.air.integrations.wandb import WandbLoggerCallback

        kwargs: dict[str, Any] = {}
        if storage_path:
            os.makedirs(storage_path, exist_ok=True)
            kwargs["dir"] = storage_path
        callbacks.append(WandbLoggerCallback(
            project=tracking.wandb_project, group=study_id, mode=tracking.wandb_mode,
            tags=[experiment], **kwargs))
    return callbacks
