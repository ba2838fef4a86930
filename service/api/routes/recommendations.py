"""φ recommendations with their evidence.

``POST /v1/recommendations`` takes the body of ``POST /v1/studies`` and answers the φ and
phases to start that study from: the fitted φ model (:mod:`tuning.curvature.recommend`,
nearest tuned cases of the corpus and of finished studies in feature space) on the features
it needs, with its leave-one-case-out expected gap and every labelled suggestion (history,
calibrated, paper default, theory 2κ) as evidence.

The features include the curvature at initialisation, one Hessian estimate on the spec's
model and data: seconds on an idle machine, over 120 s under load (issue 22), past any
proxy's timeout. So no request measures: a spec that needs the measurement is queued as a
recommendation job (202, ``Location: /v1/recommendations/{id}``; poll it like a curvature
job, ``DELETE`` cancels), run by its own driver under the same queue and cap as studies
(``service.launch.recommendation_driver``). A spec that needs none (a model over
``MEASURE_MAX_PARAMS``, a plugin dataset of unknown shape: the labelled budget-features
fallback) is answered at once (200). Too large for the configured caps: 422 naming the field.

``GET /v1/recommendations`` answers from the store alone (no measurement): history,
calibrated, paper default and theory from the latest stored curvature report.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse

from service.api.auth import HIDDEN_ERROR, is_authenticated
from service.api.deps import RunnerDep, SettingsDep, StoreDep
from service.api.routes.studies import check_study_spec
from service.errors import RecommendationJobNotFoundError
from service.launch.kinds import RECOMMENDATION
from service.launch.lifecycle import cancel_job, full_queue_is_429, queue_limit, start_queued
from service.launch.recommendation import plan_recommendation
from service.launch.recommendation import recommend as recommendation_of
from service.schemas import (
    Link,
    PhiRecommendation,
    Recommendation,
    RecommendationJobPublic,
    StudyCreate,
)
from service.store.history import history_points, latest_curvature
from service.store.recommendation_jobs import RecommendationJobRow, create_job, get_job
from tuning.curvature import CurvatureReport, suggest_phi

router = APIRouter(prefix="/v1", tags=["recommendations"])


def _public(row: RecommendationJobRow, request: Request | None = None) -> RecommendationJobPublic:
    job = RecommendationJobPublic(
        id=row.id, status=row.status, spec=StudyCreate.model_validate(row.spec),  # type: ignore[arg-type]
        created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
        error=row.error, result=row.result,  # type: ignore[arg-type]
        links={"self": Link(href=f"/v1/recommendations/{row.id}")})
    if job.error and request is not None and not is_authenticated(request):
        job.error = HIDDEN_ERROR  # an error can name a data path
    return job


def _get(store: StoreDep, job_id: str) -> RecommendationJobRow:
    row = get_job(store, job_id)
    if row is None:
        raise RecommendationJobNotFoundError(job_id)
    return row


@router.post("/recommendations", status_code=status.HTTP_202_ACCEPTED, response_model=None,
             responses={200: {"model": PhiRecommendation,
                              "description": "answered at once: nothing to measure"},
                        202: {"model": RecommendationJobPublic,
                              "description": "queued: poll the Location header"},
                        422: {"description": "invalid spec (the message names the field)"},
                        429: {"description": "the queue is full"}})
def recommend_for_study(spec: StudyCreate, store: StoreDep, runner: RunnerDep,
                        settings: SettingsDep) -> JSONResponse:
    """The φ and phases to start this study from, with the expected gap and the evidence:
    200 with the recommendation when nothing needs measuring, else 202 with a queued
    recommendation job whose ``Location`` to poll."""
    check_study_spec(spec, settings)
    plan = plan_recommendation(spec, settings)
    if not plan.measure:
        rec = PhiRecommendation(**recommendation_of(plan, store))
        return JSONResponse(rec.model_dump(mode="json"), status_code=status.HTTP_200_OK)
    with full_queue_is_429(RECOMMENDATION):  # checked with the insert, atomically
        row = create_job(store, spec.model_dump(mode="json"), queue_limit(settings))
    start_queued(store, runner, settings)
    job = _public(_get(store, row.id))
    return JSONResponse(job.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED,
                        headers={"Location": f"/v1/recommendations/{row.id}"})


@router.get("/recommendations/{job_id}", response_model=RecommendationJobPublic,
            responses={404: {"description": "unknown recommendation job"}})
def get_recommendation_job(job_id: str, store: StoreDep,
                           request: Request) -> RecommendationJobPublic:
    """A queued recommendation: ``result`` once ``succeeded``."""
    return _public(_get(store, job_id), request)


@router.delete("/recommendations/{job_id}", response_model=RecommendationJobPublic,
               responses={404: {"description": "unknown recommendation job"}})
def cancel_recommendation_job(job_id: str, store: StoreDep, runner: RunnerDep,
                              settings: SettingsDep) -> RecommendationJobPublic:
    """Cancel a queued or running recommendation job; a finished one is left as it is."""
    _get(store, job_id)
    cancel_job(store, runner, settings, RECOMMENDATION, job_id)
    return _public(_get(store, job_id))


@router.get("/recommendations", response_model=Recommendation)
def recommend(
    store: StoreDep,
    model: Annotated[str, Query(min_length=1, max_length=100)],
    dataset: Annotated[str, Query(min_length=1, max_length=100)],
    optimizer: Literal["sgd", "adamw"] = "sgd",
    budget: Annotated[int | None, Query(ge=1, description="budget in optimizer steps")] = None,
) -> Recommendation:
    curvature = latest_curvature(store, model, dataset)
    report = CurvatureReport.from_dict(curvature) if curvature else None
    history = history_points(store)
    suggestions = suggest_phi(report, optimizer, history=history, model=model, dataset=dataset,
                              budget_steps=budget)
    data = [s.to_dict() for s in suggestions]
    return Recommendation(model=model, dataset=dataset, optimizer=optimizer, budget=budget,
                          phi=data[0]["phi"], source=data[0]["source"], suggestions=data,
                          curvature_measured=curvature is not None,
                          history_studies=len({p.study_id for p in history}))
