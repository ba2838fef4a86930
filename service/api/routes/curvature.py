"""Curvature jobs: ``POST /v1/curvature`` queues a Hessian-spectrum estimate that runs as a Ray
task in its own driver process (never inside the request); poll ``GET /v1/curvature/{id}``."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from service.api.deps import SettingsDep, StoreDep
from service.api.routes.studies import validate_model_and_dataset
from service.errors import PhituneError, ResultNotReadyError, TooManyStudiesError
from service.launch.curvature_launch import launch_job
from service.launch.resources import check_trial_resources
from service.schemas import CurvatureCreate, CurvatureJobPublic, Link
from service.store.curvature_jobs import (
    CurvatureJobRow,
    count_active_jobs,
    create_job,
    get_job,
)
from tuning.curvature import CurvatureReport, hessian_density_plot

router = APIRouter(prefix="/v1/curvature", tags=["curvature"])


class CurvatureJobNotFoundError(PhituneError):
    status_code = 404

    def __init__(self, job_id: str) -> None:
        super().__init__(f"curvature job {job_id!r} not found")


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


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=CurvatureJobPublic)
def create_curvature_job(spec: CurvatureCreate, store: StoreDep,
                         settings: SettingsDep) -> CurvatureJobPublic:
    validate_model_and_dataset(spec.model, spec.dataset)
    check_trial_resources(spec.resources, settings)
    if count_active_jobs(store) >= settings.max_concurrent_studies:
        raise TooManyStudiesError(settings.max_concurrent_studies)
    row = create_job(store, spec.model_dump(mode="json"))
    launch_job(settings, store, row.id)
    return _public(_get(store, row.id))


@router.get("/{job_id}", response_model=CurvatureJobPublic,
            responses={404: {"description": "unknown job"}})
def get_curvature_job(job_id: str, store: StoreDep) -> CurvatureJobPublic:
    return _public(_get(store, job_id))


@router.get("/{job_id}/density.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, 404: {}, 409: {}})
def density_plot(job_id: str, store: StoreDep) -> Response:
    """Stochastic Lanczos quadrature estimate of the Hessian spectral density."""
    row = _get(store, job_id)
    if row.report is None:
        raise ResultNotReadyError(job_id, row.status)
    png = hessian_density_plot(CurvatureReport.from_dict(row.report))
    return Response(png, media_type="image/png")
