"""Curvature jobs: ``POST /v1/curvature`` queues a Hessian-spectrum estimate that runs as a Ray
task in its own driver process (never inside the request); poll ``GET /v1/curvature/{id}``,
cancel with ``DELETE``. The same queue, runner, cancel and reconcile as studies
(:mod:`service.launch.lifecycle`)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from service.api.auth import HIDDEN_ERROR, is_authenticated
from service.api.deps import RunnerDep, SettingsDep, StoreDep
from service.api.routes.studies import validate_model_and_dataset
from service.api.spec_checks import check_spec_inputs
from service.errors import CurvatureJobNotFoundError, ResultNotReadyError
from service.launch.kinds import CURVATURE
from service.launch.lifecycle import (
    cancel_job,
    full_queue_is_429,
    queue_limit,
    start_queued,
)
from service.launch.resources import check_trial_resources
from service.schemas import CurvatureCreate, CurvatureJobPublic, Link
from service.store.curvature_jobs import CurvatureJobRow, create_job, get_job
from tuning.curvature import CurvatureReport, hessian_density_plot

router = APIRouter(prefix="/v1/curvature", tags=["curvature"])


def _public(row: CurvatureJobRow) -> CurvatureJobPublic:
    base = f"/v1/curvature/{row.id}"
    return CurvatureJobPublic(
        id=row.id, status=row.status, spec=CurvatureCreate.model_validate(row.spec),  # type: ignore[arg-type]
        created_at=row.created_at, finished_at=row.finished_at, error=row.error,
        report=row.report, suggestions=row.suggestions, timeline=row.timeline,
        links={"self": Link(href=base), "density": Link(href=f"{base}/density.png")})


def _get(store: StoreDep, job_id: str) -> CurvatureJobRow:
    row = get_job(store, job_id)
    if row is None:
        raise CurvatureJobNotFoundError(job_id)
    return row


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=CurvatureJobPublic,
             responses={422: {"description": "invalid request (the message names the field)"},
                        429: {"description": "the queue is full"}})
def create_curvature_job(spec: CurvatureCreate, store: StoreDep, runner: RunnerDep,
                         settings: SettingsDep) -> CurvatureJobPublic:
    """Queue a curvature job; it starts as soon as a slot is free (``queued`` until then)."""
    validate_model_and_dataset(spec.model, spec.dataset)
    check_trial_resources(spec.resources, settings)
    check_spec_inputs(settings, model=spec.model, model_kwargs=spec.model_kwargs,
                      dataset=spec.dataset, dataset_kwargs=spec.dataset_kwargs,
                      optimizer=spec.optimizer, batch_size=spec.batch_size)
    with full_queue_is_429(CURVATURE):  # checked with the insert, atomically
        row = create_job(store, spec.model_dump(mode="json"), queue_limit(settings))
    start_queued(store, runner, settings)
    return _public(_get(store, row.id))


@router.delete("/{job_id}", response_model=CurvatureJobPublic,
               responses={404: {"description": "unknown job"}})
def cancel_curvature_job(job_id: str, store: StoreDep, runner: RunnerDep,
                         settings: SettingsDep) -> CurvatureJobPublic:
    """Cancel a queued or running curvature job (its driver and Ray task are stopped);
    cancelling a finished one changes nothing."""
    _get(store, job_id)
    cancel_job(store, runner, settings, CURVATURE, job_id)
    return _public(_get(store, job_id))


@router.get("/{job_id}", response_model=CurvatureJobPublic,
            responses={404: {"description": "unknown job"}})
def get_curvature_job(job_id: str, store: StoreDep, request: Request) -> CurvatureJobPublic:
    job = _public(_get(store, job_id))
    if job.error and not is_authenticated(request):  # an error can name a data path
        job.error = HIDDEN_ERROR
    return job


@router.get("/{job_id}/density.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, 404: {}, 409: {}})
def density_plot(job_id: str, store: StoreDep) -> Response:
    """Stochastic Lanczos quadrature estimate of the Hessian spectral density."""
    row = _get(store, job_id)
    if row.report is None:
        raise ResultNotReadyError(job_id, row.status)
    png = hessian_density_plot(CurvatureReport.from_dict(row.report))
    return Response(png, media_type="image/png")
