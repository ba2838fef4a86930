"""Curvature jobs: a stored request, a driver process that runs the estimate as a Ray task
(so it gets a trial's CPU/GPU), and the stored report with φ suggestions.

The second kind of job on the studies' lifecycle (``service.launch.kinds``): queued, claimed
under the same cap, launched by the same runner, cancelled and reconciled the same way, with
the same lifecycle columns; this module holds only its table and row helpers.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.store.db import Base, QueueLimit, Store, utcnow

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
    # the same lifecycle columns as a study (queue, launches, driver identity, Ray Job id)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    driver_pid: Mapped[int | None] = mapped_column(Integer)
    driver_start: Mapped[str | None] = mapped_column(String(64))
    driver_job_id: Mapped[str | None] = mapped_column(String(200))
    launches: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


def create_job(store: Store, spec: dict[str, Any],
               limit: QueueLimit | None = None) -> CurvatureJobRow:
    """Store a queued job; with ``limit``, :class:`QueueFullError` when its queue is full
    (:meth:`Store.enqueue`)."""
    row = CurvatureJobRow(id=str(uuid.uuid4()), status="queued", spec=spec,
                          created_at=utcnow())
    store.enqueue(row, limit)
    return row


def get_job(store: Store, job_id: str) -> CurvatureJobRow | None:
    return store.get_job(CurvatureJobRow, job_id)


def update_job(store: Store, job_id: str, **fields: Any) -> None:
    with store.session() as s:
        row = s.get(CurvatureJobRow, job_id)
        if row is None:
            raise KeyError(job_id)
        for key, value in fields.items():
            setattr(row, key, value)
