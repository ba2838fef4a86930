"""Driver process of one study: ``python -m service.launch.study_driver <study-id>``.

Reads the stored request, connects to Ray (``PHITUNE_RAY_ADDRESS``, else a local Ray sized by
``PHITUNE_RAY_NUM_CPUS``), runs :func:`tuning.study.run_study` in this process's main thread,
and writes progress and the final result (or the error) to the store. Whatever happens, the
study ends in a terminal state: a driver never leaves it ``running``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.config import Settings
from service.launch.kinds import JOB_MARKER, STUDY
from service.launch.lifecycle import finalize_stopped
from service.launch.runner import spec_from_study, warm_start
from service.schemas import TERMINAL_STATUSES, StudyCreate
from service.store import Store, StudyRow, is_library_study
from service.store.grad_norms import save_grad_norms
from tuning.results import StudyResult, TrialRecord

logger = logging.getLogger("service.launch.study_driver")


class StoreSink:
    """`tuning`'s :class:`~tuning.results.StudySink`, writing into the service's store."""

    def __init__(self, store: Store, study_id: str, metric: str) -> None:
        self.store = store
        self.study_id = study_id
        self.metric = metric

    def on_start(self, *, dashboard_url: str | None) -> None:
        self.store.update_study(self.study_id, dashboard_url=dashboard_url)

    def on_trial(self, record: TrialRecord) -> None:
        value = record.metrics.get(self.metric)
        self.store.upsert_trial(
            self.study_id, record.trial_id, budget_steps=record.budget_steps,
            status=record.status, params=record.params, step=record.step,
            metrics=record.metrics, error=record.error, node_ip=record.node_ip,
            value=value if value is not None and math.isfinite(value) else None,
        )
        if record.grad_norms is not None:
            save_grad_norms(self.store, self.study_id, record.trial_id, record.grad_norms)

    def on_finish(self, result: StudyResult) -> None:
        logger.info("study %s: finished, best %s", self.study_id, result.best)


def total_steps_of(spec: StudyCreate, settings: Settings) -> int:
    """Budget in optimizer steps; epochs are converted with the dataset's real size."""
    if spec.budget.steps is not None:
        return spec.budget.steps
    from trainables.registry import get_dataset, steps_per_epoch

    assert spec.budget.epochs is not None
    bundle = get_dataset(spec.dataset, data_dir=str(settings.datasets_path),
                         data_roots=settings.data_root_paths, **spec.dataset_kwargs)
    return steps_for_epochs(spec.budget.epochs, steps_per_epoch(bundle, spec.batch_size))


def steps_for_epochs(epochs: float, steps_per_epoch: int) -> int:
    """The step budget of ``epochs`` passes, at least one step: the one conversion, used by
    the driver (real dataset) and the submit-time check (the registry's known size)."""
    return max(1, round(epochs * steps_per_epoch))


def configure_ray_auth(mode: str) -> None:
    """Ray ≥ 2.5x enables token auth on clusters started while a token exists
    (``~/.ray/auth_token``); a client must then say ``RAY_AUTH_MODE=token`` too. ``auto`` does
    that when a token is available, so the driver connects to such clusters out of the box."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if mode == "auto":
        has_token = bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(
            os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token")
        ).is_file()
        mode = "token" if has_token else ""
    if mode:
        os.environ["RAY_AUTH_MODE"] = mode


def init_ray(settings: Settings) -> str | None:
    """Connect to the configured cluster (or the shared local head ``phitune serve`` started)
    or start a local one; returns the dashboard URL.

    On a cluster the job's workers get the driver's job marker (``PHITUNE_JOB``) in their
    environment, so a cancel can find every process of the job on this machine. A
    per-study local Ray is announced on 127.0.0.1 with its dashboard on loopback (Ray 2.60's
    gRPC servers still listen on every interface; its token auth guards them).
    """
    import ray

    kwargs: dict[str, Any] = {"log_to_driver": False}
    job_marker = os.environ.get(JOB_MARKER)
    if settings.ray_address:
        if job_marker and settings.ray_address != "auto":  # a Ray Job has its runtime env
            kwargs["runtime_env"] = {"env_vars": {JOB_MARKER: job_marker}}
        context = ray.init(address=settings.ray_address, **kwargs)
    else:
        # "local": always a fresh local Ray, even if `ray start` left one running here
        context = ray.init(address="local", num_cpus=settings.ray_num_cpus,
                           include_dashboard=settings.ray_dashboard,
                           dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1",
                           **kwargs)
    url = getattr(context, "dashboard_url", None)
    if url and not url.startswith("http"):
        url = f"http://{url}"
    return url or None


def configure_trackers(settings: Settings) -> None:
    """W&B offline (``PHITUNE_WANDB_MODE``) also needs ``WANDB_MODE=offline`` in the driver's
    environment: Ray's W&B callback asks for an API key unless it says so. Set before Ray
    starts, so a per-study local Ray's workers inherit it too."""
    if settings.wandb_project and settings.wandb_mode == "offline":
        os.environ.setdefault("WANDB_MODE", "offline")


def run(study_id: str, settings: Settings) -> int:
    store = Store(settings.sqlalchemy_url, migrate=False)  # the API owns the schema
    row = store.get_study(study_id)
    if row is None:
        logger.error("study %s not found in %s", study_id, settings.sqlalchemy_url)
        return 2
    if row.status in TERMINAL_STATUSES:
        logger.info("study %s already %s", study_id, row.status)
        return 0
    if is_library_study(row):  # never queued, so never launched; refuse all the same
        logger.error("study %s is a library-mode study: the user's process runs it", study_id)
        return 2
    import ray

    from tuning.study import run_study

    try:
        request = StudyCreate.model_validate(row.spec)
        spec = spec_from_study(study_id, request, settings, total_steps_of(request, settings))
        if request.warm_start_from:
            spec = warm_start(spec, store, request.warm_start_from, as_of=row.created_at)
        if request.curvature:
            from service.store.history import history_points

            spec = dataclasses.replace(spec, history=tuple(history_points(store,
                                                                          exclude=study_id)))
        configure_trackers(settings)
        dashboard_url = init_ray(settings)
        if not store.mark_running(StudyRow, study_id):
            logger.info("study %s: cancelled while its driver started", study_id)
            return 0
        store.update_study(study_id, dashboard_url=dashboard_url)
        trainable = None  # built-in: tuning's uba_trainable
        if request.trainer == "external":  # agents train; each Ray trial waits for one
            from service.launch.external import external_trainable

            trainable = external_trainable(settings.sqlalchemy_url, study_id,
                                           settings.external_poll_s)
        result = run_study(spec, StoreSink(store, study_id, spec.metric), trainable=trainable,
                           dashboard_url=dashboard_url)
        store.finish_study(study_id, "succeeded", result=result.to_dict())
        return 0
    except BaseException as exc:  # noqa: BLE001 - the study must end in a terminal state
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            # A cancel marks the study first, then signals us. Any other stop (node drain,
            # pod eviction, Ctrl-C) leaves it running, resumable: the API's reconcile
            # relaunches a driver that restores the Tune experiments.
            current = store.get_study(study_id)
            if current is not None and current.status not in TERMINAL_STATUSES:
                logger.warning("study %s: driver stopped (%s); left resumable", study_id,
                               type(exc).__name__)
            raise
        logger.exception("study %s failed", study_id)
        store.finish_study(study_id, "failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        if ray.is_initialized():
            ray.shutdown()
        # Ended (succeeded, failed, cancelled): no trial may stay running, in the store or in
        # Optuna (a trial the searcher asked for before a restore, a cancel mid-trial).
        # Left resumable: the relaunched driver goes on with them.
        try:
            finalize_stopped(store, settings, STUDY, study_id)
        except Exception:  # noqa: BLE001 - reconcile finalises what is left
            logger.exception("study %s: finalising trials failed", study_id)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def driver_main(argv: list[str] | None, usage: str,
                run_fn: Callable[[str, Settings], int]) -> int:
    """Entry point shared by the study and curvature drivers: one id argument, logging, SIGTERM
    as SystemExit (so ``finally`` blocks shut Ray down), Ray auth before Ray is imported."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: {usage}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    settings = Settings()
    if settings.ray_address:
        # before Ray is imported: its config reads RAY_AUTH_MODE once. A local Ray enables
        # token auth by itself.
        configure_ray_auth(settings.ray_auth_mode)
    return run_fn(args[0], settings)


def main(argv: list[str] | None = None) -> int:
    return driver_main(argv, "python -m service.launch.study_driver <study-id>", run)


if __name__ == "__main__":
    sys.exit(main())
