"""Launch jobs: map the stored request onto `tuning`'s frozen specs and start a driver.

A driver is a separate process per job (``python -m service.launch.study_driver <id>``, or
``curvature_driver``) because Ray Tune must own the main thread of its process, and because
the API can then restart without killing studies. :func:`spec_from_study` and
:func:`curvature_spec_from_request` are the schema → spec mappings, one per kind of job.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from service.config import Settings
from service.launch.env import driver_env
from service.launch.kinds import JOB_MARKER, DriverRef, JobKind, marker
from service.schemas import TERMINAL_STATUSES, CurvatureCreate, PositiveRange, StudyCreate
from service.store import Store
from trainables.config import SCHEDULED_LR_FACTORS, TrainConfig
from tuning.specs import (
    AutoLRSSettings,
    LadderSpec,
    Resources,
    SearchSpace,
    StudySpec,
    TrackingSpec,
)

if TYPE_CHECKING:
    from tuning.phi_from_curvature import CurvatureSpec

logger = logging.getLogger(__name__)


def spec_from_study(study_id: str, spec: StudyCreate, settings: Settings,
                    total_steps: int) -> StudySpec:
    """Map a validated ``StudyCreate`` to `tuning`'s :class:`StudySpec` (``total_steps`` already
    converted from epochs when the budget was given in epochs)."""
    opt = spec.optimizer
    external = spec.trainer == "external"
    if external:  # agents train: no registry entry, no memory cap of the server's trials
        from trainables.function_trial import USER_FUNCTION
    train = TrainConfig(
        model=USER_FUNCTION if external else spec.model,  # type: ignore[arg-type]
        dataset=USER_FUNCTION if external else spec.dataset,  # type: ignore[arg-type]
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
        data_roots=settings.data_root_paths,
        memory_limit_mb=None if external else settings.trial_memory_mb or None,
    )
    # η_max: searched by default in [¼, 4]× the optimizer's lr; absolute bounds, other factors,
    # or "fixed" / a number (η_max fixed there) as the spec says
    eta = spec.search.eta_max
    eta_range: tuple[float, float] | None = None
    factors: tuple[float, float] | None = SCHEDULED_LR_FACTORS
    if isinstance(eta, PositiveRange):
        eta_range = (eta.min, eta.max)
    elif eta == "fixed":
        factors = None
    elif isinstance(eta, float | int):
        factors = None
        train = dataclasses.replace(train, lr=float(eta))
    elif spec.search.eta_max_scale is not None:  # relative to the optimizer's lr
        factors = (spec.search.eta_max_scale.min, spec.search.eta_max_scale.max)
    warmup = spec.search.warmup_steps  # steps of the full budget -> fractions of each run
    w_min, w_max = (warmup, warmup) if isinstance(warmup, int) else (warmup.min, warmup.max)
    if w_max >= total_steps:
        raise ValueError(f"search.warmup_steps: {w_max} must be < the budget of {total_steps} "
                         "steps")
    search = SearchSpace(
        phi_min=spec.search.phi.min,
        phi_max=spec.search.phi.max,
        phases_min=spec.search.phases.min,
        phases_max=spec.search.phases.max,
        eta_max_min=eta_range[0] if eta_range else None,
        eta_max_max=eta_range[1] if eta_range else None,
        eta_max_factors=factors,
        variant=spec.search.variant,
        sampler=spec.search.sampler,
        phi_grid=tuple(spec.search.phi_grid),
        warmup_min=w_min / total_steps,
        warmup_max=w_max / total_steps,
    )
    lad = spec.ladder
    return StudySpec(
        study_id=study_id,
        train=train,
        total_steps=total_steps,
        search=search,
        budget_fractions=tuple(spec.budget.fractions),
        num_trials=spec.num_trials,
        max_concurrent_trials=spec.max_concurrent_trials,
        resources=_external_resources() if external else Resources(
            cpu=spec.resources.cpu, gpu=spec.resources.gpu, memory_mb=settings.trial_memory_mb),
        method="asha" if spec.early_stopping else spec.method,
        ladder=LadderSpec(eta=lad.eta, min_fraction=lad.min_fraction, rungs=lad.rungs,
                          brackets=lad.brackets, iterations=lad.iterations),
        finalists=spec.finalists,
        finalist_seeds=spec.finalist_seeds,
        seed=spec.seed,
        max_failed_trials=spec.max_failed_trials,
        storage_path=str(settings.ray_results_path / study_id),
        compare=tuple(spec.compare),
        seeds=spec.seeds,
        compare_eta_max=tuple(spec.compare_eta_max),
        compare_tuning=spec.compare_tuning,
        autolrs=AutoLRSSettings(**spec.autolrs.model_dump()),
        refine=spec.refine,
        target=spec.target,
        curvature=spec.curvature,
        optuna_storage_url=settings.sqlalchemy_url if settings.optuna_in_store else None,
        tracking=TrackingSpec(mlflow_tracking_uri=settings.mlflow_tracking_uri,
                              mlflow_experiment=settings.mlflow_experiment,
                              wandb_project=settings.wandb_project,
                              wandb_mode=settings.wandb_mode),
    )


def _external_resources() -> Resources:
    """An external study's Ray trials are proxies that wait for agents
    (:mod:`service.launch.external`): they reserve next to nothing."""
    from service.launch.external import PROXY_RESOURCES

    return Resources(cpu=PROXY_RESOURCES["cpu"], gpu=PROXY_RESOURCES["gpu"], memory_mb=0)


#: Searched parameters a warm start carries over (φ, phases, η_max when it was searched).
_WARM_KEYS = ("phi", "phases", "lr")


def warm_start_points(store: Store, source_id: str, mode: str, limit: int,
                      as_of: datetime | None = None) -> list[dict]:
    """The ``limit`` best search candidates of study ``source_id``, best first.

    Only search trials that trained to the longest horizon the source reached count (values
    of shorter horizons or of stopped runs do not rank schedules truthfully, see the search
    design); each point is its ``phi``/``phases``/``lr``. ``as_of``: only trials finished by
    then (the warm-started study's submission), so a relaunched or extended driver sees the
    same points even after the source study was extended itself.
    """
    rows = [t for t in store.list_trials(source_id, status="terminated")
            if t.value is not None and t.params.get("kind", "search") == "search"
            and "phi" in t.params and (as_of is None or t.updated_at <= as_of)]
    if not rows:
        return []
    top = max(t.budget_steps for t in rows)
    rows = sorted((t for t in rows if t.budget_steps == top), key=lambda t: t.value,
                  reverse=mode == "max")
    points: list[dict] = []
    for t in rows:
        point = {k: t.params[k] for k in _WARM_KEYS if k in t.params}
        if point not in points:
            points.append(point)
    return points[:limit]


def warm_start(spec: StudySpec, store: Store, source_id: str,
               as_of: datetime | None = None) -> StudySpec:
    """``spec`` whose search first evaluates the best points of study ``source_id``
    (``warm_start_from``): up to half of the first iteration's candidates (with one ladder
    iteration: half of ``num_trials``), the rest left to the sampler. Counted on the first
    iteration, which an extension (``:extend``) never changes, so the extended study
    re-plans exactly the iterations it restores."""
    first = spec.ladders()[0].rungs[0].candidates if spec.method == "ladder" else spec.num_trials
    points = warm_start_points(store, source_id, spec.mode, max(1, first // 2), as_of)
    logger.info("study %s: warm start from %s with %d points", spec.study_id, source_id,
                len(points))
    return dataclasses.replace(spec, extra_points=(*points, *spec.extra_points))


@dataclass(frozen=True)
class CurvatureJobSpec:
    """What a curvature driver runs, mapped once from a ``CurvatureCreate``: the model/data
    (a :class:`TrainConfig` like a study's), the per-task resources, the estimator's work and,
    when ``at_steps`` asks for a timeline, the UBA run to measure along."""

    train: TrainConfig
    resources: Resources
    curv: CurvatureSpec
    at_steps: tuple[int, ...] = ()
    timeline_train: TrainConfig | None = None
    train_steps: int = 1
    phi: float = 5.0
    phases: int = 1


def curvature_spec_from_request(req: CurvatureCreate, settings: Settings) -> CurvatureJobSpec:
    """Map a validated ``CurvatureCreate`` to what :mod:`tuning.phi_from_curvature` takes (the
    curvature counterpart of :func:`spec_from_study`)."""
    from tuning.phi_from_curvature import CurvatureSpec

    train = TrainConfig(model=req.model, dataset=req.dataset, optimizer=req.optimizer,
                        model_kwargs=dict(req.model_kwargs),
                        dataset_kwargs=dict(req.dataset_kwargs),
                        data_dir=str(settings.datasets_path),
                        data_roots=settings.data_root_paths)
    curv = CurvatureSpec(num_batches=req.num_batches, batch_size=req.batch_size,
                         lanczos_steps=req.lanczos_steps, num_probes=req.num_probes,
                         ggn=req.ggn, seed=req.seed)
    timeline = dataclasses.replace(train, lr=req.lr, batch_size=req.train_batch_size) \
        if req.at_steps else None
    return CurvatureJobSpec(
        train=train, resources=Resources(cpu=req.resources.cpu, gpu=req.resources.gpu,
                                         memory_mb=settings.trial_memory_mb),
        curv=curv, at_steps=tuple(req.at_steps), timeline_train=timeline,
        train_steps=req.train_steps or 1, phi=req.phi, phases=req.phases)


class Runner(Protocol):
    """Starts, stops and watches job drivers (a local process or a Ray Job), for every
    :class:`~service.launch.kinds.JobKind`."""

    def launch(self, kind: JobKind, job_id: str) -> str: ...

    def cancel(self, kind: JobKind, job_id: str, driver: DriverRef,
               after: Callable[[], None] | None = None) -> None: ...

    def driver_alive(self, driver: DriverRef) -> bool: ...

    def cleanup(self, kind: JobKind, job_id: str, driver: DriverRef) -> None: ...

    def log_tail(self, kind: JobKind, job_id: str, driver: DriverRef,
                 chars: int = 2000) -> str: ...


def make_runner(settings: Settings, store: Store) -> Runner:
    """``PHITUNE_RUNNER``: ``local`` (default) or ``ray-job`` (needs ``PHITUNE_RAY_ADDRESS``
    and the cluster's dashboard/Jobs address)."""
    if settings.runner == "ray-job":
        from service.launch.ray_jobs import RayJobRunner

        return RayJobRunner(settings, store)
    return LocalProcessRunner(settings, store)


class LocalProcessRunner:
    """Starts each job's driver as a detached local process (its own session, so killing the
    API does not kill it) and records its pid and start time for cancellation and
    reconciliation.

    Every process of a job carries :data:`JOB_MARKER` ``=<kind>:<id>`` in its environment:
    the driver, a per-study local Ray (its raylet and workers inherit the driver's
    environment) and, on a shared Ray head, the job's workers (the driver passes the marker
    as its runtime environment). Cancel and cleanup end the marked processes too, so a
    cancel that races the driver's start still leaves nothing of the job behind.
    """

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def log_path(self, kind: JobKind, job_id: str) -> Path:
        return self.settings.logs_path / kind.log_name(job_id)

    def launch(self, kind: JobKind, job_id: str) -> str:
        self.settings.logs_path.mkdir(parents=True, exist_ok=True)
        env = driver_env(self.settings)
        env[JOB_MARKER] = marker(kind, job_id)
        with open(self.log_path(kind, job_id), "ab") as log:
            proc = subprocess.Popen(
                kind.entrypoint(sys.executable, job_id),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        driver = DriverRef(pid=proc.pid, start=process_start(proc.pid))
        launches = self.store.record_launch(job_id, pid=proc.pid, driver_start=driver.start,
                                            table=kind.table)
        logger.info("%s %s: driver pid %d (launch %d), log %s", kind.name, job_id, proc.pid,
                    launches, self.log_path(kind, job_id))
        # A cancel that ran between Popen and record_launch saw no pid to stop; it marked the
        # job first, so reading the status after recording the pid catches it.
        row = self.store.get_job(kind.table, job_id)
        if row is not None and row.status in TERMINAL_STATUSES:
            logger.warning("%s %s: %s while its driver started; stopping it", kind.name,
                           job_id, row.status)
            self.cancel(kind, job_id, driver)
        return str(proc.pid)

    def cancel(self, kind: JobKind, job_id: str, driver: DriverRef,
               after: Callable[[], None] | None = None) -> None:
        """Stop a driver and everything it started, without blocking the request.

        SIGTERM to the driver's process group lets it shut Ray down and finalise its trials;
        after ``cancel_grace_s`` every process still in the driver's *session* (a local Ray's
        workers sit in their own process groups but in the driver's session, and its agents
        outlive a killed driver) or marked with the job gets SIGKILL. ``after`` runs once
        they are gone (in a background thread).
        """
        if driver.pid is not None and is_driver(driver):
            try:
                os.killpg(driver.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        threading.Thread(target=self._escalate, args=(kind, job_id, driver, after),
                         daemon=True, name=f"cancel-{job_id[:8]}").start()

    def _escalate(self, kind: JobKind, job_id: str, driver: DriverRef,
                  after: Callable[[], None] | None) -> None:
        job_marker = marker(kind, job_id)
        deadline = time.monotonic() + self.settings.cancel_grace_s
        while time.monotonic() < deadline:
            if not self._leftovers(driver, job_marker):
                break
            time.sleep(0.2)
        else:
            left = self._kill_leftovers(driver, job_marker)
            logger.warning("%s %s: SIGKILLed %d processes left after %.1f s", kind.name,
                           job_id, left, self.settings.cancel_grace_s)
        if driver.pid is not None:
            self.is_alive(driver.pid)  # reap our zombie
        if after is not None:
            try:
                after()
            except Exception:  # noqa: BLE001 - reconcile retries; the cancel stands
                logger.exception("%s %s: finalising after cancel failed", kind.name, job_id)

    @staticmethod
    def _leftovers(driver: DriverRef, job_marker: str) -> list[int]:
        own = session_pids(driver.pid) if _session_is_ours(driver) else []
        return sorted(set(own) | set(marked_pids(job_marker)))

    def _kill_leftovers(self, driver: DriverRef, job_marker: str) -> int:
        count = 0
        for pid in self._leftovers(driver, job_marker):
            try:
                os.kill(pid, signal.SIGKILL)
                count += 1
            except (ProcessLookupError, PermissionError):
                pass
        return count

    def driver_alive(self, driver: DriverRef) -> bool:
        return is_driver(driver)

    def cleanup(self, kind: JobKind, job_id: str, driver: DriverRef) -> None:
        """Kill what a dead driver left behind (a local Ray's agents survive a SIGKILLed
        driver and hold its ports and memory)."""
        left = self._kill_leftovers(driver, marker(kind, job_id))
        if left:
            logger.warning("%s %s: killed %d leftover processes of dead driver %s", kind.name,
                           job_id, left, driver.pid)

    def log_tail(self, kind: JobKind, job_id: str, driver: DriverRef,
                 chars: int = 2000) -> str:
        try:
            with open(self.log_path(kind, job_id), "rb") as log:
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


def _proc_stat(pid: int) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name (state, ppid, pgrp, session ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _proc_state(pid: int) -> str:
    fields = _proc_stat(pid)
    return fields[0] if fields else "Z"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "?"


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as ``<boot id>:<clock ticks since boot>``: unique for the
    machine's uptime and across reboots, so pid + start identify one process even after the
    pid is reused. None when the process is gone."""
    fields = _proc_stat(pid)
    if len(fields) < 20:
        return None
    return f"{_boot_id()}:{fields[19]}"  # field 22 of stat, starttime


def is_driver(driver: DriverRef) -> bool:
    """The recorded driver process is alive (not a zombie) and is still the same process: a
    live process that reused the pid has another start time. Rows written before start times
    were recorded (``start`` None) fall back to the pid alone."""
    if not LocalProcessRunner.is_alive(driver.pid):
        return False
    assert driver.pid is not None
    return driver.start is None or process_start(driver.pid) == driver.start


def _session_is_ours(driver: DriverRef) -> bool:
    """The driver's session id is its pid. While the pid is free or still the driver's, every
    process of that session is the driver's; once another process reused the pid (a new
    session leader, rare), the session is not ours to kill and the job marker alone counts."""
    if driver.pid is None:
        return False
    start = process_start(driver.pid)
    return start is None or driver.start is None or start == driver.start


def session_pids(sid: int | None) -> list[int]:
    """Live (non-zombie) processes of session ``sid`` (the driver started it with setsid)."""
    if sid is None:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        # fields: state ppid pgrp session ...
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def marked_pids(job_marker: str) -> list[int]:
    """Live processes whose environment says they belong to the job ``job_marker``."""
    needle = f"{JOB_MARKER}={job_marker}".encode() + b"\0"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes() + b"\0"
        except OSError:
            continue
        if (b"\0" + needle in b"\0" + environ) and _proc_state(int(entry.name)) != "Z":
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
