"""Driver of one curvature job: ``python -m service.curvature_driver <job-id>``."""

from __future__ import annotations

import logging
import sys

from service.config import Settings
from service.curvature_jobs import get_job, update_job
from service.history import history_points
from service.schemas import CurvatureCreate
from service.store import Store, utcnow

logger = logging.getLogger("service.curvature_driver")


def run(job_id: str, settings: Settings) -> int:
    store = Store(settings.sqlalchemy_url)
    row = get_job(store, job_id)
    if row is None:
        logger.error("curvature job %s not found", job_id)
        return 2
    import ray

    from service.driver import init_ray
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
        update_job(store, job_id, status="succeeded", report=report.to_dict(),
                   suggestions=[s.to_dict() for s in suggestions], finished_at=utcnow())
        return 0
    except Exception as exc:  # noqa: BLE001 - the job must end in a terminal state
        logger.exception("curvature job %s failed", job_id)
        update_job(store, job_id, status="failed", error=f"{type(exc).__name__}: {exc}",
                   finished_at=utcnow())
        return 1
    finally:
        if ray.is_initialized():
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m service.curvature_driver <job-id>", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if settings.ray_address:
        from service.driver import configure_ray_auth

        configure_ray_auth(settings.ray_auth_mode)
    return run(args[0], settings)


if __name__ == "__main__":
    sys.exit(main())
