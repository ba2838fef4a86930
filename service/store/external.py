"""External trials and their leases: the store side of agent mode (``trainer: external``).

A study's driver trains nothing itself for such a study: each Ray Tune trial is a proxy
(:mod:`service.launch.external`) that *offers* its trial here (a row with the trial file) and
waits for the result. Agents *claim* the oldest offered trial (a lease with a deadline),
renew it by heartbeats and *report* once. Why leases (W&B agents, Katib trials): an agent
may vanish (``kill -9``, a lost machine); its trial must then be trained by another agent,
and the vanished one's late report must never count a second time.

Every change is one conditional ``UPDATE`` whose ``WHERE`` states what must still hold (the
trial offered or its lease expired; the lease current, held by the caller and unexpired), so
two agents can never both claim a trial, and a report cannot race a re-offer: whichever
commits first wins, the other sees ``rowcount == 0`` and is told why. SQLite runs a writing
statement under its database write lock from its first read on; on PostgreSQL the claim's
subquery locks its row ``FOR UPDATE SKIP LOCKED``, so concurrent claims take different trials
instead of one waiting for the other and finding nothing.

A claim looks in two places, each an index seek on the claim index ``(study_id, status,
created_at, trial_id)`` already in claim order (migration 0010), never a sort of the study:
the oldest ``pending`` trial, and only when none is left the oldest ``leased`` one past its
``expires_at``. One ``WHERE`` with both (an ``OR``) would let the database use the index for
``study_id`` only and sort every trial of the study per claim, a cost growing with the study.
The second seek reads the study's ``leased`` rows in order until an expired one: at most one
per agent at work, so no index on ``expires_at`` is needed. Both seeks run first as a plain
read, and the updates only when it found something: an idle agent's poll (the call agents
make most, answered 204) then takes no write lock and commits nothing; the updates re-check,
so a trial claimed in between is simply not taken twice.

States of an external trial: ``pending`` (offered) → ``leased`` → ``succeeded`` | ``failed``;
``leased`` past ``expires_at`` is claimable like ``pending``. A proxy that Ray restarts after a
failed run offers the trial again (``failed`` → ``pending``); one restored after the result
was stored reports that result without a new lease (never trained or counted twice).
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.errors import LeaseConflictError, LeaseHolderError, LeaseNotFoundError
from service.store.db import Base, Store, _as_utc, utcnow

logger = logging.getLogger(__name__)

#: Trial states an agent can still change (claim, heartbeat, report).
OPEN_STATES = ("pending", "leased")


class ExternalTrialRow(Base):
    """One trial of an external study: its trial file, who leases it until when, its result."""

    __tablename__ = "phitune_external_trials"
    #: the claim reads the oldest trial of a study in one state, in claim order (created,
    #: then trial id): an index seek with no sort (migration 0010; 0007 lacked trial_id)
    __table_args__ = (Index("ix_phitune_external_trials_claim", "study_id", "status",
                            "created_at", "trial_id"),)

    study_id: Mapped[str] = mapped_column(ForeignKey("phitune_studies.id"), primary_key=True)
    trial_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_id: Mapped[str | None] = mapped_column(String(64))
    lease_holder: Mapped[str | None] = mapped_column(String(300))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    metrics: Mapped[dict[str, float] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LeaseRow(Base):
    """Every lease ever granted (an expired one stays, so its late report is a 409 naming
    why, not a 404)."""

    __tablename__ = "phitune_leases"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_id: Mapped[str] = mapped_column(String(36), index=True)
    trial_id: Mapped[str] = mapped_column(String(64))
    holder: Mapped[str] = mapped_column(String(300))
    attempt: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def _fix(row: ExternalTrialRow) -> ExternalTrialRow:
    for attr in ("expires_at", "created_at", "updated_at"):
        setattr(row, attr, _as_utc(getattr(row, attr)))
    return row


# ----------------------------------------------------------------------------- the driver side

def offer_trial(store: Store, study_id: str, trial_id: str,
                payload: dict[str, Any]) -> ExternalTrialRow:
    """Offer a trial to agents, or pick up where a restarted proxy left it: a new trial is
    inserted ``pending``; a ``failed`` one (Ray retries a failed trial) is offered again; a
    ``pending``, ``leased`` or ``succeeded`` one is returned as it is."""
    with store.session() as s:
        row = s.get(ExternalTrialRow, (study_id, trial_id), with_for_update=True)
        if row is None:
            now = utcnow()
            row = ExternalTrialRow(study_id=study_id, trial_id=trial_id, status="pending",
                                   payload=payload, attempt=0, created_at=now, updated_at=now)
            s.add(row)
        elif row.status == "failed":
            logger.info("study %s: trial %s failed before; offered again", study_id, trial_id)
            row.status, row.lease_id, row.lease_holder, row.expires_at = "pending", None, None, None
            row.metrics, row.error, row.payload, row.updated_at = None, None, payload, utcnow()
    return _fix(row)


def get_external_trial(store: Store, study_id: str, trial_id: str) -> ExternalTrialRow | None:
    with store.session() as s:
        row = s.get(ExternalTrialRow, (study_id, trial_id))
    return _fix(row) if row is not None else None


def list_external_trials(store: Store, study_id: str) -> list[ExternalTrialRow]:
    with store.session() as s:
        rows = list(s.scalars(select(ExternalTrialRow)
                              .where(ExternalTrialRow.study_id == study_id)
                              .order_by(ExternalTrialRow.created_at)))
    return [_fix(r) for r in rows]


def list_leases(store: Store, study_id: str) -> list[LeaseRow]:
    with store.session() as s:
        return list(s.scalars(select(LeaseRow).where(LeaseRow.study_id == study_id)
                              .order_by(LeaseRow.created_at)))


# ----------------------------------------------------------------------------- the agent side

def _claimable(t: Any, now: datetime) -> tuple[Any, Any]:
    """What a claim may take, in the order it looks: an offered trial, else one whose lease
    expired. Each is one state, so the claim index serves it without a sort (module doc)."""
    return t.c.status == "pending", and_(t.c.status == "leased", t.c.expires_at < now)


def _claim(t: Any, study_id: str, claimable: Any, now: datetime, lease_id: str, holder: str,
           ttl_s: float) -> Any:
    """The conditional ``UPDATE`` leasing the oldest ``claimable`` trial of the study (its
    ``WHERE`` re-checks ``claimable``; the subquery's row locked ``SKIP LOCKED`` on
    PostgreSQL), returning its trial id."""
    oldest = (select(t.c.trial_id).where(t.c.study_id == study_id, claimable)
              .order_by(t.c.created_at, t.c.trial_id).limit(1)
              .with_for_update(skip_locked=True).scalar_subquery())
    return (update(t)
            .where(t.c.study_id == study_id, t.c.trial_id == oldest, claimable)
            .values(status="leased", lease_id=lease_id, lease_holder=holder,
                    expires_at=now + timedelta(seconds=ttl_s), attempt=t.c.attempt + 1,
                    updated_at=now)
            .returning(t.c.trial_id))


def claim_trial(store: Store, study_id: str, holder: str,
                ttl_s: float) -> tuple[LeaseRow, ExternalTrialRow] | None:
    """Lease the oldest offered trial of the study to ``holder`` for ``ttl_s`` seconds, or,
    when none is offered, the oldest whose lease expired; None when every trial is leased or
    done right now (found by a read, no write). Each try is one conditional ``UPDATE`` (see
    the module docstring), the lease row inserted in the same transaction."""
    t = ExternalTrialRow.__table__
    now = utcnow()
    with store.session() as s:  # a read: nothing claimable (the idle poll) takes no write lock
        if all(s.execute(select(t.c.trial_id).where(t.c.study_id == study_id, claimable)
                         .limit(1)).first() is None for claimable in _claimable(t, now)):
            return None
    lease_id = secrets.token_urlsafe(18)  # a capability: unguessable, only its claimant has it
    with store.session() as s:
        for claimable in _claimable(t, now):
            trial_id = s.execute(_claim(t, study_id, claimable, now, lease_id, holder,
                                        ttl_s)).scalar()
            if trial_id is not None:
                break
        else:
            return None
        row = s.get(ExternalTrialRow, (study_id, trial_id))
        assert row is not None
        lease = LeaseRow(id=lease_id, study_id=study_id, trial_id=trial_id, holder=holder,
                         attempt=row.attempt, created_at=now)
        s.add(lease)
    logger.info("study %s: trial %s leased to %s (attempt %d)", study_id, trial_id, holder,
                row.attempt)
    return lease, _fix(row)


def require_lease(store: Store, lease_id: str) -> LeaseRow:
    """The lease, or :class:`LeaseNotFoundError` (404)."""
    with store.session() as s:
        lease = s.get(LeaseRow, lease_id)
    if lease is None:
        raise LeaseNotFoundError(lease_id)
    return lease


def _valid_lease(t: Any, lease_id: str, holder: str, now: datetime) -> Any:
    return and_(t.c.lease_id == lease_id, t.c.lease_holder == holder, t.c.status == "leased",
                t.c.expires_at >= now)


def renew_lease(store: Store, lease: LeaseRow, holder: str, ttl_s: float) -> ExternalTrialRow:
    """Extend a valid lease by ``ttl_s`` from now; why not otherwise (:func:`_refusal`)."""
    t = ExternalTrialRow.__table__
    now = utcnow()
    with store.session() as s:
        done = s.execute(update(t).where(t.c.study_id == lease.study_id,
                                         t.c.trial_id == lease.trial_id,
                                         _valid_lease(t, lease.id, holder, now))
                         .values(expires_at=now + timedelta(seconds=ttl_s), updated_at=now))
        row = s.get(ExternalTrialRow, (lease.study_id, lease.trial_id))
    assert row is not None
    if not done.rowcount:  # type: ignore[attr-defined]
        raise _refusal(lease, holder, _fix(row), now, "renewed")
    return _fix(row)


def report_lease(store: Store, lease: LeaseRow, holder: str, *, metrics: dict[str, float] | None,
                 error: str | None) -> tuple[ExternalTrialRow, bool]:
    """Store the run's outcome (``metrics``, or failed with ``error`` when ``metrics`` is
    None) once, from the lease's holder while it is valid. Returns (row, stored now).

    The same lease reporting the same outcome again gets the stored row (idempotent, False);
    a different outcome, an expired or replaced lease: :class:`LeaseConflictError`."""
    t = ExternalTrialRow.__table__
    now = utcnow()
    status = "failed" if metrics is None else "succeeded"
    with store.session() as s:
        done = s.execute(update(t).where(t.c.study_id == lease.study_id,
                                         t.c.trial_id == lease.trial_id,
                                         _valid_lease(t, lease.id, holder, now))
                         .values(status=status, metrics=metrics, error=error,
                                 expires_at=None, updated_at=now))
        row = s.get(ExternalTrialRow, (lease.study_id, lease.trial_id))
    assert row is not None
    row = _fix(row)
    if done.rowcount:  # type: ignore[attr-defined]
        logger.info("study %s: trial %s %s (lease %s…)", lease.study_id, lease.trial_id, status,
                    lease.id[:6])
        return row, True
    if lease.holder != holder:
        raise LeaseHolderError(lease.id)
    if row.lease_id == lease.id and row.status in ("succeeded", "failed"):
        if (row.status, row.metrics, row.error) == (status, metrics, error):
            return row, False
        raise LeaseConflictError(
            f"lease {lease.id!r} reported trial {lease.trial_id} as {row.status} already; a "
            "lease reports once (the same body again is accepted, a different one is not)")
    raise _refusal(lease, holder, row, now, "reported")


def _refusal(lease: LeaseRow, holder: str, row: ExternalTrialRow, now: datetime,
             action: str) -> Exception:
    """Why a lease cannot be renewed or reported (its conditional update changed nothing)."""
    if lease.holder != holder:
        return LeaseHolderError(lease.id)
    if row.lease_id != lease.id:
        return LeaseConflictError(
            f"lease {lease.id!r} expired and trial {lease.trial_id} was offered again (now "
            f"attempt {row.attempt}); this lease can no longer be {action}")
    if row.status in ("succeeded", "failed"):
        return LeaseConflictError(f"lease {lease.id!r}: trial {lease.trial_id} is "
                                  f"{row.status} already")
    return LeaseConflictError(
        f"lease {lease.id!r} expired at {row.expires_at.isoformat() if row.expires_at else '?'} "
        f"(now {now.isoformat()}); its trial {lease.trial_id} is offered again: heartbeat more "
        "often than the lease TTL")
