"""Recommendation jobs: ``POST /v1/recommendations`` for a spec whose curvature must be
measured, run by a driver process instead of inside the request (issue 22: the measurement
took over 120 s under load, past any proxy's timeout).

The third kind of job on the studies' lifecycle (``service.launch.kinds``): queued, claimed
under the same cap, launched by the same runner, cancelled and reconciled the same way, with
the same lifecycle columns; this module holds only its table and row helpers.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.store.db import Base, QueueLimit, Store, utcnow


class RecommendationJobRow(Base):
    __tablename__ = "phitune_recommendation_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    #: the study body the φ is recommended for (``StudyCreate``, as stored by a study)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    #: the ``PhiRecommendation`` once succeeded
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # the same lifecycle columns as a study (queue, launches, driver identity, Ray Job id)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    driver_pid: Mapped[int | None] = mapped_column(Integer)
    driver_start: Mapped[str | None] = mapped_column(String(64))
    driver_job_id: Mapped[str | None] = mapped_column(String(200))
    launches: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


def create_job(store: Store, spec: dict[str, Any],
               limit: QueueLimit | None = None) -> RecommendationJobRow:
    """Store a queued job; with ``limit``, :class:`QueueFullError` when its queue is full
    (:meth:`Store.enqueue`)."""
    row = RecommendationJobRow(id=str(uuid.uuid4()), status="queued", spec=spec,
                               created_at=utcnow())
    store.enqueue(row, limit)
    return row


def get_job(store: Store, job_id: str) -> RecommendationJobRow | None:
    return store.get_job(RecommendationJobRow, job_id)
