"""Studies: submit, list, inspect, fetch the best schedule, cancel.

Routes stay thin: validate against the registries and configured limits, store, hand over to
the runner. No training and no Ray inside a request.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request, Response, status

from service.api.auth import HIDDEN_ERROR, is_authenticated
from service.api.deps import RunnerDep, SettingsDep, StoreDep
from service.api.spec_checks import check_epoch_budget, check_spec_inputs
from service.api.study_json import StudyJSON, progress_fields
from service.api.watch import study_watch_fields
from service.config import Settings
from service.errors import (
    GradNormsNotFoundError,
    InvalidSpecError,
    LimitExceededError,
    ResultNotReadyError,
    StudyNotFoundError,
    UnknownNameError,
)
from service.launch.extend import extend_study
from service.launch.kinds import STUDY
from service.launch.lifecycle import (
    cancel_job,
    full_queue_is_429,
    queue_limit,
    start_queued,
)
from service.launch.resources import check_trial_resources
from service.schemas import (
    TERMINAL_STATUSES,
    BestSchedule,
    GradNormsPublic,
    Link,
    Progress,
    StudiesPublic,
    StudyCreate,
    StudyExtend,
    StudyPublic,
    StudyResultPublic,
    TrialPublic,
    TrialsPublic,
)
from service.store import Store, StudyRow, TrialSummary
from service.store.grad_norms import get_grad_norms
from service.store.views import get_study_view, study_page

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/studies", tags=["studies"])
#: Databases store offsets in 64-bit integers; larger values would be a 500, not a 422.
MAX_OFFSET = 1_000_000_000


#: Registry listings scan the installed packages' entry points (~30 ms); a plugin installed
#: while the API runs shows up after this many seconds.
REGISTRY_TTL_S = 30.0
_registry_cache: tuple[float, list[str], list[str]] | None = None


def registry_names() -> tuple[list[str], list[str]]:
    """(models, datasets) of the registry, cached for :data:`REGISTRY_TTL_S`."""
    global _registry_cache
    now = time.monotonic()
    if _registry_cache is None or now - _registry_cache[0] > REGISTRY_TTL_S:
        from trainables.registry import list_datasets, list_models

        _registry_cache = (now, list(list_models()), list(list_datasets()))
    return _registry_cache[1], _registry_cache[2]


def warm_up() -> None:
    """Import at startup what the first submit would (registries, plugins, the baseline
    registry with Ray Tune, the submit-time checks): seconds the first client need not wait."""
    registry_names()
    import trainables.preflight  # noqa: F401
    import tuning.compare  # noqa: F401


def validate_model_and_dataset(model: str, dataset: str) -> None:
    """Models and datasets come from the registry (plugins via entry points), never from an
    import path in the request."""
    models, datasets = registry_names()
    if model not in models:
        raise UnknownNameError("model", model, models)
    if dataset not in datasets:
        raise UnknownNameError("dataset", dataset, datasets)


def validate_names(spec: StudyCreate) -> None:
    validate_model_and_dataset(spec.model, spec.dataset)
    from tuning.compare import resolve_baseline

    for name in spec.compare:
        try:
            resolve_baseline(name)
        except ValueError as exc:
            raise InvalidSpecError(str(exc), field="compare") from None


def progress_of(store: Store, row: StudyRow, summary: TrialSummary | None = None) -> Progress:
    """Trial counts and the best value at the longest finished horizon (see
    :class:`~service.store.TrialSummary`), from one aggregate query (or a page's ``summary``)."""
    if summary is None:
        summary = store.trial_summaries([row.id]).get(row.id, TrialSummary())
    return Progress(**progress_fields(summary, row.spec.get("metric", "val_accuracy")))


def _public_fields(row: StudyRow, progress: Progress,
                   settings: Settings | None) -> dict[str, Any]:
    """Every ``StudyPublic`` field but ``spec``, from the stored columns."""
    base = f"/v1/studies/{row.id}"
    watch = study_watch_fields(settings, row.id) if settings is not None else {}
    return dict(
        id=row.id, name=row.name, status=row.status, created_at=row.created_at,
        started_at=row.started_at, finished_at=row.finished_at, error=row.error,
        dashboard_url=row.dashboard_url, progress=progress, **watch,
        links={"self": Link(href=base), "trials": Link(href=f"{base}/trials"),
               "best": Link(href=f"{base}/best"), "result": Link(href=f"{base}/result")},
    )


def to_public(store: Store, row: StudyRow, summary: TrialSummary | None = None,
              settings: Settings | None = None) -> StudyPublic:
    return StudyPublic(spec=StudyCreate.model_validate(row.spec),
                       **_public_fields(row, progress_of(store, row, summary), settings))


#: Threads the polled reads run on, instead of the 40 of the default pool: a read's work is
#: mostly Python holding the GIL, and 40 threads taking turns at it cost more than the reads
#: themselves (a page of 20 under 50 concurrent requests: 1.7× as long; load_api --asgi).
#: The requests beyond wait in the event loop.
READ_THREADS = 4


def read_limiter(request: Request) -> anyio.CapacityLimiter:
    """The app's :data:`READ_THREADS` limiter (made in the event loop on first use)."""
    limiter = getattr(request.app.state, "read_limiter", None)
    if limiter is None:  # no await since the check: no other request can race it
        limiter = request.app.state.read_limiter = anyio.CapacityLimiter(READ_THREADS)
    return limiter


def study_json(request: Request) -> StudyJSON:
    """The app's renderer of study reads (built once from its settings in ``create_app``)."""
    return request.app.state.study_json


def _get(store: Store, study_id: str) -> StudyRow:
    row = store.get_study(study_id)
    if row is None:
        raise StudyNotFoundError(study_id)
    return row


def check_study_spec(spec: StudyCreate, settings: Settings) -> None:
    """Everything a study spec must pass before it is stored or measured (names, caps,
    resources vs the cluster, data paths, model size, batch size): one place for every route
    that takes a study body (``POST /v1/studies``, ``POST /v1/recommendations``). An external
    study names no model or dataset (its schema refuses them): only its caps apply."""
    if spec.trainer == "external":
        check_caps(spec, settings)
        return
    if spec.trainer == "library":
        return  # recorded only: the user's process trains on the user's Ray, not ours
    validate_names(spec)
    check_caps(spec, settings)
    check_trial_resources(spec.resources, settings)
    check_spec_inputs(settings, model=spec.model, model_kwargs=spec.model_kwargs,
                      dataset=spec.dataset, dataset_kwargs=spec.dataset_kwargs,
                      optimizer=spec.optimizer.name, batch_size=spec.batch_size,
                      metric=spec.metric)
    check_epoch_budget(spec)


def check_caps(spec: StudyCreate, settings: Settings) -> None:
    """Per-request caps from the configuration: one request must not be able to occupy the
    cluster indefinitely. Each violation is a 422 naming the field and the limit."""
    if spec.num_trials > settings.max_trials:
        raise LimitExceededError("num_trials", spec.num_trials, settings.max_trials)
    if spec.max_concurrent_trials > settings.max_concurrent_trials:
        raise LimitExceededError("max_concurrent_trials", spec.max_concurrent_trials,
                                 settings.max_concurrent_trials)
    if spec.budget.steps is not None and spec.budget.steps > settings.max_budget_steps:
        raise LimitExceededError("budget.steps", spec.budget.steps, settings.max_budget_steps)
    if spec.budget.epochs is not None and spec.budget.epochs > settings.max_budget_epochs:
        raise LimitExceededError("budget.epochs", spec.budget.epochs, settings.max_budget_epochs)
    if spec.budget.steps is not None:
        for f in spec.budget.fractions:
            if round(f * spec.budget.steps) < 1:
                raise LimitExceededError("budget.fractions", f,
                                         f"1 step minimum (budget.steps={spec.budget.steps})")


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=StudyPublic,
             responses={422: {"description": "invalid spec (the message names the field)"},
                        429: {"description": "too many active studies"}})
def create_study(
    spec: StudyCreate,
    store: StoreDep,
    runner: RunnerDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> StudyPublic:
    """Queue a study; it starts (its driver launches) as soon as a slot is free, in submission
    order. Returns 202 with the study (``queued`` or ``running``) and its links; 429 only when
    the queue is full. A ``trainer: library`` study is stored ``running`` at once and never
    queued: the caller's process runs it and records it (:mod:`service.api.routes.library`). A repeated request with the same ``Idempotency-Key`` header returns
    the first study (200)."""
    check_study_spec(spec, settings)
    if spec.warm_start_from is not None:
        source = store.get_study(spec.warm_start_from)
        if source is None:
            raise InvalidSpecError(f"warm_start_from: no study {spec.warm_start_from!r}",
                                   field="warm_start_from")
        if source.status not in TERMINAL_STATUSES:
            # the warm start reads the source's trials as of this submission (the same points
            # for a relaunched or extended driver): an unfinished source has none to give yet
            raise InvalidSpecError(f"warm_start_from: study {spec.warm_start_from!r} is "
                                   f"{source.status}; warm-start from a finished study",
                                   field="warm_start_from")
    if idempotency_key is not None:
        existing = store.find_by_idempotency_key(idempotency_key)
        if existing is not None:
            response.status_code = status.HTTP_200_OK
            return to_public(store, existing, settings=settings)
    if spec.trainer == "library":  # running at once, outside the queue (no driver)
        row, created = store.create_library_study(spec.model_dump(mode="json"), spec.name,
                                                  idempotency_key)
        if not created:
            response.status_code = status.HTTP_200_OK
        else:
            logger.info("study %s recorded (library mode)", row.id)
        return to_public(store, row, settings=settings)
    with full_queue_is_429(STUDY):  # the queue bound is checked with the insert, atomically
        row, created = store.create_study(spec.model_dump(mode="json"), spec.name,
                                          idempotency_key, limit=queue_limit(settings))
    if created:
        logger.info("study %s queued (%s on %s)", row.id, spec.model, spec.dataset)
        start_queued(store, runner, settings)
    else:
        response.status_code = status.HTTP_200_OK
    return to_public(store, store.get_study(row.id) or row, settings=settings)


@router.get("", response_model=StudiesPublic)
async def list_studies(
    store: StoreDep,
    request: Request,
    status_filter: Annotated[
        Literal["queued", "running", "succeeded", "failed", "cancelled"] | None,
        Query(alias="status"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> StudiesPublic:
    """Newest first; ``count`` is the total matching ``status``. Rendered from stored columns
    (:mod:`service.api.study_json`): a page costs one indexed query and no validation."""
    def read() -> bytes:
        views, total = study_page(store, status=status_filter, limit=limit, offset=offset)
        return study_json(request).page(views, total, is_authenticated(request))

    body = await anyio.to_thread.run_sync(read, limiter=read_limiter(request))
    return Response(body, media_type="application/json")  # type: ignore[return-value]


@router.get("/{study_id}", response_model=StudyPublic,
            responses={404: {"description": "unknown study"}})
async def get_study(study_id: str, store: StoreDep, request: Request) -> StudyPublic:
    """One study with its progress: one query, rendered from stored columns (the polling
    path of clients and agents)."""
    def read() -> str:
        view = get_study_view(store, study_id)
        if view is None:
            raise StudyNotFoundError(study_id)
        return study_json(request).study(view, is_authenticated(request))

    body = await anyio.to_thread.run_sync(read, limiter=read_limiter(request))
    return Response(body, media_type="application/json")  # type: ignore[return-value]


@router.get("/{study_id}/trials", response_model=TrialsPublic,
            responses={404: {"description": "unknown study"}})
def list_trials(
    study_id: str,
    store: StoreDep,
    request: Request,
    status_filter: Annotated[
        Literal["pending", "running", "terminated", "stopped_early", "error", "cancelled"]
        | None,
        Query(alias="status"),
    ] = None,
    budget_steps: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> TrialsPublic:
    """A study's trials ordered by budget then trial id; ``count`` is the total matching the
    filters (not the page size)."""
    _get(store, study_id)
    rows = store.list_trials(study_id, status=status_filter, budget_steps=budget_steps,
                             limit=limit, offset=offset)
    shown = is_authenticated(request)
    data = [TrialPublic(trial_id=t.trial_id, budget_steps=t.budget_steps, status=t.status,
                        params=t.params, step=t.step, metrics=t.metrics,
                        error=t.error if shown or not t.error else HIDDEN_ERROR,
                        node_ip=t.node_ip, updated_at=t.updated_at) for t in rows]
    total = store.count_trials(study_id, status=status_filter, budget_steps=budget_steps)
    return TrialsPublic(data=data, count=total)


@router.get("/{study_id}/trials/{trial_id}/grad_norms", response_model=GradNormsPublic,
            responses={404: {"description": "unknown study, or no norms for the trial"}})
def get_trial_grad_norms(study_id: str, trial_id: str, store: StoreDep) -> GradNormsPublic:
    """The gradient norm of every update of one finished trial (ℓ2 SGD, ℓ1 Adam-type):
    what a refined schedule (Defazio et al. 2023; schedule ``refined``) is computed from."""
    _get(store, study_id)
    data = get_grad_norms(store, study_id, trial_id)
    if data is None:
        raise GradNormsNotFoundError(study_id, trial_id)
    return GradNormsPublic.model_validate(data)


@router.get("/{study_id}/result", response_model=StudyResultPublic,
            responses={404: {"description": "unknown study"}, 409: {"description": "not done"}})
def get_result(study_id: str, store: StoreDep) -> StudyResultPublic:
    row = _get(store, study_id)
    if row.result is None:
        raise ResultNotReadyError(study_id, row.status)
    return StudyResultPublic.model_validate(row.result)


@router.get("/{study_id}/best", response_model=BestSchedule,
            responses={404: {"description": "unknown study"}, 409: {"description": "not done"}})
def get_best(study_id: str, store: StoreDep) -> BestSchedule:
    """The recommended schedule at the full budget: φ, phases, η_max, η_min and its LR curve."""
    result = get_result(study_id, store)
    if result.best is None:
        raise ResultNotReadyError(study_id, "no finished trial")
    return result.best


@router.delete("/{study_id}", response_model=StudyPublic,
               responses={404: {"description": "unknown study"}})
def cancel_study(study_id: str, store: StoreDep, runner: RunnerDep,
                 settings: SettingsDep) -> StudyPublic:
    """Cancel a queued or running study: its driver and every process it started are stopped
    and its unfinished trials end ``cancelled`` (in Optuna: FAIL); finished trials stay.
    Cancelling a finished study changes nothing."""
    _get(store, study_id)
    cancel_job(store, runner, settings, STUDY, study_id)
    return to_public(store, _get(store, study_id), settings=settings)


@router.post("/{study_id}:extend", status_code=status.HTTP_202_ACCEPTED,
             response_model=StudyPublic,
             responses={404: {"description": "unknown study"},
                        409: {"description": "not succeeded, a curvature job, or not a ladder "
                              "study"},
                        422: {"description": "invalid body (the message names the field)"},
                        429: {"description": "the queue is full"}})
def extend(study_id: str, body: StudyExtend, store: StoreDep, runner: RunnerDep,
           settings: SettingsDep) -> StudyPublic:
    """More trials, the same searcher state: append ``extra_iterations`` ladder iterations
    to a succeeded study and queue it again (``queued`` → ``running`` → ``succeeded``). Its
    finished Tune experiments are restored, not re-trained; the per-horizon Optuna studies
    keep their trials, so the sampler continues from them; the new result replaces the old
    one (which stays readable meanwhile)."""
    row = extend_study(store, runner, settings, study_id, body.extra_iterations)
    return to_public(store, row, settings=settings)
