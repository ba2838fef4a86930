"""Past studies as evidence: every succeeded study's tuned φ per budget (and its κ when the
study measured curvature) becomes a :class:`tuning.curvature.HistoryPoint`."""

from __future__ import annotations

import math
from typing import Any

from service.store.db import Store
from tuning.curvature import HistoryPoint
from tuning.curvature.recommend import Case

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
        if row.id == exclude or not row.result or row.spec.get("trainer") == "external":
            continue  # an external study's model is the user's: no evidence for a registry's
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


def _optimizer(spec: dict[str, Any]) -> tuple[str, float]:
    opt = spec.get("optimizer") or {}
    return str(opt.get("name", "sgd")), float(opt.get("lr", 0.1))


def history_cases(store: Store, *, exclude: str | None = None, limit: int = 1000,
                  min_phis: int = 3) -> list[Case]:
    """Finished studies as tuned cases of the φ model (one per budget with >= ``min_phis``
    distinct φ run to their horizon): the regret curve from the trials' values, the features
    from the spec (budget, batch, η_max) plus the curvature features the study's own
    recommendation measured (its ``model`` suggestion's evidence). History thus feeds
    the same model as the corpus instead of a separate lookup."""
    from tuning.curvature.recommend import gap_unit, regret_curve
    from tuning.specs import metric_mode

    rows, _ = store.list_studies(status="succeeded", limit=limit)
    cases = []
    for row in rows:
        if row.id == exclude or not row.result or row.spec.get("trainer") == "external":
            continue  # an external study's model is the user's: no evidence for a registry's
        spec = row.spec
        name, lr = _optimizer(spec)
        metric = spec.get("metric", "val_accuracy")
        model_suggestion = next((x for x in row.result.get("suggestions") or []
                                 if x.get("source") == "model"), {})
        measured = (model_suggestion.get("evidence") or {}).get("features") or {}
        for budget in row.result.get("budgets", []):
            steps = int(budget["budget_steps"])
            values: dict[float, list[float]] = {}
            for t in store.list_trials(row.id, budget_steps=steps):
                phi = (t.params or {}).get("phi")
                if t.value is None or phi is None or t.step < steps or not phi > 0:
                    continue
                values.setdefault(float(f"{float(phi):.6g}"), []).append(float(t.value))
            if len(values) < min_phis:
                continue
            curve = regret_curve({p: sum(v) / len(v) for p, v in values.items()},
                                 metric_mode(metric), gap_unit(metric))
            features = {k: float(v) for k, v in measured.items()
                        if isinstance(v, int | float) and not k.startswith("log_T")}
            features.update({"adam": float(name == "adamw"), "log_T": math.log(steps),
                             "log_eta": math.log(lr),
                             "log_batch": math.log(int(spec.get("batch_size", 128)))})
            cases.append(Case(f"study {row.id} @ {steps} steps", name, features,
                              tuple(curve), tuple(curve.values()), f"history:{row.id}"))
    return cases
