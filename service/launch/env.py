"""The environment a driver process (study or curvature, local or Ray Job) starts with.

Its own module so the runners (``runner``, ``ray_jobs``) and the curvature launcher share it
without importing each other.
"""

from __future__ import annotations

import os

from service.config import Settings


def driver_env(settings: Settings) -> dict[str, str]:
    """The environment a driver inherits: the service's own settings, explicitly."""
    env = dict(os.environ)
    env.pop("PHITUNE_API_TOKEN", None)  # a driver never calls the API; don't hand it the key
    env["PHITUNE_DATA_DIR"] = str(settings.data_dir.absolute())
    env["PHITUNE_DATABASE_URL"] = settings.sqlalchemy_url
    if settings.dataset_dir is not None:
        env["PHITUNE_DATASET_DIR"] = str(settings.dataset_dir.absolute())
    # the same data roots (absolute) and memory budget the API checked the spec against
    env["PHITUNE_DATA_ROOTS"] = os.pathsep.join(settings.data_root_paths)
    env["PHITUNE_TRIAL_MEMORY_MB"] = f"{settings.trial_memory_mb:g}"
    if settings.ray_address:
        env["PHITUNE_RAY_ADDRESS"] = settings.ray_address
    if settings.ray_num_cpus is not None:
        env["PHITUNE_RAY_NUM_CPUS"] = str(settings.ray_num_cpus)
    env["PHITUNE_RAY_AUTH_MODE"] = settings.ray_auth_mode
    env["PHITUNE_RAY_DASHBOARD"] = "true" if settings.ray_dashboard else "false"
    # Tune saves its experiment state at most this often: a driver killed mid-study loses at
    # most this much bookkeeping, so a restored run does not repeat a finished trial.
    env["TUNE_GLOBAL_CHECKPOINT_S"] = f"{settings.tune_checkpoint_s:g}"
    # optional trackers (tuning.tracking): the driver's Settings read them back
    for name, value in (("PHITUNE_MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri),
                        ("PHITUNE_MLFLOW_EXPERIMENT", settings.mlflow_experiment),
                        ("PHITUNE_WANDB_PROJECT", settings.wandb_project)):
        if value:
            env[name] = value
    env["PHITUNE_WANDB_MODE"] = settings.wandb_mode
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
