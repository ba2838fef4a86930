"""Recording a library-mode study: the user's process plans and trains, the server keeps it.

A ``trainer: library`` study (``POST /v1/studies``, stored ``running`` with no driver) is run
by :func:`service.library.tune_schedule` on the user's Ray. Its sink sends every trial's state
(``PUT /v1/studies/{id}/trials/{trial_id}``, the store's trial upsert the driver's
``StoreSink`` uses) and the end (``POST /v1/studies/{id}:finish``: the result, stored as a
driver stores it so ``/result``, ``/best`` and the CLI read it, or the error). Only library
studies take these calls (409 for the others: their driver writes them), and only while
running (409 once finished; finishing twice is a 409 too). Writes need the API token, as
every write does (:mod:`service.api.auth`).

While it runs, the process heartbeats (``POST /v1/studies/{id}:heartbeat``, every
``heartbeat_s`` of :func:`service.library.tune_schedule`); a heartbeat or a trial record is its
sign of life (``heartbeat_at``). A process killed with ``kill -9`` or a lost machine sends
neither: :func:`service.launch.lifecycle.reconcile` fails the study once its last sign of life
is older than ``PHITUNE_LIBRARY_HEARTBEAT_TIMEOUT_S``, instead of showing it running forever.
"""

from __future__ import annotations

import logging
import math

from fastapi import APIRouter
from pydantic import ValidationError

from service.api.deps import SettingsDep, StoreDep
from service.errors import InvalidSpecError, StudyNotFoundError, StudyStateError
from service.schemas import (
    TERMINAL_STATUSES,
    LibraryFinish,
    LibraryHeartbeat,
    LibraryTrialRecord,
    StudyPublic,
    StudyResultPublic,
    TrialPublic,
)
from service.store import Store, StudyRow, is_library_study
from service.store.grad_norms import save_grad_norms

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/studies", tags=["library"])

_RESPONSES = {404: {"description": "unknown study"},
              409: {"description": "not a library study, or it has finished"},
              422: {"description": "invalid body (the message names the field)"}}


def _library_study(store: Store, study_id: str) -> StudyRow:
    """The running library study ``study_id``: 404 unknown, 409 another trainer or ended."""
    row = store.get_study(study_id)
    if row is None:
        raise StudyNotFoundError(study_id)
    if not is_library_study(row):
        raise StudyStateError(
            f"study {study_id!r} has trainer {row.spec.get('trainer', 'builtin')!r}: its "
            "driver records its trials and result; these calls are for trainer 'library'")
    if row.status in TERMINAL_STATUSES:
        raise StudyStateError(f"study {study_id!r} is {row.status}: a finished study takes "
                              "no more trials or results")
    return row


@router.put("/{study_id}/trials/{trial_id}", response_model=TrialPublic,
            responses=_RESPONSES)
def record_trial(study_id: str, trial_id: str, body: LibraryTrialRecord,
                 store: StoreDep) -> TrialPublic:
    """Record the latest state of one trial of a running library study (create or replace),
    its value (the study's metric, when finite) and, on its last event, its gradient norms."""
    row = _library_study(store, study_id)
    if len(trial_id) > 64:
        raise InvalidSpecError(f"trial_id: at most 64 characters, got {len(trial_id)}",
                               field="trial_id")
    store.beat_library_study(study_id)  # a record is a sign of life too
    value = body.metrics.get(row.spec.get("metric", "val_accuracy"))
    store.upsert_trial(study_id, trial_id, budget_steps=body.budget_steps,
                       status=body.status, params=body.params, step=body.step,
                       metrics=body.metrics, error=body.error, node_ip=body.node_ip,
                       value=value if value is not None and math.isfinite(value) else None)
    if body.grad_norms is not None:
        norms = body.grad_norms.model_dump()
        norms["values"] = [math.nan if v is None else v for v in norms["values"]]
        save_grad_norms(store, study_id, trial_id, norms)
    trial = next(t for t in store.list_trials(study_id) if t.trial_id == trial_id)
    return TrialPublic(trial_id=trial.trial_id, budget_steps=trial.budget_steps,
                       status=trial.status, params=trial.params, step=trial.step,
                       metrics=trial.metrics, error=trial.error, node_ip=trial.node_ip,
                       updated_at=trial.updated_at)


@router.post("/{study_id}:heartbeat", response_model=LibraryHeartbeat, responses=_RESPONSES)
def heartbeat(study_id: str, store: StoreDep, settings: SettingsDep) -> LibraryHeartbeat:
    """The library process is alive: the study stays running for another
    ``library_heartbeat_timeout_s`` (409 once it ended: finished, cancelled, or failed for
    want of heartbeats, so the process learns its records are no longer taken)."""
    _library_study(store, study_id)
    beat = store.beat_library_study(study_id)
    if beat is None:  # ended between the check and the update
        row = store.get_study(study_id)
        raise StudyStateError(f"study {study_id!r} is {row.status if row else 'gone'}: a "
                              "finished study takes no heartbeats")
    return LibraryHeartbeat(study_id=study_id, heartbeat_at=beat,
                            timeout_s=settings.library_heartbeat_timeout_s)


@router.post("/{study_id}:finish", response_model=StudyPublic, responses=_RESPONSES)
def finish(study_id: str, body: LibraryFinish, store: StoreDep) -> StudyPublic:
    """End a running library study: ``{"result": StudyResult.to_dict()}`` → ``succeeded``
    with that result (checked against the result schema, stored as sent), ``{"error": ...}``
    → ``failed``. Trials still running or pending end ``error`` (they never reported their
    end)."""
    from service.api.routes.studies import to_public

    _library_study(store, study_id)
    if body.result is not None:
        try:
            StudyResultPublic.model_validate(body.result)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in ("result", *first["loc"]))
            raise InvalidSpecError(f"{where}: {first['msg']}", field=where) from None
        done = store.finish_study(study_id, "succeeded", result=body.result)
    else:
        done = store.finish_study(study_id, "failed", error=body.error)
    if not done:  # another request finished (or cancelled) it meanwhile
        row = store.get_study(study_id)
        raise StudyStateError(f"study {study_id!r} is {row.status if row else 'gone'}: "
                              "a finished study takes no more results")
    store.finalize_trials(study_id, "error", "not reported before the study finished")
    logger.info("study %s: library study %s", study_id,
                "succeeded" if body.result is not None else "failed")
    row = store.get_study(study_id)
    assert row is not None
    return to_public(store, row)
