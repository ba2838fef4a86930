"""Persistent state: studies and their trials, in SQLite by default or PostgreSQL by URL.

The API writes a study row ("queued") and reads; the driver process writes progress and the
final result. SQLite runs in WAL mode so the API can read while a driver writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class StudyRow(Base):
    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    dashboard_url: Mapped[str | None] = mapped_column(String(500))
    driver_pid: Mapped[int | None] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)


class TrialRow(Base):
    __tablename__ = "trials"

    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    trial_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    budget_steps: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    step: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    value: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def _as_utc(value: datetime | None) -> datetime | None:
    """SQLite drops tzinfo; every timestamp we write is UTC, so put it back."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _fix_times(row: StudyRow) -> StudyRow:
    for attr in ("created_at", "started_at", "finished_at"):
        setattr(row, attr, _as_utc(getattr(row, attr)))
    return row


class Store:
    """Thin repository over a SQLAlchemy engine; every method is one short transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __reduce__(self) -> tuple[type[Store], tuple[str]]:
        """Pickle as the URL: Ray Tune pickles its run config (and so our sink callback) into
        the experiment state; a restored driver reconnects to the same database."""
        return (Store, (self.url,))

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def ping(self) -> None:
        with self.session() as s:
            s.execute(select(1))

    # studies -----------------------------------------------------------------------------
    def create_study(self, spec: dict[str, Any], name: str | None,
                     idempotency_key: str | None = None) -> tuple[StudyRow, bool]:
        """Insert a queued study; with an idempotency key seen before, return that study.

        Returns (row, created).
        """
        with self.session() as s:
            if idempotency_key:
                existing = s.scalar(
                    select(StudyRow).where(StudyRow.idempotency_key == idempotency_key)
                )
                if existing is not None:
                    return existing, False
            row = StudyRow(id=str(uuid.uuid4()), name=name, status="queued", spec=spec,
                           created_at=utcnow(), idempotency_key=idempotency_key)
            s.add(row)
        return row, True

    def find_by_idempotency_key(self, key: str) -> StudyRow | None:
        with self.session() as s:
            row = s.scalar(select(StudyRow).where(StudyRow.idempotency_key == key))
        return _fix_times(row) if row is not None else None

    def get_study(self, study_id: str) -> StudyRow | None:
        with self.session() as s:
            row = s.get(StudyRow, study_id)
        if row is not None:
            for attr in ("created_at", "started_at", "finished_at"):
                setattr(row, attr, _as_utc(getattr(row, attr)))
        return row

    def list_studies(self, *, status: str | None = None, limit: int = 50,
                     offset: int = 0) -> tuple[list[StudyRow], int]:
        with self.session() as s:
            query = select(StudyRow)
            count_q = select(func.count()).select_from(StudyRow)
            if status:
                query = query.where(StudyRow.status == status)
                count_q = count_q.where(StudyRow.status == status)
            rows = list(s.scalars(query.order_by(StudyRow.created_at.desc())
                                  .limit(limit).offset(offset)))
            total = int(s.scalar(count_q) or 0)
        for row in rows:
            for attr in ("created_at", "started_at", "finished_at"):
                setattr(row, attr, _as_utc(getattr(row, attr)))
        return rows, total

    def count_active(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(StudyRow)
                                .where(StudyRow.status.in_(("queued", "running")))) or 0)

    def update_study(self, study_id: str, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(StudyRow, study_id)
            if row is None:
                raise KeyError(study_id)
            for key, value in fields.items():
                setattr(row, key, value)

    def finish_study(self, study_id: str, status: str, *, error: str | None = None,
                     result: dict[str, Any] | None = None) -> bool:
        """Move a study to a terminal state unless it already is in one (a cancel wins over a
        driver that reports success a moment later). Returns whether it changed."""
        with self.session() as s:
            row = s.get(StudyRow, study_id, with_for_update=True)
            if row is None or row.status in ("succeeded", "failed", "cancelled"):
                return False
            row.status, row.error, row.finished_at = status, error, utcnow()
            if result is not None:
                row.result = result
            return True

    # trials ------------------------------------------------------------------------------
    def upsert_trial(self, study_id: str, trial_id: str, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(TrialRow, (study_id, trial_id))
            if row is None:
                row = TrialRow(study_id=study_id, trial_id=trial_id)
                s.add(row)
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated_at = utcnow()

    def list_trials(self, study_id: str) -> list[TrialRow]:
        with self.session() as s:
            rows = list(s.scalars(select(TrialRow).where(TrialRow.study_id == study_id)
                                  .order_by(TrialRow.budget_steps, TrialRow.trial_id)))
        for row in rows:
            row.updated_at = _as_utc(row.updated_at)  # type: ignore[assignment]
        return rows


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
