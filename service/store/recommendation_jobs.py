"""Recommendation jobs: ``POST /v1/recommendations`` for a spec whose curvature must be
measured, run by a driver process instead of inside the request (issue 22: the measurement
took over 120 s under load, past any proxy's timeout).

The third kind of job on the studies' lifecycle (``service.launch.kinds``): queued, claimed
under the same cap, launched by the same runner, cancelled and reconciled the same way, with
the same lifecycle columns; this module holds only its table and row helpers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON
from sqlalchemy.orm import Mapped, mapped_column

from service.store.db import Base, JobColumns, QueueLimit, Store


class RecommendationJobRow(JobColumns, Base):
    __tablename__ = "phitune_recommendation_jobs"

    # ``spec``: the study body the φ is recommended for (``StudyCreate``, as stored by a study)
    #: the ``PhiRecommendation`` once succeeded
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


def create_job(store: Store, spec: dict[str, Any],
               limit: QueueLimit | None = None) -> RecommendationJobRow:
    """Store a queued job; with ``limit``, :class:`QueueFullError` when its queue is full."""
    return store.create_job(RecommendationJobRow, spec, limit)


def get_job(store: Store, job_id: str) -> RecommendationJobRow | None:
    return store.get_job(RecommendationJobRow, job_id)
