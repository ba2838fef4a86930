"""Driver of one curvature job: ``python -m service.launch.curvature_driver <job-id>``."""

from __future__ import annotations

import logging
import sys
from typing import Any

from service.config import Settings
from service.schemas import CurvatureCreate
from service.store import Store, utcnow
from service.store.curvature_jobs import get_job, update_job
from service.store.history import history_points

logger = logging.getLogger("service.launch.curvature_driver")


def run(job_id: str, settings: Settings) -> int:
    store = Store(settings.sqlalchemy_url)
    row = get_job(store, job_id)
    if row is None:
        logger.error("curvature job %s not found", job_id)
        return 2
    import ray

    from service.launch.study_driver import init_ray
    from tuning.curvature import CurvatureReport, suggest_phi
    from tuning.curvature_job import CurvatureSpec, measure_curvature_on_ray
    from tuning.specs import Resources, TrainSpec

    try:
        req = CurvatureCreate.model_validate(row.spec)
        train = TrainSpec(model=req.model, dataset=req.dataset, optimizer=req.optimizer,
                          model_kwargs=dict(req.model_kwargs),
                          dataset_kwargs=dict(req.dataset_kwargs),
                          data_dir=str(settings.datasets_path))
        curv = CurvatureSpec(num_batches=req.num_batches, batch_size=req.batch_size,
                             lanczos_steps=req.lanczos_steps, num_probes=req.num_probes,
                             ggn=req.ggn, seed=req.seed)
        update_job(store, job_id, status="running")
        init_ray(settings)
        report: CurvatureReport = measure_curvature_on_ray(
            train, Resources(cpu=req.resources.cpu, gpu=req.resources.gpu), curv)
        suggestions = suggest_phi(report, req.optimizer, history=history_points(store),
                                  model=req.model, dataset=req.dataset)
        timeline = None
        if req.at_steps:
            timeline = timeline_on_ray(req, train, curv)
        update_job(store, job_id, status="succeeded", report=report.to_dict(),
                   suggestions=[s.to_dict() for s in suggestions], timeline=timeline,
                   finished_at=utcnow())
        return 0
    except Exception as exc:  # noqa: BLE001 - the job must end in a terminal state
        logger.exception("curvature job %s failed", job_id)
        update_job(store, job_id, status="failed", error=f"{type(exc).__name__}: {exc}",
                   finished_at=utcnow())
        return 1
    finally:
        if ray.is_initialized():
            ray.shutdown()


def timeline_on_ray(req: CurvatureCreate, train: Any, curv: Any) -> list[dict[str, Any]]:
    """Curvature along a real UBA run (start, phase boundaries, ...) as one Ray task; each
    point carries its own φ suggestions (per-phase φ)."""
    import dataclasses

    import ray

    from tuning.curvature import suggest_phi
    from tuning.curvature_job import measure_curvature_during_training

    run_train = dataclasses.replace(train, lr=req.lr, batch_size=req.train_batch_size)
    task = ray.remote(measure_curvature_during_training).options(
        num_cpus=req.resources.cpu, num_gpus=req.resources.gpu)
    assert req.train_steps is not None or all(s == 0 for s in req.at_steps)
    points = ray.get(task.remote(run_train, req.train_steps or 1, req.at_steps, phi=req.phi,
                                 phases=req.phases, curv=curv))
    return [{"step": p["step"], "phase": p["phase"], "report": p["report"].to_dict(),
             "suggestions": [s.to_dict() for s in suggest_phi(p["report"], req.optimizer)
                             if s.source in ("theory", "calibrated")]}
            for p in points]


def main(argv: list[str] | None = None) -> int:
    from service.launch.study_driver import driver_main

    return driver_main(argv, "python -m service.launch.curvature_driver <job-id>", run)


if __name__ == "__main__":
    sys.exit(main())
