"""Launch studies: map the stored request onto `tuning`'s frozen specs and start a driver.

A driver is a separate process per study (``python -m service.driver <id>``) because Ray Tune
must own the main thread of its process, and because the API can then restart without killing
studies. :func:`spec_from_study` is the single schema → spec mapping.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from service.config import Settings
from service.schemas import StudyCreate
from service.store import Store
from tuning.specs import Resources, SearchSpace, StudySpec, TrainSpec

logger = logging.getLogger(__name__)


def spec_from_study(study_id: str, spec: StudyCreate, settings: Settings,
                    total_steps: int) -> StudySpec:
    """Map a validated ``StudyCreate`` to `tuning`'s :class:`StudySpec` (``total_steps`` already
    converted from epochs when the budget was given in epochs)."""
    opt = spec.optimizer
    train = TrainSpec(
        model=spec.model,
        dataset=spec.dataset,
        optimizer=opt.name,
        lr=opt.lr,
        momentum=opt.momentum,
        nesterov=opt.nesterov,
        weight_decay=opt.weight_decay,
        eta_min=spec.eta_min,
        batch_size=spec.batch_size,
        eval_every=spec.eval_every,
        metric=spec.metric,
        model_kwargs=dict(spec.model_kwargs),
        dataset_kwargs=dict(spec.dataset_kwargs),
        data_dir=str(settings.datasets_path),
    )
    search = SearchSpace(
        phi_min=spec.search.phi.min,
        phi_max=spec.search.phi.max,
        phases_min=spec.search.phases.min,
        phases_max=spec.search.phases.max,
        eta_max_min=spec.search.eta_max.min if spec.search.eta_max else None,
        eta_max_max=spec.search.eta_max.max if spec.search.eta_max else None,
        variant=spec.search.variant,
    )
    return StudySpec(
        study_id=study_id,
        train=train,
        total_steps=total_steps,
        search=search,
        budget_fractions=tuple(spec.budget.fractions),
        num_trials=spec.num_trials,
        max_concurrent_trials=spec.max_concurrent_trials,
        resources=Resources(cpu=spec.resources.cpu, gpu=spec.resources.gpu),
        early_stopping=spec.early_stopping,
        seed=spec.seed,
        storage_path=str(settings.ray_results_path / study_id),
    )


def driver_env(settings: Settings) -> dict[str, str]:
    """The environment a driver inherits: the service's own settings, explicitly."""
    env = dict(os.environ)
    env["PHITUNE_DATA_DIR"] = str(settings.data_dir.absolute())
    env["PHITUNE_DATABASE_URL"] = settings.sqlalchemy_url
    if settings.dataset_dir is not None:
        env["PHITUNE_DATASET_DIR"] = str(settings.dataset_dir.absolute())
    if settings.ray_address:
        env["PHITUNE_RAY_ADDRESS"] = settings.ray_address
    if settings.ray_num_cpus is not None:
        env["PHITUNE_RAY_NUM_CPUS"] = str(settings.ray_num_cpus)
    env["PHITUNE_RAY_AUTH_MODE"] = settings.ray_auth_mode
    env["PHITUNE_RAY_DASHBOARD"] = "true" if settings.ray_dashboard else "false"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class LocalProcessRunner:
    """Starts each study's driver as a detached local process (its own session, so killing the
    API does not kill it) and records its pid for cancellation and reconciliation."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def log_path(self, study_id: str) -> Path:
        return self.settings.logs_path / f"{study_id}.log"

    def launch(self, study_id: str) -> int:
        self.settings.logs_path.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(study_id), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "service.driver", study_id],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=driver_env(self.settings),
                start_new_session=True,
            )
        self.store.update_study(study_id, driver_pid=proc.pid)
        logger.info("study %s: driver pid %d, log %s", study_id, proc.pid,
                    self.log_path(study_id))
        return proc.pid

    def cancel(self, study_id: str, pid: int | None) -> None:
        """Stop a driver and everything it started (its process group: Ray workers included
        for a local Ray)."""
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return

    @staticmethod
    def is_alive(pid: int | None) -> bool:
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # a zombie child of this process still answers kill(0); reap it if it is ours
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            return done == 0
        except ChildProcessError:
            return Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"
