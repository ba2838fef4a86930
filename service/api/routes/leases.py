"""Leases: how agents train the trials of a ``trainer: external`` study.

``POST /v1/studies/{id}/leases`` claims the oldest offered trial (201 with the lease and the
trial file; 204 when every trial is leased or done right now; 410 once the study ended),
``POST /v1/leases/{lease}/heartbeat`` extends the lease by ``PHITUNE_LEASE_TTL_S``,
``POST /v1/leases/{lease}/result`` reports the run once. The state changes are the store's
conditional updates (:mod:`service.store.external`); the routes only check who asks and what
they send.

Who holds a lease: the caller's principal, the API token's fingerprint (``local`` without a
token) joined with the ``X-Phitune-Agent`` header the agent sent with its claim (``phitune
agent`` sends host and pid). A heartbeat or report from another principal is a 403: one agent
cannot report a trial another one leased, even under the same token. The lease id itself is
an unguessable secret only its claimant was told.
"""

from __future__ import annotations

import hashlib
import math
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status

from service.api.deps import SettingsDep, StoreDep
from service.errors import (
    InvalidSpecError,
    LeaseHolderError,
    StudyEndedError,
    StudyNotFoundError,
    StudyStateError,
)
from service.schemas import TERMINAL_STATUSES, LeasePublic, LeaseResult, LeaseState, TrialFile
from service.store import Store, StudyRow
from service.store.external import (
    ExternalTrialRow,
    LeaseRow,
    claim_trial,
    get_external_trial,
    renew_lease,
    report_lease,
    require_lease,
)

router = APIRouter(tags=["leases"])

#: The header naming the agent inside the token's principal.
AGENT_HEADER = "X-Phitune-Agent"
AgentHeader = Annotated[str | None, Header(alias=AGENT_HEADER, max_length=200)]


def principal_of(token: str | None, agent: str | None) -> str:
    """``<token fingerprint>/<agent>``: who a lease belongs to (the token itself never
    reaches the database). Also what a seeding script passes as ``holder`` to
    :func:`~service.store.external.claim_trial` to lease a trial as that agent."""
    owner = "local" if token is None else hashlib.sha256(token.encode()).hexdigest()[:16]
    return f"{owner}/{agent or 'agent'}"


def principal(request: Request, agent: str | None) -> str:
    """The caller's principal: :func:`principal_of` the app's API token and the agent."""
    return principal_of(getattr(request.app.state, "api_token", None), agent)


def _study(store: Store, study_id: str) -> StudyRow:
    row = store.get_study(study_id)
    if row is None:
        raise StudyNotFoundError(study_id)
    return row


def _state(lease: LeaseRow, row: ExternalTrialRow) -> LeaseState:
    current = row.lease_id == lease.id
    return LeaseState(lease_id=lease.id, study_id=lease.study_id, trial_id=lease.trial_id,
                      status=row.status if current else "leased",  # type: ignore[arg-type]
                      expires_at=row.expires_at if row.status == "leased" else None,
                      metrics=row.metrics, error=row.error)


@router.post("/v1/studies/{study_id}/leases", status_code=status.HTTP_201_CREATED,
             response_model=LeasePublic,
             responses={204: {"description": "no trial to train right now; claim again later"},
                        409: {"description": "the study's trainer is not 'external'"},
                        410: {"description": "the study ended: the agent stops"}})
def claim_lease(study_id: str, request: Request, store: StoreDep, settings: SettingsDep,
                agent: AgentHeader = None) -> LeasePublic | Response:
    """Claim the oldest trial of an external study that no valid lease holds."""
    row = _study(store, study_id)
    if row.spec.get("trainer", "builtin") != "external":
        raise StudyStateError(f"study {study_id!r} trains its trials itself (trainer "
                              f"{row.spec.get('trainer', 'builtin')!r}); leases are for "
                              "trainer 'external'")
    if row.status in TERMINAL_STATUSES:
        raise StudyEndedError(study_id, row.status)
    claimed = claim_trial(store, study_id, principal(request, agent), settings.lease_ttl_s)
    if claimed is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    lease, trial = claimed
    assert trial.expires_at is not None
    return LeasePublic(lease_id=lease.id, study_id=study_id, trial_id=trial.trial_id,
                       expires_at=trial.expires_at, ttl_s=settings.lease_ttl_s,
                       attempt=lease.attempt, trial=TrialFile.model_validate(trial.payload))


@router.post("/v1/leases/{lease_id}/heartbeat", response_model=LeaseState,
             responses={403: {"description": "another agent's lease"},
                        409: {"description": "the lease expired or was replaced"},
                        410: {"description": "the study ended: stop the run"}})
def heartbeat(lease_id: str, request: Request, store: StoreDep, settings: SettingsDep,
              agent: AgentHeader = None) -> LeaseState:
    """Extend a valid lease by ``lease_ttl_s`` from now."""
    lease = require_lease(store, lease_id)
    study = _study(store, lease.study_id)
    if study.status in TERMINAL_STATUSES:
        raise StudyEndedError(study.id, study.status)
    row = renew_lease(store, lease, principal(request, agent), settings.lease_ttl_s)
    return _state(lease, row)


@router.post("/v1/leases/{lease_id}/result", response_model=LeaseState,
             responses={403: {"description": "another agent's lease"},
                        409: {"description": "expired, replaced, or reported differently"},
                        410: {"description": "the study ended"},
                        422: {"description": "no study metric, or a non-finite value"}})
def report_result(lease_id: str, body: LeaseResult, request: Request,
                  store: StoreDep, agent: AgentHeader = None) -> LeaseState:
    """Report the leased run once: its metrics (the study's metric among them) or a failure.
    The same report again is answered like the first (200, same body)."""
    lease = require_lease(store, lease_id)
    holder = principal(request, agent)
    if lease.holder != holder:
        raise LeaseHolderError(lease.id)
    study = _study(store, lease.study_id)
    metrics = body.metrics
    if metrics is not None:
        metric = study.spec.get("metric", "val_accuracy")
        if metric not in metrics:
            raise InvalidSpecError(
                f"metrics.{metric}: the study's metric {metric!r} is missing from the result "
                f"(got {sorted(metrics) or 'no metrics'})", field=f"metrics.{metric}")
        for key, value in metrics.items():  # the schema refuses NaN/inf; defence in depth
            if not math.isfinite(value):
                raise InvalidSpecError(f"metrics.{key}: {value} is not finite",
                                       field=f"metrics.{key}")
    error = None if metrics is not None else (body.error or "failed (no reason given)")
    if study.status in TERMINAL_STATUSES:
        row = get_external_trial(store, lease.study_id, lease.trial_id)
        if (row is not None and row.lease_id == lease.id and lease.holder == holder
                and (row.metrics, row.error) == (metrics, error)):
            return _state(lease, row)  # a repeated report of a counted result
        raise StudyEndedError(study.id, study.status)
    row, _ = report_lease(store, lease, holder, metrics=metrics, error=error)
    return _state(lease, row)
