"""Read views of studies for the hot read routes (``GET /v1/studies``, ``GET /v1/studies/{id}``).

Why a separate path from :class:`service.store.Store`'s ORM methods: pollers call these routes
all the time (issue #12 asks for one study at ≥ 0.5× and a page of 20 at ≥ 0.25× the rate of
``/healthz``). Loading full ORM rows (with the ``result`` document), opening a session per
query and building statements per call cost more than the query itself. Here the statements
are built once, select only the columns a :class:`~service.schemas.StudyPublic` shows, and run
on one connection: the page (with its total as a scalar subquery) and the trial aggregate of
exactly that page. Stored specs are returned as stored: they were validated by ``StudyCreate``
when submitted, and re-validating every row on every read only costs time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select

from service.store.db import (
    TRIAL_SUMMARY,
    Store,
    StudyRow,
    TrialSummary,
    _as_utc,
    fold_trial_summaries,
)

__all__ = ["StudyView", "get_study_view", "study_page"]


@dataclass(frozen=True)
class StudyView:
    """The stored columns of one study a public view needs, and its trials' summary."""

    id: str
    name: str | None
    status: str
    spec: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    dashboard_url: str | None
    summary: TrialSummary


_COLUMNS = (StudyRow.id, StudyRow.name, StudyRow.status, StudyRow.spec, StudyRow.created_at,
            StudyRow.started_at, StudyRow.finished_at, StudyRow.error, StudyRow.dashboard_url)


def _page_query(with_status: bool) -> Any:
    count = select(func.count()).select_from(StudyRow)
    query = select(*_COLUMNS)
    if with_status:
        count = count.where(StudyRow.status == bindparam("status"))
        query = query.where(StudyRow.status == bindparam("status"))
    return (query.add_columns(count.scalar_subquery())
            .order_by(StudyRow.created_at.desc(), StudyRow.id)
            .limit(bindparam("limit")).offset(bindparam("offset")))


_PAGE = {False: _page_query(False), True: _page_query(True)}
_ONE = select(*_COLUMNS).where(StudyRow.id == bindparam("study_id"))


def _summaries(conn: Any, ids: list[str]) -> dict[str, TrialSummary]:
    if not ids:
        return {}
    return fold_trial_summaries(conn.execute(TRIAL_SUMMARY, {"ids": ids}))


def _view(row: Any, summaries: dict[str, TrialSummary]) -> StudyView:
    return StudyView(id=row[0], name=row[1], status=row[2], spec=row[3],
                     created_at=_as_utc(row[4]), started_at=_as_utc(row[5]),  # type: ignore[arg-type]
                     finished_at=_as_utc(row[6]), error=row[7], dashboard_url=row[8],
                     summary=summaries.get(row[0]) or TrialSummary())


def study_page(store: Store, *, status: str | None = None, limit: int = 50,
               offset: int = 0) -> tuple[list[StudyView], int]:
    """Newest first, like :meth:`Store.list_studies`; also the total matching ``status``."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status:
        params["status"] = status
    with store.engine.connect() as conn:
        rows = conn.execute(_PAGE[bool(status)], params).all()
        summaries = _summaries(conn, [r[0] for r in rows])
        if rows:
            total = int(rows[0][-1])
        else:  # past the last page: the subquery had no row to ride on
            count = select(func.count()).select_from(StudyRow)
            if status:
                count = count.where(StudyRow.status == status)
            total = int(conn.execute(count).scalar() or 0)
    return [_view(r, summaries) for r in rows], total


def get_study_view(store: Store, study_id: str) -> StudyView | None:
    """One study's view, or None."""
    with store.engine.connect() as conn:
        row = conn.execute(_ONE, {"study_id": study_id}).first()
        if row is None:
            return None
        return _view(row, _summaries(conn, [study_id]))
