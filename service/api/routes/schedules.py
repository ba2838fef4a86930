"""Schedules: the registry, values and PNG plots of any registered schedule.

Read-only and computed in the request (a closed form per step, at most ``MAX_STEPS``
steps), so no store, runner or Ray is involved. Query parameters other than ``name``,
``steps`` (and the plot's ``title``/``log_y``) are schedule parameters, parsed with the kind
the registry gives them: numbers, ``a,b,c`` (or repeated keys) for lists, ``true``/``false``,
``null``.

Errors use FastAPI's validation shape so clients handle them like any 422:
unknown schedule -> 404, bad parameter -> 422 with ``loc = ["query", <param>]``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response

from tuning.schedules import (
    SCHEDULES,
    Schedule,
    ScheduleParamError,
    UnknownScheduleError,
    create_schedule,
)
from tuning.schedules.plot import plot_schedules

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/schedules", tags=["schedules"])

#: Largest ``steps`` a request may ask for (values are returned in full).
MAX_STEPS = 200_000
_RESERVED = {"name", "steps", "title", "log_y"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _error(status: int, param: str, msg: str, kind: str) -> HTTPException:
    return HTTPException(status, detail=[{"loc": ["query", param], "msg": msg, "type": kind}])


def _parse_one(kind: str, raw: str) -> Any:
    if kind == "int":
        return int(raw)
    if kind == "bool":
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{raw!r} is not a bool")
    if kind == "str":
        return raw
    return float(raw)


def parse_params(name: str, query: list[tuple[str, str]]) -> dict[str, Any]:
    """Schedule parameters from query pairs, typed by the registry entry of ``name``.

    Unknown parameter names are passed through as strings so ``create_schedule`` refuses
    them with the list of valid ones.
    """
    info = SCHEDULES[name]
    grouped: dict[str, list[str]] = {}
    for key, value in query:
        if key not in _RESERVED:
            grouped.setdefault(key, []).append(value)
    params: dict[str, Any] = {}
    for key, values in grouped.items():
        pinfo = info.params.get(key)
        if pinfo is None:
            params[key] = values[0]
            continue
        items = [v.strip() for raw in values for v in raw.split(",") if v.strip() != ""]
        try:
            if pinfo.nullable and len(items) == 1 and items[0].lower() in {"null", "none"}:
                params[key] = None
            elif pinfo.kind in ("float_list", "int_list"):
                params[key] = [_parse_one(pinfo.kind[:-5], v) for v in items]
            elif pinfo.kind == "float_or_list" and len(items) > 1:
                params[key] = [float(v) for v in items]
            elif len(items) == 1:
                params[key] = _parse_one("float" if pinfo.kind == "float_or_list" else pinfo.kind,
                                         items[0])
            else:
                raise ValueError(f"expected one value, got {len(items)}")
        except ValueError as exc:
            raise _error(422, key, f"{name}: parameter {key!r}: cannot parse {values!r} "
                         f"({exc}); allowed: {pinfo.allowed()}", "value_error") from exc
    return params


def build_schedule(name: str, steps: int, request: Request) -> Schedule:
    """Validate name, steps and parameters; map the library's errors to 404/422."""
    if name not in SCHEDULES:
        raise _error(404, "name", str(UnknownScheduleError(name, list(SCHEDULES))),
                     "unknown_schedule")
    params = parse_params(name, list(request.query_params.multi_items()))
    try:
        return create_schedule(name, steps, **params)
    except ScheduleParamError as exc:
        loc = "steps" if exc.param == "total_steps" else exc.param
        raise _error(422, loc, str(exc), "value_error") from exc


Steps = Annotated[int, Query(ge=1, le=MAX_STEPS, description="total_steps of the schedule")]


@router.get("")
def list_schedules() -> dict[str, Any]:
    """Every registered schedule with its parameters (kind, default, bounds, meaning)."""
    return {"schedules": [info.to_dict() for info in SCHEDULES.values()]}


@router.get("/plot", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "PNG plot"}})
def plot_schedule(
    request: Request,
    name: Annotated[str, Query(description="schedule name, e.g. uba")] = "uba",
    steps: Steps = 1000,
    title: Annotated[str | None, Query(max_length=200)] = None,
    log_y: bool = False,
) -> Response:
    """PNG of the LR curve, e.g. ``/v1/schedules/plot?name=uba&phi=5&steps=1000``."""
    schedule = build_schedule(name, steps, request)
    png = plot_schedules([schedule], title=title, log_y=log_y)
    return Response(content=png, media_type="image/png")


@router.get("/{name}")
def schedule_values(request: Request, name: str, steps: Steps = 1000) -> dict[str, Any]:
    """The schedule's complete parameters and its LR for steps ``0 .. steps-1``."""
    schedule = build_schedule(name, steps, request)
    return {**schedule.to_dict(), "eta_max": schedule.eta_max, "relative": schedule.relative,
            "values": schedule.values()}
