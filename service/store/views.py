"""Read views of studies for the hot read routes (``GET /v1/studies``, ``GET /v1/studies/{id}``).

Why a separate path from :class:`service.store.Store`'s ORM methods: pollers (clients waiting
on a study, many agents of one study) call these routes all the time (issue #12 asks for one
study at ≥ 0.5× and a page of 20 at ≥ 0.25× the rate of ``/healthz``). Loading full ORM rows
(with the ``result`` document), opening a session per query and building statements per call
cost more than the query itself. Here each read is one statement built once, on one
connection: the study columns a :class:`~service.schemas.StudyPublic` shows, left-joined to
the trial aggregate of exactly those studies (one row per study, status and horizon; a page is
a CTE, its total rides along as a scalar subquery). The spec comes back as the stored JSON text, not
parsed: it was validated by ``StudyCreate`` when submitted, and the API renders it once per
distinct text (``service.api.study_json``) instead of parsing and re-validating it per read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, bindparam, cast, func, select

from service.store.db import Store, StudyRow, TrialRow, TrialSummary, _as_utc

__all__ = ["StudyView", "get_study_view", "study_page"]


@dataclass(frozen=True)
class StudyView:
    """The stored columns of one study a public view needs, and its trials' aggregate.

    Hashable and compared by value (every field is plain data), so a renderer may memoise
    what it makes of a view: equal views render equally, and any change of the study or of
    its trials is a different view."""

    id: str
    name: str | None
    status: str
    #: the spec as stored (JSON text)
    spec_text: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    dashboard_url: str | None
    #: rows of the trial aggregate: (status, budget_steps, count, max value, min value)
    trial_groups: tuple[tuple[str, int, int, float | None, float | None], ...] = ()

    @property
    def spec(self) -> dict[str, Any]:
        """The stored spec, parsed (each call parses again)."""
        return json.loads(self.spec_text)

    @property
    def summary(self) -> TrialSummary:
        """The trials' counts and best values (folded from :attr:`trial_groups`)."""
        summary = TrialSummary()
        for group in self.trial_groups:
            summary.add(*group)
        return summary


#: ``CAST(spec AS TEXT)``: the stored text on SQLite and PostgreSQL alike (psycopg would parse
#: a ``json`` column itself, a cast keeps it text)
_COLUMNS = (StudyRow.id, StudyRow.name, StudyRow.status, cast(StudyRow.spec, Text),
            StudyRow.created_at, StudyRow.started_at, StudyRow.finished_at, StudyRow.error,
            StudyRow.dashboard_url)
_N = len(_COLUMNS)


def _aggregate(study_ids: Any) -> Any:
    """Trial counts and extreme values per study, status and horizon for ``study_ids``."""
    return (select(TrialRow.study_id, TrialRow.status, TrialRow.budget_steps,
                   func.count().label("n"), func.max(TrialRow.value).label("hi"),
                   func.min(TrialRow.value).label("lo"))
            .where(TrialRow.study_id.in_(study_ids))
            .group_by(TrialRow.study_id, TrialRow.status, TrialRow.budget_steps)
            .subquery("agg"))


def _page_query(with_status: bool) -> Any:
    count = select(func.count()).select_from(StudyRow)
    page = select(*_COLUMNS)
    if with_status:
        count = count.where(StudyRow.status == bindparam("status"))
        page = page.where(StudyRow.status == bindparam("status"))
    page = (page.add_columns(count.scalar_subquery().label("total"))
            .order_by(StudyRow.created_at.desc(), StudyRow.id)
            .limit(bindparam("limit")).offset(bindparam("offset"))).cte("page")
    agg = _aggregate(select(page.c.id).scalar_subquery())
    return (select(*page.c, agg.c.status, agg.c.budget_steps, agg.c.n, agg.c.hi, agg.c.lo)
            .outerjoin(agg, agg.c.study_id == page.c.id)
            .order_by(page.c.created_at.desc(), page.c.id))


def _one_query() -> Any:
    agg = _aggregate([bindparam("study_id")])
    return (select(*_COLUMNS, agg.c.status, agg.c.budget_steps, agg.c.n, agg.c.hi, agg.c.lo)
            .outerjoin(agg, agg.c.study_id == StudyRow.id)
            .where(StudyRow.id == bindparam("study_id")))


_PAGE = {False: _page_query(False), True: _page_query(True)}
_ONE = _one_query()


def _fold(rows: list[Any], extra: int) -> list[StudyView]:
    """Joined rows (study columns, ``extra`` more, then one aggregate group or NULLs) → one
    view per study, in row order."""
    views: list[StudyView] = []
    current: Any = None
    groups: list[tuple[Any, ...]] = []
    for row in rows:
        if current is None or row[0] != current[0]:
            if current is not None:
                views.append(_view(current, groups))
            current, groups = row, []
        group = tuple(row[_N + extra:])
        if group[0] is not None:  # NULLs: a study without trials
            groups.append(group)
    if current is not None:
        views.append(_view(current, groups))
    return views


def _view(row: Any, groups: list[tuple[Any, ...]]) -> StudyView:
    return StudyView(id=row[0], name=row[1], status=row[2], spec_text=row[3],
                     created_at=_as_utc(row[4]), started_at=_as_utc(row[5]),  # type: ignore[arg-type]
                     finished_at=_as_utc(row[6]), error=row[7], dashboard_url=row[8],
                     trial_groups=tuple(groups))  # type: ignore[arg-type]


def study_page(store: Store, *, status: str | None = None, limit: int = 50,
               offset: int = 0) -> tuple[list[StudyView], int]:
    """Newest first, like :meth:`Store.list_studies`; also the total matching ``status``."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status:
        params["status"] = status
    with store.engine.connect() as conn:
        rows = conn.execute(_PAGE[bool(status)], params).all()
        if rows:
            total = int(rows[0][_N])
        else:  # past the last page: the subquery had no row to ride on
            count = select(func.count()).select_from(StudyRow)
            if status:
                count = count.where(StudyRow.status == status)
            total = int(conn.execute(count).scalar() or 0)
    return _fold(rows, 1), total


def get_study_view(store: Store, study_id: str) -> StudyView | None:
    """One study's view, or None."""
    with store.engine.connect() as conn:
        rows = conn.execute(_ONE, {"study_id": study_id}).all()
    views = _fold(rows, 0)
    return views[0] if views else None
