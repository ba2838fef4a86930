"""Curvature jobs: a stored request, a driver process that runs the estimate as a Ray task
(so it gets a trial's CPU/GPU), and the stored report with φ suggestions.

The second kind of job on the studies' lifecycle (``service.launch.kinds``): queued, claimed
under the same cap, launched by the same runner, cancelled and reconciled the same way, with
the same lifecycle columns; this module holds only its table and row helpers.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import JSON
from sqlalchemy.orm import Mapped, mapped_column

from service.store.db import Base, JobColumns, QueueLimit, Store

logger = logging.getLogger(__name__)


class CurvatureJobRow(JobColumns, Base):
    __tablename__ = "phitune_curvature_jobs"

    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    suggestions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    timeline: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


def create_job(store: Store, spec: dict[str, Any],
               limit: QueueLimit | None = None) -> CurvatureJobRow:
    """Store a queued job; with ``limit``, :class:`QueueFullError` when its queue is full."""
    return store.create_job(CurvatureJobRow, spec, limit)


def get_job(store: Store, job_id: str) -> CurvatureJobRow | None:
    return store.get_job(CurvatureJobRow, job_id)


def update_job(store: Store, job_id: str, **fields: Any) -> None:
    with store.session() as s:
        row = s.get(CurvatureJobRow, job_id)
        if row is None:
            raise KeyError(job_id)
        for key, value in fields.items():
            setattr(row, key, value)
