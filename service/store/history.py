"""Past studies as evidence: every succeeded study's tuned φ per budget (and its κ when the
study measured curvature) becomes a :class:`tuning.curvature.HistoryPoint`."""

from __future__ import annotations

from typing import Any

from service.store.db import Store
from tuning.curvature import HistoryPoint

#: κ definitions in order of preference: the certified-positive SLQ quantile is seed-stable on
#: networks; λmax/λmin⁺ (``lanczos``) is the noisiest.
KAPPA_PREFERENCE = ("slq_quantile", "ggn", "trace", "lanczos")


def _kappa(curvature: dict[str, Any] | None) -> tuple[float | None, str | None]:
    """The past study's κ, preferring the definition ``suggest_phi`` compares by default."""
    if not curvature:
        return None, None
    found = {k.get("definition"): k.get("value") for k in curvature.get("kappas", [])}
    for definition in KAPPA_PREFERENCE:
        value = found.get(definition)
        if isinstance(value, int | float) and value > 0:
            return float(value), definition
    return None, None


def history_points(store: Store, *, exclude: str | None = None,
                   limit: int = 1000) -> list[HistoryPoint]:
    rows, _ = store.list_studies(status="succeeded", limit=limit)
    points = []
    for row in rows:
        if row.id == exclude or not row.result:
            continue
        spec = row.spec
        kappa, definition = _kappa(row.result.get("curvature"))
        for budget in row.result.get("budgets", []):
            best = budget.get("best")
            if not best:
                continue
            points.append(HistoryPoint(
                model=spec["model"], dataset=spec["dataset"],
                optimizer=spec.get("optimizer", {}).get("name", "sgd"),
                budget_steps=int(budget["budget_steps"]), tuned_phi=float(best["phi"]),
                kappa=kappa, kappa_definition=definition, metric=float(best["value"]),
                study_id=row.id))
    return points


def latest_curvature(store: Store, model: str, dataset: str) -> dict[str, Any] | None:
    """The most recent curvature report measured for this model on this dataset."""
    rows, _ = store.list_studies(status="succeeded", limit=1000)
    for row in rows:  # newest first
        if (row.spec.get("model"), row.spec.get("dataset")) == (model, dataset) and \
                row.result and row.result.get("curvature"):
            return row.result["curvature"]
    return None
