"""Persistent state: studies and their trials, in SQLite by default or PostgreSQL by URL.

The API writes a study row ("queued") and reads; the driver process writes progress and the
final result. SQLite runs in WAL mode so the API can read while a driver writes.

The schema is versioned with Alembic (``service/migrations``, version table
:data:`VERSION_TABLE`); the API upgrades it at startup, drivers only use it.
"""

from __future__ import annotations

import fcntl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from service.schemas import TERMINAL_STATUSES

#: Alembic version table of phitune's schema. Optuna's RDB storage, which may share the
#: database, owns ``alembic_version`` and the tables ``studies``/``trials``, hence the prefixes.
VERSION_TABLE = "phitune_alembic_version"
MIGRATIONS = Path(__file__).parent.parent / "migrations"
#: PostgreSQL advisory lock key serialising queue claims (:meth:`Store.claim_next`).
QUEUE_LOCK_KEY = 7472731
#: Trial statuses of a trial that has not ended; a stopped driver's trials leave them.
UNFINISHED_TRIAL_STATUSES = ("pending", "running")
#: ``trainer`` of a study the user's own process runs (``service.library``): stored
#: ``running`` with no driver, it takes no server slot and is never launched.
LIBRARY_TRAINER = "library"


def uses_server_slot(t: Any) -> Any:
    """SQL condition: a row of job table ``t`` that runs on the server's compute (every
    curvature or recommendation job; a study unless its ``trainer`` is ``library``). The
    queue's slot counts (:meth:`Store.claim_next`, the queue bound) count only these."""
    if t.name != "phitune_studies":
        return true()
    trainer = t.c.spec["trainer"].as_string()
    return or_(trainer.is_(None), trainer != LIBRARY_TRAINER)


def is_library_study(row: Any) -> bool:
    """Whether a job row is a library-mode study (recorded; no driver to launch or watch)."""
    spec = getattr(row, "spec", None)
    return isinstance(row, StudyRow) and isinstance(spec, dict) and \
        spec.get("trainer") == LIBRARY_TRAINER


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class JobColumns:
    """The columns every job kind (curvature, recommendation) shares: its id, state, spec and
    times, and the same lifecycle columns as a study (queue, launches, driver identity, Ray Job
    id) that the runner, cancel and reconcile read. A job's table adds only its results."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    driver_pid: Mapped[int | None] = mapped_column(Integer)
    driver_start: Mapped[str | None] = mapped_column(String(64))
    driver_job_id: Mapped[str | None] = mapped_column(String(200))
    launches: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class StudyRow(Base):
    __tablename__ = "phitune_studies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    dashboard_url: Mapped[str | None] = mapped_column(String(500))
    driver_pid: Mapped[int | None] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    launches: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    driver_job_id: Mapped[str | None] = mapped_column(String(200))
    #: when the driver process started (``service.launch.runner.process_start``): with the
    #: pid it identifies the driver, so a reused pid is not taken for it
    driver_start: Mapped[str | None] = mapped_column(String(64))
    #: a library study's last sign of life from the process running it (its heartbeat, a
    #: trial record; set at creation): reconcile fails it once this is too old (0011)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TrialRow(Base):
    __tablename__ = "phitune_trials"
    #: covering index of the trial summaries (:data:`TRIAL_SUMMARY`, the read views; 0006)
    __table_args__ = (Index("ix_phitune_trials_summary", "study_id", "status", "budget_steps",
                            "value"),)

    study_id: Mapped[str] = mapped_column(ForeignKey("phitune_studies.id"), primary_key=True)
    trial_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    budget_steps: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    step: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    value: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    node_ip: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def _as_utc(value: datetime | None) -> datetime | None:
    """SQLite drops tzinfo; every timestamp we write is UTC, so put it back."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass
class TrialSummary:
    """Per-study trial counts by status, and the extreme finite values of the finished runs at
    the longest horizon any run has finished (``best_steps``), for progress.

    Why one horizon: the ladder trains complete schedules at several horizons, and a value at
    T/3 is no rival of one at T (a short run usually ends worse, sometimes better); the best
    over all rungs would jump between horizons as a study runs. A running trial's value is
    an intermediate one, which ranks schedules backwards (design.md), so it counts only once
    the trial has ``terminated`` at its horizon.
    """

    counts: dict[str, int] = field(default_factory=dict)
    best_steps: int | None = None
    max_value: float | None = None
    min_value: float | None = None

    def add(self, status: str, steps: int, count: int, hi: float | None,
            lo: float | None) -> None:
        """Fold in one group of :data:`TRIAL_SUMMARY` (one status at one horizon)."""
        self.counts[status] = self.counts.get(status, 0) + int(count)
        if status != "terminated" or hi is None or lo is None:
            return
        if self.best_steps is None or steps > self.best_steps:
            self.best_steps, self.max_value, self.min_value = steps, hi, lo
        elif steps == self.best_steps:
            assert self.max_value is not None and self.min_value is not None
            self.max_value, self.min_value = max(self.max_value, hi), min(self.min_value, lo)


#: Counts and extreme values per study, status and horizon, for ``ids`` (expanding): one
#: query for a whole page, folded by :func:`fold_trial_summaries`.
TRIAL_SUMMARY = (
    select(TrialRow.study_id, TrialRow.status, TrialRow.budget_steps, func.count(),
           func.max(TrialRow.value), func.min(TrialRow.value))
    .where(TrialRow.study_id.in_(bindparam("ids", expanding=True)))
    .group_by(TrialRow.study_id, TrialRow.status, TrialRow.budget_steps))


def fold_trial_summaries(rows: Any) -> dict[str, TrialSummary]:
    """Rows of :data:`TRIAL_SUMMARY` → one :class:`TrialSummary` per study."""
    out: dict[str, TrialSummary] = {}
    for study_id, status, steps, count, hi, lo in rows:
        out.setdefault(study_id, TrialSummary()).add(status, steps, count, hi, lo)
    return out


@dataclass(frozen=True)
class QueueLimit:
    """How many jobs of one kind may wait: ``max_queued`` beyond the slots that are free
    (``max_running`` minus those running); from ``max_concurrent_studies`` and
    ``max_queued_studies``."""

    max_running: int
    max_queued: int


class QueueFullError(Exception):
    """A new job was refused: its queue is full (the API answers 429 with these counts)."""

    def __init__(self, running: int, queued: int) -> None:
        super().__init__(f"queue full: {running} running, {queued} queued")
        self.running, self.queued = running, queued

    def __reduce__(self) -> tuple[type, tuple[int, int]]:
        # pickles with its counts (Ray and multiprocessing pickle exceptions by their args)
        return type(self), (self.running, self.queued)


def _fix_times(row: Any) -> Any:
    for attr in ("created_at", "started_at", "finished_at"):
        setattr(row, attr, _as_utc(getattr(row, attr)))
    return row


class Store:
    """Thin repository over a SQLAlchemy engine; every method is one short transaction."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            # a server may drop idle connections; a local SQLite file cannot (and a ping
            # per checkout would be a third of a small read's cost)
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        if migrate:
            upgrade_schema(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __reduce__(self) -> tuple[type[Store], tuple[str]]:
        """Pickle as the URL: Ray Tune pickles its run config (and so our sink callback) into
        the experiment state; a restored driver reconnects to the same database."""
        return (_store_without_migration, (self.url,))

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def ping(self) -> None:
        with self.session() as s:
            s.execute(select(1))

    # studies -----------------------------------------------------------------------------
    def create_study(self, spec: dict[str, Any], name: str | None,
                     idempotency_key: str | None = None, *,
                     limit: QueueLimit | None = None) -> tuple[StudyRow, bool]:
        """Insert a queued study; with an idempotency key seen before, return that study.
        With ``limit``, :class:`QueueFullError` when the queue is full (:meth:`enqueue`).

        Returns (row, created).
        """
        if idempotency_key:
            existing = self.find_by_idempotency_key(idempotency_key)
            if existing is not None:
                return existing, False
        row = StudyRow(id=str(uuid.uuid4()), name=name, status="queued", spec=spec,
                       created_at=utcnow(), idempotency_key=idempotency_key)
        try:
            self.enqueue(row, limit)
        except IntegrityError:
            # two requests with the same new key raced; the unique constraint picked one
            existing = self.find_by_idempotency_key(idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return existing, False
        return row, True

    def create_library_study(self, spec: dict[str, Any], name: str | None,
                             idempotency_key: str | None = None) -> tuple[StudyRow, bool]:
        """Insert a library-mode study (``trainer: library``) as ``running`` at once: the
        user's process runs it, so there is no queued row a driver could claim and no queue
        bound (it takes no server slot). With an idempotency key seen before, return that
        study. Returns (row, created)."""
        if spec.get("trainer") != LIBRARY_TRAINER:
            raise ValueError(f"create_library_study: trainer {spec.get('trainer')!r} is not "
                             f"{LIBRARY_TRAINER!r}")
        if idempotency_key:
            existing = self.find_by_idempotency_key(idempotency_key)
            if existing is not None:
                return existing, False
        now = utcnow()
        row = StudyRow(id=str(uuid.uuid4()), name=name, status="running", spec=spec,
                       created_at=now, started_at=now, heartbeat_at=now,
                       idempotency_key=idempotency_key)
        try:
            with self.session() as s:
                s.add(row)
        except IntegrityError:
            existing = self.find_by_idempotency_key(idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return existing, False
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

    def beat_library_study(self, study_id: str) -> datetime | None:
        """A sign of life of the process running library study ``study_id``: its
        ``heartbeat_at`` set to now while it runs. Returns that time, or None when the study
        is not running (it ended meanwhile)."""
        now = utcnow()
        with self.session() as s:
            done = s.execute(update(StudyRow)
                             .where(StudyRow.id == study_id, StudyRow.status == "running")
                             .values(heartbeat_at=now))
        return now if done.rowcount else None  # type: ignore[attr-defined]

    def fail_silent_library_study(self, study_id: str, cutoff: datetime, error: str) -> bool:
        """Fail running library study ``study_id`` with ``error`` if its last sign of life
        (``heartbeat_at``; ``started_at`` for a study stored before 0011) is older than
        ``cutoff``: one conditional update, so a heartbeat that lands first keeps it running.
        Returns whether it failed it."""
        silent = or_(StudyRow.heartbeat_at < cutoff,
                     and_(StudyRow.heartbeat_at.is_(None), StudyRow.started_at < cutoff))
        with self.session() as s:
            done = s.execute(update(StudyRow)
                             .where(StudyRow.id == study_id, StudyRow.status == "running",
                                    silent)
                             .values(status="failed", finished_at=utcnow(), error=error))
        return bool(done.rowcount)  # type: ignore[attr-defined]

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
        fields: dict[str, Any] = {"error": error}
        if result is not None:
            fields["result"] = result
        return self.finish_job(StudyRow, study_id, status, **fields)

    def reopen_study(self, study_id: str, spec: dict[str, Any],
                     limit: QueueLimit | None = None) -> bool:
        """A succeeded study back to ``queued`` with ``spec`` (``:extend``), in one
        conditional update so two requests cannot both reopen it, and with ``limit`` the
        queue bound checked in the same transaction as :meth:`enqueue` does
        (:class:`QueueFullError`, nothing changed). Its result stays readable until the new
        run replaces it; the launch count starts again (reconcile's cap is per run). Returns
        whether it was reopened."""
        with self.session() as s:
            self._queue_lock(s)
            done = s.execute(
                update(StudyRow)
                .where(StudyRow.id == study_id, StudyRow.status == "succeeded")
                .values(status="queued", spec=spec, started_at=None, finished_at=None,
                        error=None, launches=0, driver_pid=None, driver_job_id=None,
                        driver_start=None))
            if not done.rowcount:  # type: ignore[attr-defined]
                return False
            self._check_queue_bound(s, StudyRow.__table__, limit)
            return True

    # trials ------------------------------------------------------------------------------
    def upsert_trial(self, study_id: str, trial_id: str, **fields: Any) -> None:
        """Create or update a trial's row. A ``terminated`` row (the trial trained its whole
        horizon) is final and not changed again: a relaunched driver whose Tune snapshot
        predates that finish resumes the trial from its final checkpoint, which only evaluates
        again and would flip the row to ``running`` and replace its metrics."""
        with self.session() as s:
            row = s.get(TrialRow, (study_id, trial_id))
            if row is not None and row.status == "terminated":
                return
            if row is None:
                row = TrialRow(study_id=study_id, trial_id=trial_id)
                s.add(row)
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated_at = utcnow()

    def list_trials(self, study_id: str, *, status: str | None = None,
                    budget_steps: int | None = None, limit: int | None = None,
                    offset: int = 0) -> list[TrialRow]:
        with self.session() as s:
            query = select(TrialRow).where(TrialRow.study_id == study_id)
            if status:
                query = query.where(TrialRow.status == status)
            if budget_steps is not None:
                query = query.where(TrialRow.budget_steps == budget_steps)
            query = query.order_by(TrialRow.budget_steps, TrialRow.trial_id).offset(offset)
            if limit is not None:
                query = query.limit(limit)
            rows = list(s.scalars(query))
        for row in rows:
            row.updated_at = _as_utc(row.updated_at)  # type: ignore[assignment]
        return rows

    def count_trials(self, study_id: str, *, status: str | None = None,
                     budget_steps: int | None = None) -> int:
        with self.session() as s:
            query = select(func.count()).select_from(TrialRow).where(
                TrialRow.study_id == study_id)
            if status:
                query = query.where(TrialRow.status == status)
            if budget_steps is not None:
                query = query.where(TrialRow.budget_steps == budget_steps)
            return int(s.scalar(query) or 0)

    def trial_summaries(self, study_ids: list[str]) -> dict[str, TrialSummary]:
        """Counts per status and max/min value of several studies' trials in one query (a
        list page must not cost one trial query per study)."""
        if not study_ids:
            return {}
        with self.session() as s:
            return fold_trial_summaries(s.execute(TRIAL_SUMMARY, {"ids": list(study_ids)}))

    def record_launch(self, study_id: str, *, pid: int | None = None,
                      job_id: str | None = None, driver_start: str | None = None,
                      table: type[Any] = StudyRow) -> int:
        """Remember who runs the job now and count launches (reconcile caps relaunches so a
        driver that dies at start cannot loop forever). Returns the launch count."""
        with self.session() as s:
            row = s.get(table, study_id, with_for_update=True)
            if row is None:
                raise KeyError(study_id)
            row.driver_pid, row.driver_job_id, row.driver_start = pid, job_id, driver_start
            row.launches = (row.launches or 0) + 1
            return row.launches

    # the queue: studies and curvature jobs (``table``) share these steps ----------------------
    def _queue_lock(self, s: Session) -> None:
        """PostgreSQL: serialise queue changes (claims, submits) with a transaction-scoped
        advisory lock. SQLite needs none: a writing statement holds its database write lock."""
        if s.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
            s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": QUEUE_LOCK_KEY})

    def enqueue(self, row: Any, limit: QueueLimit | None = None) -> None:
        """Insert a new ``queued`` job ``row`` (a study or a curvature job) unless its queue
        is full: more than ``limit.max_queued`` would wait beyond the free slots. Raises
        :class:`QueueFullError` then, storing nothing.

        Why one transaction with the insert first: a count and a later insert let concurrent
        submits all pass the same count and overshoot the queue. Here the insert comes first
        and the counts after it, in the same transaction. On SQLite the insert takes the
        database write lock, so no other submit or claim commits between it and the counts
        (and the counts see every one committed before); on PostgreSQL the queue's advisory
        lock (:meth:`claim_next` takes it too) serialises submits and claims first, and each
        count (READ COMMITTED) sees what the previous holder committed. A full queue raises
        inside the transaction, which rolls the insert back.
        """
        t = type(row).__table__
        with self.session() as s:
            self._queue_lock(s)
            s.add(row)
            s.flush()
            self._check_queue_bound(s, t, limit)

    def _check_queue_bound(self, s: Session, t: Any, limit: QueueLimit | None) -> None:
        """After a job was added to ``t``'s queue in this transaction (under the queue lock):
        :class:`QueueFullError` (rolling the change back) when more than ``limit.max_queued``
        jobs would wait beyond the free slots; counts exclude the job just added."""
        if limit is None:
            return
        counts = dict(s.execute(
            select(t.c.status, func.count()).where(t.c.status.in_(("running", "queued")),
                                                   uses_server_slot(t))
            .group_by(t.c.status)).all())
        running, queued = int(counts.get("running", 0)), int(counts.get("queued", 0))
        if queued > limit.max_queued + max(0, limit.max_running - running):
            raise QueueFullError(running, queued - 1)

    def claim_next(self, table: type[Any], cap: int) -> str | None:
        """Start the oldest ``queued`` job of ``table`` if fewer than ``cap`` are ``running``;
        returns its id, or None when nothing is queued or every slot is taken.

        The check and the claim are one conditional ``UPDATE`` so two API replicas (or two
        requests) can never both take the last slot. SQLite runs a writing statement under
        its database write lock, from its first read on. PostgreSQL (READ COMMITTED) would let
        two statements count the same snapshot, so a transaction-scoped advisory lock
        serialises the claims first; the statement's snapshot is then taken after the previous
        claim committed.
        """
        t = table.__table__
        oldest = (select(t.c.id).where(t.c.status == "queued")
                  .order_by(t.c.created_at, t.c.id).limit(1).scalar_subquery())
        running = (select(func.count()).select_from(t)
                   .where(t.c.status == "running", uses_server_slot(t)).scalar_subquery())
        claim = (update(t).where(t.c.id == oldest, t.c.status == "queued", running < cap)
                 .values(status="running", started_at=utcnow()).returning(t.c.id))
        with self.session() as s:
            self._queue_lock(s)
            return s.execute(claim).scalar()

    def requeue(self, table: type[Any], job_id: str, *, count: bool = True) -> int:
        """A claimed job whose launch failed goes back to ``queued`` (its place in the queue
        is its submission time); ``count``: as a launch attempt. Returns the attempts."""
        with self.session() as s:
            row = s.get(table, job_id, with_for_update=True)
            if row is None:
                raise KeyError(job_id)
            row.launches = (row.launches or 0) + int(count)
            if row.status == "running":
                row.status, row.started_at = "queued", None
            return row.launches

    def count_status(self, table: type[Any], *statuses: str) -> int:
        """Jobs of ``table`` in ``statuses`` that use the server's compute (a library study
        does not: :func:`uses_server_slot`)."""
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(table)
                                .where(table.status.in_(statuses),
                                       uses_server_slot(table.__table__))) or 0)

    def rows_with_status(self, table: type[Any], status: str,
                         limit: int = 10_000) -> list[Any]:
        """Jobs of ``table`` in ``status``, oldest first (reconcile's work list)."""
        with self.session() as s:
            rows = list(s.scalars(select(table).where(table.status == status)
                                  .order_by(table.created_at).limit(limit)))
        return [_fix_times(row) for row in rows]

    def create_job(self, table: type[Any], spec: dict[str, Any],
                   limit: QueueLimit | None = None) -> Any:
        """Store a queued job of ``table`` (a :class:`JobColumns` table); with ``limit``,
        :class:`QueueFullError` when its queue is full (:meth:`enqueue`)."""
        row = table(id=str(uuid.uuid4()), status="queued", spec=spec, created_at=utcnow())
        self.enqueue(row, limit)
        return row

    def get_job(self, table: type[Any], job_id: str) -> Any | None:
        with self.session() as s:
            row = s.get(table, job_id)
        return _fix_times(row) if row is not None else None

    def finish_job(self, table: type[Any], job_id: str, status: str, **fields: Any) -> bool:
        """Move a job to a terminal state unless it already is in one; ``fields`` are written
        with it (error, result, report ...). Returns whether it changed."""
        with self.session() as s:
            row = s.get(table, job_id, with_for_update=True)
            if row is None or row.status in TERMINAL_STATUSES:
                return False
            row.status, row.finished_at = status, utcnow()
            for key, value in fields.items():
                setattr(row, key, value)
            return True

    def mark_running(self, table: type[Any], job_id: str) -> bool:
        """A driver starts work: ``running`` (kept from the claim), ``started_at`` set once.
        False when the job is terminal already (a cancel raced the driver's start): the driver
        must then stop instead of running a cancelled study."""
        with self.session() as s:
            row = s.get(table, job_id, with_for_update=True)
            if row is None or row.status in TERMINAL_STATUSES:
                return False
            row.status = "running"
            row.started_at = row.started_at or utcnow()
            return True

    def recently_finished(self, table: type[Any], since: datetime) -> list[str]:
        """Ids of jobs of ``table`` that ended at or after ``since``."""
        with self.session() as s:
            return list(s.scalars(select(table.id).where(
                table.status.in_(sorted(TERMINAL_STATUSES)), table.finished_at >= since)))

    def finalize_trials(self, study_id: str, status: str, error: str | None) -> int:
        """Trials a stopped driver left ``running``/``pending`` get their final ``status``
        (``cancelled`` or ``error``) and the reason; returns how many."""
        with self.session() as s:
            result = s.execute(
                update(TrialRow)
                .where(TrialRow.study_id == study_id,
                       TrialRow.status.in_(UNFINISHED_TRIAL_STATUSES))
                .values(status=status, error=error, updated_at=utcnow()))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def studies_with_unfinished_trials(self, statuses: tuple[str, ...]) -> list[str]:
        """Studies in ``statuses`` that still have trials ``running``/``pending``."""
        with self.session() as s:
            return list(s.scalars(
                select(StudyRow.id).where(StudyRow.status.in_(statuses)).where(
                    select(TrialRow.trial_id).where(
                        TrialRow.study_id == StudyRow.id,
                        TrialRow.status.in_(UNFINISHED_TRIAL_STATUSES)).exists())))


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest schema revision.

    A database created before migrations existed (tables, no version row) is stamped at the
    initial revision first, so its data is kept and only the later steps run.
    """
    from alembic import command

    with _migration_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # API replicas may start together: one migrates, the others wait, then see head.
            connection.execute(text("SELECT pg_advisory_xact_lock(7472730)"))
        config = _alembic_config(connection)
        inspector = inspect(connection)
        tables = set(inspector.get_table_names())
        if VERSION_TABLE not in tables and "studies" in tables and "idempotency_key" in {
                c["name"] for c in inspector.get_columns("studies")}:
            # phitune's first release (``create_all``), not Optuna's table of the same name
            command.stamp(config, "0001")
        command.upgrade(config, "head")


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """SQLite has no advisory locks: serialise migrations of one database file with flock."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def head_revision() -> str:
    """The newest revision in ``service/migrations`` (what :func:`upgrade_schema` reaches)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def schema_revision(engine: Engine) -> str | None:
    """The schema revision stored in the database (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        context = MigrationContext.configure(connection,
                                             opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def _store_without_migration(url: str) -> Store:
    return Store(url, migrate=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
