"""Driver of one curvature job: ``python -m service.launch.curvature_driver <job-id>``.

The same lifecycle as a study's driver (``service.launch.kinds``): it runs only while its
row is ``running`` (a cancel that raced its start ends it here), connects to Ray like a study
driver, and always ends the job in a terminal state, except when stopped by a signal without
a cancel (then reconcile relaunches it). It never migrates the schema: the API owns it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from service.config import Settings
from service.launch.runner import CurvatureJobSpec, curvature_spec_from_request
from service.schemas import TERMINAL_STATUSES, CurvatureCreate
from service.store import Store
from service.store.curvature_jobs import CurvatureJobRow
from service.store.history import history_points

logger = logging.getLogger("service.launch.curvature_driver")


def run(job_id: str, settings: Settings) -> int:
    store = Store(settings.sqlalchemy_url, migrate=False)  # the API owns the schema
    row = store.get_job(CurvatureJobRow, job_id)
    if row is None:
        logger.error("curvature job %s not found", job_id)
        return 2
    if row.status in TERMINAL_STATUSES:
        logger.info("curvature job %s already %s", job_id, row.status)
        return 0
    import ray

    from service.launch.study_driver import init_ray
    from tuning.curvature import CurvatureReport, suggest_phi
    from tuning.phi_from_curvature import measure_curvature_on_ray

    try:
        req = CurvatureCreate.model_validate(row.spec)
        job = curvature_spec_from_request(req, settings)
        init_ray(settings)
        if not store.mark_running(CurvatureJobRow, job_id):
            logger.info("curvature job %s: cancelled while its driver started", job_id)
            return 0
        report: CurvatureReport = measure_curvature_on_ray(job.train, job.resources, job.curv)
        suggestions = suggest_phi(report, req.optimizer, history=history_points(store),
                                  model=req.model, dataset=req.dataset)
        timeline = timeline_on_ray(job, req.optimizer) if job.at_steps else None
        store.finish_job(CurvatureJobRow, job_id, "succeeded", report=report.to_dict(),
                         suggestions=[s.to_dict() for s in suggestions], timeline=timeline)
        return 0
    except Exception as exc:  # noqa: BLE001 - the job must end in a terminal state
        logger.exception("curvature job %s failed", job_id)
        store.finish_job(CurvatureJobRow, job_id, "failed",
                         error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        if ray.is_initialized():
            ray.shutdown()


def timeline_on_ray(job: CurvatureJobSpec, optimizer: str) -> list[dict[str, Any]]:
    """Curvature along a real UBA run (start, phase boundaries, ...) as one Ray task; each
    point carries its own φ suggestions (per-phase φ)."""
    import ray

    from tuning.curvature import suggest_phi
    from tuning.phi_from_curvature import measure_curvature_during_training

    assert job.timeline_train is not None
    task = ray.remote(measure_curvature_during_training).options(
        num_cpus=job.resources.cpu, num_gpus=job.resources.gpu)
    points = ray.get(task.remote(job.timeline_train, job.train_steps, list(job.at_steps),
                                 phi=job.phi, phases=job.phases, curv=job.curv))
    return [{"step": p["step"], "phase": p["phase"], "report": p["report"].to_dict(),
             "suggestions": [s.to_dict() for s in suggest_phi(p["report"], optimizer)
                             if s.source in ("theory", "calibrated")]}
            for p in points]


def main(argv: list[str] | None = None) -> int:
    from service.launch.study_driver import driver_main

    return driver_main(argv, "python -m service.launch.curvature_driver <job-id>", run)


if __name__ == "__main__":
    sys.exit(main())
