"""Launch studies: map the stored request onto `tuning`'s frozen specs and start a driver.

A driver is a separate process per study (``python -m service.launch.study_driver <id>``) because Ray Tune
must own the main thread of its process, and because the API can then restart without killing
studies. :func:`spec_from_study` is the single schema → spec mapping.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Protocol

from service.config import Settings
from service.launch.env import driver_env
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
        compare=tuple(spec.compare),
        seeds=spec.seeds,
        compare_eta_max=tuple(spec.compare_eta_max),
        target=spec.target,
        curvature=spec.curvature,
        optuna_storage_url=settings.sqlalchemy_url if settings.optuna_in_store else None,
    )


class Runner(Protocol):
    """Starts, stops and watches study drivers (a local process or a Ray Job)."""

    def launch(self, study_id: str) -> str: ...

    def cancel(self, study_id: str, pid: int | None, job_id: str | None = None) -> None: ...

    def driver_alive(self, pid: int | None, job_id: str | None) -> bool: ...

    def cleanup(self, pid: int | None, job_id: str | None) -> None: ...

    def log_tail(self, study_id: str, job_id: str | None, chars: int = 2000) -> str: ...


def make_runner(settings: Settings, store: Store) -> Runner:
    """``PHITUNE_RUNNER``: ``local`` (default) or ``ray-job`` (needs ``PHITUNE_RAY_ADDRESS``
    and the cluster's dashboard/Jobs address)."""
    if settings.runner == "ray-job":
        from service.launch.ray_jobs import RayJobRunner

        return RayJobRunner(settings, store)
    return LocalProcessRunner(settings, store)


class LocalProcessRunner:
    """Starts each study's driver as a detached local process (its own session, so killing the
    API does not kill it) and records its pid for cancellation and reconciliation."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def log_path(self, study_id: str) -> Path:
        return self.settings.logs_path / f"{study_id}.log"

    def launch(self, study_id: str) -> str:
        self.settings.logs_path.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(study_id), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "service.launch.study_driver", study_id],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=driver_env(self.settings),
                start_new_session=True,
            )
        launches = self.store.record_launch(study_id, pid=proc.pid)
        logger.info("study %s: driver pid %d (launch %d), log %s", study_id, proc.pid, launches,
                    self.log_path(study_id))
        return str(proc.pid)

    def cancel(self, study_id: str, pid: int | None, job_id: str | None = None) -> None:
        """Stop a driver and everything it started, without blocking the request.

        SIGTERM to the driver's process group lets it shut Ray down (a remote cluster then
        kills the trials it owned); after ``cancel_grace_s`` every process still in the
        driver's *session* gets SIGKILL: a local Ray's workers sit in their own process
        groups but in the driver's session, and its agents outlive a killed driver.
        """
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        threading.Thread(target=self._escalate, args=(study_id, pid), daemon=True,
                         name=f"cancel-{study_id[:8]}").start()

    def _escalate(self, study_id: str, pid: int) -> None:
        deadline = time.monotonic() + self.settings.cancel_grace_s
        while time.monotonic() < deadline:
            if not session_pids(pid):
                self.is_alive(pid)  # reap our zombie
                return
            time.sleep(0.2)
        left = kill_session(pid)
        self.is_alive(pid)
        logger.warning("study %s: SIGKILLed %d processes left after %.1f s", study_id, left,
                       self.settings.cancel_grace_s)

    def driver_alive(self, pid: int | None, job_id: str | None) -> bool:
        return self.is_alive(pid)

    def cleanup(self, pid: int | None, job_id: str | None) -> None:
        """Kill what a dead driver left behind (a local Ray's agents survive a SIGKILLed
        driver and hold its ports and memory)."""
        if pid is not None:
            left = kill_session(pid)
            if left:
                logger.warning("killed %d leftover processes of dead driver %d", left, pid)

    def log_tail(self, study_id: str, job_id: str | None, chars: int = 2000) -> str:
        try:
            with open(self.log_path(study_id), "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - chars))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

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


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid`` (the driver started it with setsid)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state ppid pgrp session ...
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def kill_session(sid: int) -> int:
    """SIGKILL every process of session ``sid``; returns how many were signalled."""
    count = 0
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
            count += 1
        except (ProcessLookupError, PermissionError):
            pass
    return count
