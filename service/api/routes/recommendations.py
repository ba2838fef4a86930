"""φ recommendations with their evidence, from the store alone (no Ray in a request).

Sources, most specific first: ``history`` (the most similar finished studies), ``calibrated``
(a fitted κ → φ mapping, its provenance and error stated), ``paper_default`` (5 for SGD,
0.5 for AdamW), ``theory`` (Prop. 1: φ = 2κ, exact only for the rescaled quadratic).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from service.api.deps import StoreDep
from service.schemas import Recommendation
from service.store.history import history_points, latest_curvature
from tuning.curvature import CurvatureReport, suggest_phi

router = APIRouter(prefix="/v1", tags=["recommendations"])


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
