"""Curvature jobs: a stored request, a driver process that runs the estimate as a Ray task
(so it gets a trial's CPU/GPU), and the stored report with φ suggestions.

Same pattern as studies (request stored → driver process → store), kept in its own module so
the study lifecycle code stays small.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.store.db import Base, Store, _as_utc, utcnow

logger = logging.getLogger(__name__)


class CurvatureJobRow(Base):
    __tablename__ = "phitune_curvature_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    suggestions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    timeline: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    driver_pid: Mapped[int | None] = mapped_column(Integer)


def create_job(store: Store, spec: dict[str, Any]) -> CurvatureJobRow:
    with store.session() as s:
        row = CurvatureJobRow(id=str(uuid.uuid4()), status="queued", spec=spec,
                              created_at=utcnow())
        s.add(row)
    return row


def count_active_jobs(store: Store) -> int:
    from sqlalchemy import func, select

    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(CurvatureJobRow)
                            .where(CurvatureJobRow.status.in_(("queued", "running")))) or 0)


def get_job(store: Store, job_id: str) -> CurvatureJobRow | None:
    with store.session() as s:
        row = s.get(CurvatureJobRow, job_id)
    if row is not None:
        row.created_at = _as_utc(row.created_at)  # type: ignore[assignment]
        row.finished_at = _as_utc(row.finished_at)
    return row


def update_job(store: Store, job_id: str, **fields: Any) -> None:
    with store.session() as s:
        row = s.get(CurvatureJobRow, job_id)
        if row is None:
            raise KeyError(job_id)
        for key, value in fields.items():
            setattr(row, key, value)
