"""Budget view of a study: metric vs budget, baselines, target budget, and its PNG plots."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.deps import StoreDep
from service.errors import ResultNotReadyError, StudyNotFoundError
from service.schemas import BudgetsPublic
from service.store import Store
from tuning.plots import plot_budget_curve, plot_phi_response

router = APIRouter(prefix="/v1/studies", tags=["budgets"])
PNG = {200: {"content": {"image/png": {}}, "description": "PNG image"}}


def _result(store: Store, study_id: str) -> dict:
    row = store.get_study(study_id)
    if row is None:
        raise StudyNotFoundError(study_id)
    if row.result is None:
        raise ResultNotReadyError(study_id, row.status)
    return row.result


@router.get("/{study_id}/budgets", response_model=BudgetsPublic,
            responses={404: {"description": "unknown study"}, 409: {"description": "not done"}})
def get_budgets(study_id: str, store: StoreDep) -> BudgetsPublic:
    r = _result(store, study_id)
    return BudgetsPublic(metric=r["metric"], mode=r["mode"], curve=r.get("budget_curve", []),
                         baselines=r.get("baselines", []), target=r.get("target"))


@router.get("/{study_id}/plots/budgets.png", response_class=Response, responses=PNG)
def budgets_plot(study_id: str, store: StoreDep) -> Response:
    r = _result(store, study_id)
    png = plot_budget_curve(r.get("budget_curve", []), r.get("baselines", []), r["metric"],
                            r.get("target"))
    return Response(png, media_type="image/png")


@router.get("/{study_id}/plots/phi.png", response_class=Response, responses=PNG)
def phi_plot(study_id: str, store: StoreDep) -> Response:
    """Available while the study runs: it reads the stored trials."""
    row = store.get_study(study_id)
    if row is None:
        raise StudyNotFoundError(study_id)
    points = [
        (t.budget_steps, float(t.params["phi"]), float(t.value))
        for t in store.list_trials(study_id)
        if t.params.get("kind", "search") == "search" and "phi" in t.params
        and t.value is not None and t.step >= t.budget_steps
    ]
    return Response(plot_phi_response(points, row.spec.get("metric", "val_accuracy")),
                    media_type="image/png")
