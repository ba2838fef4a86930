"""φ recommendations with their evidence.

``POST /v1/recommendations`` takes the body of ``POST /v1/studies`` and answers, in about the
time of one curvature estimate, the φ and phases to start that study from: the fitted φ model
(:mod:`tuning.curvature.recommend`, nearest tuned cases of the corpus and of finished studies
in feature space) on the features it needs, measured in-process on the spec's model and data,
with its leave-one-case-out expected gap and every labelled suggestion (history, calibrated,
paper default, theory 2κ) as evidence. Why in-process and not a queued job: the answer is
what a client waits for before submitting, and the packaged model needs one Hessian estimate
at initialisation (seconds for the shipped models); a model over ``IN_REQUEST_MAX_PARAMS``
is not measured in a request and gets the labelled budget-features fallback (queue ``POST
/v1/curvature`` for its spectrum). Too large for the configured caps: 422 naming the field.

``GET /v1/recommendations`` answers from the store alone (no measurement): history,
calibrated, paper default and theory from the latest stored curvature report.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from service.api.deps import SettingsDep, StoreDep
from service.api.routes.studies import check_study_spec
from service.errors import InvalidSpecError
from service.schemas import PhiRecommendation, Recommendation, StudyCreate
from service.store.history import history_cases, history_points, latest_curvature
from tuning.curvature import CurvatureReport, suggest_phi

router = APIRouter(prefix="/v1", tags=["recommendations"])

#: Largest model whose curvature a request measures itself (Lanczos on a few batches of a
#: model this size takes seconds to tens of seconds on a CPU).
IN_REQUEST_MAX_PARAMS = 5_000_000


@router.post("/recommendations", response_model=PhiRecommendation,
             responses={422: {"description": "invalid spec (the message names the field)"}})
def recommend_for_study(spec: StudyCreate, store: StoreDep,
                        settings: SettingsDep) -> PhiRecommendation:
    """The φ and phases to start this study from, with the expected gap and the evidence."""
    from service.launch.runner import spec_from_study
    from service.launch.study_driver import total_steps_of
    from trainables.errors import TrainablesError
    from trainables.preflight import count_parameters, dataset_shape
    from tuning.phi_from_curvature import recommend_for

    check_study_spec(spec, settings)
    try:  # what the driver would refuse later is refused here (a 422, never a 500)
        total = total_steps_of(spec, settings)
        train = spec_from_study("recommendation", spec, settings, total).train
        shape = dataset_shape(spec.dataset, spec.dataset_kwargs)
        n_params = count_parameters(spec.model, shape.info, spec.model_kwargs) if shape \
            else None
    except TrainablesError as exc:
        raise InvalidSpecError(str(exc), field=getattr(exc, "field", None) or "spec") from None
    measure = n_params is not None and n_params <= IN_REQUEST_MAX_PARAMS
    result = recommend_for(train, total, history=history_points(store),
                           history_cases=history_cases(store), measure=measure)
    if not measure:
        why = (f"{n_params:,} parameters > {IN_REQUEST_MAX_PARAMS:,} measured in a request"
               if n_params is not None else "a plugin dataset's shape is unknown before loading")
        result["warnings"].insert(0, f"curvature not measured ({why}); POST /v1/curvature "
                                     "queues an estimate")
    return PhiRecommendation(**result)


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
