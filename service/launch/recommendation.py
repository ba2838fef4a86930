"""The φ recommendation for a study body: what it needs (:func:`plan_recommendation`, cheap:
registry, budget, parameter count) and the answer itself (:func:`recommend`, one Hessian
estimate when ``plan.measure``). The API answers a plan that needs no measurement at once
and queues a recommendation job for one that does (``service.launch.recommendation_driver``
runs :func:`recommend` there), so no request measures curvature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.config import Settings
from service.errors import InvalidSpecError
from service.schemas import StudyCreate
from service.store import Store
from service.store.history import history_cases, history_points
from trainables.config import TrainConfig

#: Largest model whose curvature a recommendation measures (Lanczos on a few batches of a
#: model this size takes seconds to tens of seconds on a CPU); a larger one gets the
#: labelled budget-features fallback at once (queue ``POST /v1/curvature`` for its spectrum).
MEASURE_MAX_PARAMS = 5_000_000


@dataclass(frozen=True)
class RecommendationPlan:
    """A study body mapped to the run the recommendation is for, and whether it measures."""

    train: TrainConfig
    total_steps: int
    n_params: int | None
    #: measure the curvature at initialisation (the model is known and small enough)
    measure: bool


def plan_recommendation(spec: StudyCreate, settings: Settings) -> RecommendationPlan:
    """Map a checked study body to its recommendation run; what the driver would refuse later
    is an :class:`InvalidSpecError` here (a 422, never a 500)."""
    from service.launch.runner import spec_from_study
    from service.launch.study_driver import total_steps_of
    from trainables.errors import TrainablesError
    from trainables.preflight import count_parameters, dataset_shape

    try:
        total = total_steps_of(spec, settings)
        train = spec_from_study("recommendation", spec, settings, total).train
        shape = dataset_shape(spec.dataset, spec.dataset_kwargs)
        n_params = count_parameters(spec.model, shape.info, spec.model_kwargs) if shape \
            else None
    except TrainablesError as exc:
        raise InvalidSpecError(str(exc), field=getattr(exc, "field", None) or "spec") from None
    return RecommendationPlan(train, total, n_params,
                              measure=n_params is not None and n_params <= MEASURE_MAX_PARAMS)


def recommend(plan: RecommendationPlan, store: Store) -> dict[str, Any]:
    """The ``PhiRecommendation`` fields for ``plan`` (measuring when ``plan.measure``), with
    finished studies of ``store`` as history."""
    from tuning.phi_from_curvature import recommend_for

    result = recommend_for(plan.train, plan.total_steps, history=history_points(store),
                           history_cases=history_cases(store), measure=plan.measure)
    if not plan.measure:
        why = (f"{plan.n_params:,} parameters > {MEASURE_MAX_PARAMS:,} measured for a "
               "recommendation" if plan.n_params is not None
               else "a plugin dataset's shape is unknown before loading")
        result["warnings"].insert(0, f"curvature not measured ({why}); POST /v1/curvature "
                                     "queues an estimate")
    return result
