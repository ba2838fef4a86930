"""Study reads rendered straight to JSON bytes (``GET /v1/studies``, ``GET /v1/studies/{id}``).

Why not a ``StudyPublic`` per read: these are the routes pollers and agents call all the time
(issue #22: the service as a hub for many workers), and building a pydantic model per study,
re-validating its stored spec through ``StudyCreate`` and re-encoding the spec on every read
cost several times what the query does. Here the stored spec text is parsed and rendered once
per distinct text (:func:`rendered_spec`, an LRU cache: a spec never changes in place, an
extended study's new spec is a new text), everything else a study shows is encoded from its
stored columns, and the spec is spliced in. The result is the JSON of a ``StudyPublic``, keys
in the schema's order, encoded as ``JSONResponse`` would (compact, UTF-8);
``tests/service/test_study_json.py`` checks it against ``StudyPublic`` field by field.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from pydantic_core import to_jsonable_python

from service.api.auth import HIDDEN_ERROR
from service.api.watch import WatchRoots
from service.config import Settings
from service.schemas import StudyPublic
from service.store import TrialSummary
from service.store.views import StudyView
from trainables.config import metric_mode

__all__ = ["StudyJSON", "progress_fields", "rendered_spec"]

#: How ``JSONResponse`` encodes (``starlette.responses.JSONResponse.render``).
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None,
                           separators=(",", ":")).encode
#: ``StudyPublic`` fields before and after ``spec``, in the schema's order.
_FIELDS = list(StudyPublic.model_fields)
_HEAD, _TAIL = _FIELDS[:_FIELDS.index("spec")], _FIELDS[_FIELDS.index("spec") + 1:]
#: Fields of the schema this module does not fill, at their JSON defaults (a field added to
#: ``StudyPublic`` shows up with its default until it is filled here).
_DEFAULTS: dict[str, Any] = {
    name: to_jsonable_python(field.get_default(call_default_factory=True))
    for name, field in StudyPublic.model_fields.items() if not field.is_required()
}


def progress_fields(summary: TrialSummary, metric: str) -> dict[str, Any]:
    """``Progress`` of a study as plain data: trial counts and the best value at the longest
    finished horizon (see :class:`~service.store.TrialSummary`) in the metric's direction."""
    counts = summary.counts
    return {
        "trials_total": sum(counts.values()),
        "trials_running": counts.get("running", 0),
        "trials_finished": counts.get("terminated", 0) + counts.get("stopped_early", 0),
        "trials_failed": counts.get("error", 0),
        "best_value": summary.max_value if metric_mode(metric) == "max" else summary.min_value,
        "best_value_steps": summary.best_steps,
    }


@lru_cache(maxsize=4096)
def rendered_spec(spec_text: str) -> tuple[str, str]:
    """(the spec as ``JSONResponse`` encodes it, its metric) from the stored text."""
    spec = json.loads(spec_text)
    return _encode(spec), spec.get("metric", "val_accuracy")


def _time(value: datetime | None) -> str | None:
    """As pydantic writes a UTC datetime (``Z``, not ``+00:00``)."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


class StudyJSON:
    """Renders :class:`~service.store.views.StudyView` rows for one configuration.

    :meth:`study` is memoised on the (hashable, compared by value) view: pollers read the
    same unchanged studies over and over, and a changed study or trial is a new view, so a
    hit is always what rendering would give. ``STUDY_CACHE`` views (a few MB) are kept."""

    STUDY_CACHE = 2048

    def __init__(self, settings: Settings) -> None:
        self.watch = WatchRoots.of(settings)
        self.study = lru_cache(maxsize=self.STUDY_CACHE)(self._study)

    def data(self, view: StudyView, authenticated: bool) -> tuple[dict[str, Any], str]:
        """(every field but ``spec``, the rendered spec): a ``StudyPublic`` as JSON data."""
        spec, metric = rendered_spec(view.spec_text)
        base = f"/v1/studies/{view.id}"
        error = view.error
        if error and not authenticated:
            error = HIDDEN_ERROR
        fields = dict(_DEFAULTS)
        fields.update(
            id=view.id, name=view.name, status=view.status, created_at=_time(view.created_at),
            started_at=_time(view.started_at), finished_at=_time(view.finished_at),
            error=error, dashboard_url=view.dashboard_url, **self.watch.fields(view.id),
            progress=progress_fields(view.summary, metric),
            links={"self": {"href": base}, "trials": {"href": f"{base}/trials"},
                   "best": {"href": f"{base}/best"}, "result": {"href": f"{base}/result"}})
        return fields, spec

    def _study(self, view: StudyView, authenticated: bool) -> str:
        """One study's JSON text."""
        fields, spec = self.data(view, authenticated)
        head = _encode({k: fields[k] for k in _HEAD})
        tail = _encode({k: fields[k] for k in _TAIL})
        return f'{head[:-1]},"spec":{spec},{tail[1:]}'

    def page(self, views: list[StudyView], total: int, authenticated: bool) -> bytes:
        """A ``StudiesPublic`` as JSON bytes."""
        items = ",".join(self.study(v, authenticated) for v in views)
        return f'{{"data":[{items}],"count":{int(total)}}}'.encode()
