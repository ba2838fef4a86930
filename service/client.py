"""Python clients for the phitune API: ``httpx`` + the service's pydantic schemas only.

    >>> from service.client import PhiTuneClient
    >>> client = PhiTuneClient("http://127.0.0.1:8000")
    >>> study = client.submit({"model": "mlp", "dataset": "digits", "budget": {"steps": 300}})
    >>> client.wait(study.id, progress=True)
    >>> client.best(study.id).phi

``AsyncPhiTuneClient`` has the same methods as coroutines (``httpx.AsyncClient``). The base
``pip install phitune`` is enough: this module never imports torch, Ray or SQLAlchemy.

Errors: every failure is a :class:`PhiTuneClientError`; the HTTP status picks the subclass
(:class:`NotFound`, :class:`Conflict`, :class:`Validation`, ...) and ``detail`` carries the
server's ``detail`` unchanged (a message, or FastAPI's list of field errors). ``wait`` (and the
CLI's ``--watch``) retries connection errors and 5xx answers with exponential backoff, so a
restarting server or a proxy blip does not end a long wait; other calls fail at once.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel

from service.schemas import (
    TERMINAL_STATUSES,
    BestSchedule,
    BudgetsPublic,
    CurvatureCreate,
    CurvatureJobPublic,
    GradNormsPublic,
    LeasePublic,
    LeaseResult,
    LeaseState,
    LibraryFinish,
    LibraryHeartbeat,
    LibraryTrialRecord,
    PhiRecommendation,
    Recommendation,
    RecommendationJobPublic,
    StudiesPublic,
    StudyCreate,
    StudyPublic,
    StudyResultPublic,
    TrialFile,
    TrialPublic,
    TrialsPublic,
)

__all__ = [
    "Agent",
    "AgentSummary",
    "AsyncPhiTuneClient",
    "Backoff",
    "Conflict",
    "DEFAULT_BACKOFF",
    "NotFound",
    "PhiTuneClient",
    "PhiTuneClientError",
    "RecommendationFailed",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
    "Unreachable",
    "StudyEnded",
    "TrialRunFailed",
    "Validation",
    "WaitTimeout",
    "format_progress",
]


# ----------------------------------------------------------------------------- errors

class PhiTuneClientError(Exception):
    """Base of every client failure (the server's own hierarchy is ``service.errors``).

    ``status_code`` is the HTTP status (0: no response), ``detail`` the server's ``detail``
    field as sent (a string, or a list of ``{"loc", "msg", "type"}`` field errors).
    """

    def __init__(self, message: str, status_code: int = 0, detail: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class Unreachable(PhiTuneClientError):
    """No HTTP answer: connection refused or reset, DNS, timeout."""


class Validation(PhiTuneClientError):
    """400/422: the request (usually the spec) is invalid; :attr:`errors` names the fields."""

    @property
    def errors(self) -> list[tuple[str, str]]:
        """``[(field path, message), ...]`` from the server's detail (``body.`` dropped)."""
        if not isinstance(self.detail, list):
            return [("", str(self.detail))]
        return [(".".join(str(p) for p in item.get("loc", []) if p != "body"),
                 str(item.get("msg"))) for item in self.detail if isinstance(item, dict)]


class Unauthorized(PhiTuneClientError):
    """401/403: missing or wrong API token (``--token`` / ``PHITUNE_TOKEN``)."""


class NotFound(PhiTuneClientError):
    """404: no such study, curvature job or route."""


class Conflict(PhiTuneClientError):
    """409: the study is not in a state that allows this (e.g. no result yet)."""


class TooManyRequests(PhiTuneClientError):
    """429: the queue of studies is full; try later."""


class ServerError(PhiTuneClientError):
    """5xx: the server (or a proxy in front of it) failed; retried by ``wait``."""


class WaitTimeout(PhiTuneClientError):
    """``wait(timeout=...)`` elapsed before the study ended."""


class RecommendationFailed(PhiTuneClientError):
    """A queued recommendation job ended ``failed`` or ``cancelled`` (``detail``: why)."""


class StudyEnded(PhiTuneClientError):
    """410: the study ended (succeeded, failed, cancelled); an agent stops."""


_BY_STATUS: dict[int, type[PhiTuneClientError]] = {
    400: Validation, 422: Validation, 401: Unauthorized, 403: Unauthorized, 404: NotFound,
    409: Conflict, 410: StudyEnded, 429: TooManyRequests,
}


def _detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase
    return body.get("detail", body) if isinstance(body, dict) else body


def _message(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
            parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
        return "; ".join(parts)
    return str(detail)


def error_for(response: httpx.Response) -> PhiTuneClientError:
    """The typed error for an HTTP error response (status >= 400)."""
    code = response.status_code
    cls = ServerError if code >= 500 else _BY_STATUS.get(code, PhiTuneClientError)
    detail = _detail(response)
    return cls(f"{code}: {_message(detail)}", code, detail)


# ----------------------------------------------------------------------------- retries

@dataclass(frozen=True)
class Backoff:
    """Exponential backoff for ``wait``: ``initial * factor**n`` seconds, capped at
    ``max_delay``, at most ``retries`` failures in a row (a success resets the count)."""

    retries: int = 8
    initial: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0

    def delays(self) -> Iterator[float]:
        for n in range(self.retries):
            yield min(self.initial * self.factor**n, self.max_delay)


#: What ``retry=None`` means: 8 retries over about 90 s (0.5 s doubling, capped at 30 s).
DEFAULT_BACKOFF = Backoff()
NO_RETRY = Backoff(retries=0)
_RETRIABLE = (Unreachable, ServerError)


# ----------------------------------------------------------------------------- the calls

@dataclass(frozen=True)
class _Call:
    """One API call as data; both clients send it, so each endpoint is written once."""

    method: str
    path: str
    parse: Callable[[httpx.Response], Any]
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] | None = None


def _model(cls: type[BaseModel]) -> Callable[[httpx.Response], Any]:
    return lambda r: cls.model_validate(r.json())


def _recommendation_or_job(r: httpx.Response) -> PhiRecommendation | RecommendationJobPublic:
    """``POST /v1/recommendations``: 200 is the answer, 202 a queued job to poll."""
    return (RecommendationJobPublic if r.status_code == 202 else PhiRecommendation
            ).model_validate(r.json())


def _recommendation_result(job: RecommendationJobPublic) -> PhiRecommendation:
    if job.status != "succeeded" or job.result is None:
        raise RecommendationFailed(f"recommendation job {job.id} {job.status}: {job.error}",
                                   detail=job.error)
    return job.result


def _body(spec: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(spec, BaseModel):
        return spec.model_dump(mode="json", exclude_unset=True)
    return dict(spec)


def _params(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


class _Api:
    """Every endpoint the clients call: method, path, parameters, response model."""

    @staticmethod
    def submit(spec: StudyCreate | Mapping[str, Any], key: str | None) -> _Call:
        return _Call("POST", "/v1/studies", _model(StudyPublic), json=_body(spec),
                     headers={"Idempotency-Key": key} if key else None)

    @staticmethod
    def get(study_id: str) -> _Call:
        return _Call("GET", f"/v1/studies/{study_id}", _model(StudyPublic))

    @staticmethod
    def list(status: str | None, limit: int, offset: int) -> _Call:
        return _Call("GET", "/v1/studies", _model(StudiesPublic),
                     params=_params(status=status, limit=limit, offset=offset))

    @staticmethod
    def trials(study_id: str, status: str | None, budget_steps: int | None, limit: int,
               offset: int) -> _Call:
        return _Call("GET", f"/v1/studies/{study_id}/trials", _model(TrialsPublic),
                     params=_params(status=status, budget_steps=budget_steps, limit=limit,
                                    offset=offset))

    @staticmethod
    def grad_norms(study_id: str, trial_id: str) -> _Call:
        return _Call("GET", f"/v1/studies/{study_id}/trials/{trial_id}/grad_norms",
                     _model(GradNormsPublic))

    @staticmethod
    def result(study_id: str) -> _Call:
        return _Call("GET", f"/v1/studies/{study_id}/result", _model(StudyResultPublic))

    @staticmethod
    def best(study_id: str) -> _Call:
        return _Call("GET", f"/v1/studies/{study_id}/best", _model(BestSchedule))

    @staticmethod
    def budgets(study_id: str) -> _Call:
        return _Call("GET", f"/v1/studies/{study_id}/budgets", _model(BudgetsPublic))

    @staticmethod
    def plot(study_id: str, which: str) -> _Call:
        return _Call("GET", f"/v1/studies/{study_id}/plots/{which}.png", lambda r: r.content)

    @staticmethod
    def recommend_phi(model: str, dataset: str, optimizer: str, budget: int | None) -> _Call:
        return _Call("GET", "/v1/recommendations", _model(Recommendation),
                     params=_params(model=model, dataset=dataset, optimizer=optimizer,
                                    budget=budget))

    @staticmethod
    def recommend(spec: StudyCreate | Mapping[str, Any]) -> _Call:
        return _Call("POST", "/v1/recommendations", _recommendation_or_job,
                     json=_body(spec))

    @staticmethod
    def recommendation_job(job_id: str) -> _Call:
        return _Call("GET", f"/v1/recommendations/{job_id}", _model(RecommendationJobPublic))

    @staticmethod
    def curvature_submit(spec: CurvatureCreate | Mapping[str, Any]) -> _Call:
        return _Call("POST", "/v1/curvature", _model(CurvatureJobPublic), json=_body(spec))

    @staticmethod
    def curvature_get(job_id: str) -> _Call:
        return _Call("GET", f"/v1/curvature/{job_id}", _model(CurvatureJobPublic))

    @staticmethod
    def cancel(study_id: str) -> _Call:
        return _Call("DELETE", f"/v1/studies/{study_id}", _model(StudyPublic))

    @staticmethod
    def extend(study_id: str, extra_iterations: int) -> _Call:
        return _Call("POST", f"/v1/studies/{study_id}:extend", _model(StudyPublic),
                     json={"extra_iterations": extra_iterations})

    @staticmethod
    def claim_lease(study_id: str, agent: str | None) -> _Call:
        return _Call("POST", f"/v1/studies/{study_id}/leases",
                     lambda r: None if r.status_code == 204 else LeasePublic.model_validate(
                         r.json()), headers=_agent(agent))

    @staticmethod
    def heartbeat(lease_id: str, agent: str | None) -> _Call:
        return _Call("POST", f"/v1/leases/{lease_id}/heartbeat", _model(LeaseState),
                     headers=_agent(agent))

    @staticmethod
    def report_result(lease_id: str, result: LeaseResult | Mapping[str, Any],
                      agent: str | None) -> _Call:
        return _Call("POST", f"/v1/leases/{lease_id}/result", _model(LeaseState),
                     json=_body(result), headers=_agent(agent))

    @staticmethod
    def record_trial(study_id: str, trial_id: str,
                     record: LibraryTrialRecord | Mapping[str, Any]) -> _Call:
        return _Call("PUT", f"/v1/studies/{study_id}/trials/{trial_id}",
                     _model(TrialPublic), json=_body(record))

    @staticmethod
    def heartbeat_study(study_id: str) -> _Call:
        return _Call("POST", f"/v1/studies/{study_id}:heartbeat", _model(LibraryHeartbeat))

    @staticmethod
    def finish_study(study_id: str, result: Mapping[str, Any] | None,
                     error: str | None) -> _Call:
        body = LibraryFinish(result=None if result is None else dict(result), error=error)
        return _Call("POST", f"/v1/studies/{study_id}:finish", _model(StudyPublic),
                     json=body.model_dump(mode="json", exclude_none=True))


#: The header that names an agent inside the API token's principal (a lease is its holder's).
AGENT_HEADER = "X-Phitune-Agent"


def _agent(agent: str | None) -> dict[str, str] | None:
    return {AGENT_HEADER: agent} if agent else None


class _Progress:
    """``progress=True`` prints one line per change (and each retry) to stderr; a callable
    receives every polled study instead."""

    def __init__(self, progress: bool | Callable[[StudyPublic], None]) -> None:
        self.progress = progress
        self.last = ""

    def show(self, study: StudyPublic) -> None:
        if callable(self.progress):
            self.progress(study)
        elif self.progress:
            line = format_progress(study)
            if line != self.last:
                print(line, file=sys.stderr, flush=True)
                self.last = line

    def retry(self, exc: PhiTuneClientError, delay: float) -> None:
        if self.progress is True:
            print(f"{exc}; retrying in {delay:g} s", file=sys.stderr, flush=True)
            self.last = ""


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


# ----------------------------------------------------------------------------- sync client

class PhiTuneClient:
    """Blocking client. ``retry`` is the backoff ``wait``/``curvature`` use while polling."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, token: str | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None,
                 retry: Backoff | None = None) -> None:
        self.retry = DEFAULT_BACKOFF if retry is None else retry
        try:
            self._http = httpx.Client(base_url=url.rstrip("/"), headers=_headers(token),
                                      timeout=timeout, transport=transport)
        except httpx.InvalidURL as exc:
            raise PhiTuneClientError(f"invalid server URL {url!r}: {exc}") from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PhiTuneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: _Call) -> Any:
        try:
            response = self._http.request(call.method, call.path, params=call.params,
                                          json=call.json, headers=call.headers)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise error_for(response)
        return call.parse(response)

    def _send_retrying(self, call: _Call, progress: _Progress) -> Any:
        delays = self.retry.delays()
        while True:
            try:
                return self._send(call)
            except _RETRIABLE as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                progress.retry(exc, delay)
                time.sleep(delay)

    # studies -----------------------------------------------------------------------------
    def submit(self, spec: StudyCreate | Mapping[str, Any], *,
               idempotency_key: str | None = None) -> StudyPublic:
        """Submit a study; validation happens on the server so the error names the field."""
        return self._send(_Api.submit(spec, idempotency_key))

    def get(self, study_id: str) -> StudyPublic:
        return self._send(_Api.get(study_id))

    def list(self, *, status: str | None = None, limit: int = 50,
             offset: int = 0) -> StudiesPublic:
        return self._send(_Api.list(status, limit, offset))

    def trials(self, study_id: str, *, status: str | None = None,
               budget_steps: int | None = None, limit: int = 1000,
               offset: int = 0) -> TrialsPublic:
        return self._send(_Api.trials(study_id, status, budget_steps, limit, offset))

    def grad_norms(self, study_id: str, trial_id: str) -> GradNormsPublic:
        """The gradient norm of every update of a finished trial (:class:`NotFound` when it
        has none): ``create_schedule("refined", g.total_steps, norms=g.per_step(),
        optimizer=g.refine_optimizer(), eta_max=lr)`` refines that run."""
        return self._send(_Api.grad_norms(study_id, trial_id))

    def result(self, study_id: str) -> StudyResultPublic:
        return self._send(_Api.result(study_id))

    def best(self, study_id: str) -> BestSchedule:
        return self._send(_Api.best(study_id))

    def budgets(self, study_id: str) -> BudgetsPublic:
        """Metric vs budget, baselines and the smallest budget reaching the spec's target."""
        return self._send(_Api.budgets(study_id))

    def plot(self, study_id: str, which: str = "budgets") -> bytes:
        """PNG bytes of a study plot: ``budgets`` (metric vs budget) or ``phi`` (φ response)."""
        return self._send(_Api.plot(study_id, which))

    def recommend_phi(self, model: str, dataset: str, optimizer: str = "sgd",
                      budget: int | None = None) -> Recommendation:
        """The φ to start from for this model/dataset/optimizer/budget, with its evidence."""
        return self._send(_Api.recommend_phi(model, dataset, optimizer, budget))

    def recommend(self, spec: StudyCreate | Mapping[str, Any], *, timeout: float | None = 600,
                  poll: float = 1.0) -> PhiRecommendation:
        """The φ and phases to start this study spec from (the body of ``submit``), with the
        expected gap and every labelled suggestion. A spec whose curvature must be measured
        is a queued job on the server (202): polled until it ends (seconds on an idle
        machine); :class:`RecommendationFailed` when it fails or is cancelled."""
        answer = self._send(_Api.recommend(spec))
        if isinstance(answer, PhiRecommendation):
            return answer
        deadline = None if timeout is None else time.monotonic() + timeout
        quiet = _Progress(False)
        while answer.status not in TERMINAL_STATUSES:
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"recommendation job {answer.id} still {answer.status} "
                                  f"after {timeout} s")
            time.sleep(poll)
            answer = self._send_retrying(_Api.recommendation_job(answer.id), quiet)
        return _recommendation_result(answer)

    def curvature(self, spec: CurvatureCreate | Mapping[str, Any], *, wait: bool = True,
                  timeout: float | None = 600, poll: float = 1.0) -> CurvatureJobPublic:
        """Queue a Hessian-spectrum estimate (runs on Ray); by default wait for its report."""
        job = self._send(_Api.curvature_submit(spec))
        deadline = None if timeout is None else time.monotonic() + timeout
        quiet = _Progress(False)
        while wait and job.status not in TERMINAL_STATUSES:
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"curvature job {job.id} still {job.status} after {timeout} s")
            time.sleep(poll)
            job = self._send_retrying(_Api.curvature_get(job.id), quiet)
        return job

    def cancel(self, study_id: str) -> StudyPublic:
        return self._send(_Api.cancel(study_id))

    def extend(self, study_id: str, extra_iterations: int = 1) -> StudyPublic:
        """More trials, the same searcher state: append ``extra_iterations`` ladder
        iterations (each with the study's per-iteration candidate count) to a succeeded
        study, which queues again; :meth:`wait` for the new result. Earlier runs are
        restored, not re-trained (409 unless succeeded)."""
        return self._send(_Api.extend(study_id, extra_iterations))

    # agent mode --------------------------------------------------------------------------
    def claim_lease(self, study_id: str, *, agent: str | None = None) -> LeasePublic | None:
        """Lease the next trial of an external study (None: none to train right now, claim
        again later; :class:`StudyEnded` once the study ended). ``agent`` names the claimant:
        heartbeats and the report must name the same one."""
        return self._send(_Api.claim_lease(study_id, agent))

    def heartbeat(self, lease_id: str, *, agent: str | None = None) -> LeaseState:
        """Extend the lease by the server's TTL (:class:`Conflict` once it expired or was
        replaced, :class:`StudyEnded` when the study ended: stop training then)."""
        return self._send(_Api.heartbeat(lease_id, agent))

    def report_result(self, lease_id: str, result: LeaseResult | Mapping[str, Any], *,
                      agent: str | None = None) -> LeaseState:
        """Report the leased run once: ``{"metrics": {...}}`` or ``{"failed": True, "error":
        "..."}``. Repeating the same report is safe (same answer); see :class:`Agent`."""
        return self._send(_Api.report_result(lease_id, result, agent))

    # library mode (recorded) ---------------------------------------------------------------
    def record_trial(self, study_id: str, trial_id: str,
                     record: LibraryTrialRecord | Mapping[str, Any]) -> TrialPublic:
        """Record one trial's latest state in a running ``trainer: library`` study
        (:class:`~service.schemas.LibraryTrialRecord`; the library sink's call,
        :class:`service.library.ServerSink`)."""
        return self._send(_Api.record_trial(study_id, trial_id, record))

    def heartbeat_study(self, study_id: str) -> LibraryHeartbeat:
        """Tell the server that the process running library study ``study_id`` is alive
        (:func:`service.library.tune_schedule` does, every ``heartbeat_s``); a study silent
        for the server's ``timeout_s`` is failed. :class:`Conflict` once it ended."""
        return self._send(_Api.heartbeat_study(study_id))

    def finish_study(self, study_id: str, *, result: Mapping[str, Any] | None = None,
                     error: str | None = None) -> StudyPublic:
        """End a running library study with its result (``StudyResult.to_dict()``) or an
        error (failed); :class:`Conflict` when it has finished already."""
        return self._send(_Api.finish_study(study_id, result, error))

    def wait(self, study_id: str, *, timeout: float | None = None, poll: float = 2.0,
             progress: bool | Callable[[StudyPublic], None] = False) -> StudyPublic:
        """Poll until the study is succeeded/failed/cancelled (:attr:`retry` covers
        connection errors and 5xx on the way). ``progress=True`` prints one line per change
        to stderr; a callable receives every polled study instead."""
        deadline = None if timeout is None else time.monotonic() + timeout
        shown = _Progress(progress)
        while True:
            study = self._send_retrying(_Api.get(study_id), shown)
            shown.show(study)
            if study.status in TERMINAL_STATUSES:
                return study
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"study {study_id} still {study.status} after {timeout} s")
            time.sleep(poll)


# ----------------------------------------------------------------------------- async client

class AsyncPhiTuneClient:
    """:class:`PhiTuneClient` as coroutines over ``httpx.AsyncClient`` (same methods,
    arguments, results and errors)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, token: str | None = None,
                 timeout: float = 30.0, transport: httpx.AsyncBaseTransport | None = None,
                 retry: Backoff | None = None) -> None:
        self.retry = DEFAULT_BACKOFF if retry is None else retry
        try:
            self._http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=_headers(token),
                                           timeout=timeout, transport=transport)
        except httpx.InvalidURL as exc:
            raise PhiTuneClientError(f"invalid server URL {url!r}: {exc}") from None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPhiTuneClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: _Call) -> Any:
        try:
            response = await self._http.request(call.method, call.path, params=call.params,
                                                json=call.json, headers=call.headers)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise error_for(response)
        return call.parse(response)

    async def _send_retrying(self, call: _Call, progress: _Progress) -> Any:
        delays = self.retry.delays()
        while True:
            try:
                return await self._send(call)
            except _RETRIABLE as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                progress.retry(exc, delay)
                await asyncio.sleep(delay)

    async def submit(self, spec: StudyCreate | Mapping[str, Any], *,
                     idempotency_key: str | None = None) -> StudyPublic:
        return await self._send(_Api.submit(spec, idempotency_key))

    async def get(self, study_id: str) -> StudyPublic:
        return await self._send(_Api.get(study_id))

    async def list(self, *, status: str | None = None, limit: int = 50,
                   offset: int = 0) -> StudiesPublic:
        return await self._send(_Api.list(status, limit, offset))

    async def trials(self, study_id: str, *, status: str | None = None,
                     budget_steps: int | None = None, limit: int = 1000,
                     offset: int = 0) -> TrialsPublic:
        return await self._send(_Api.trials(study_id, status, budget_steps, limit, offset))

    async def grad_norms(self, study_id: str, trial_id: str) -> GradNormsPublic:
        return await self._send(_Api.grad_norms(study_id, trial_id))

    async def result(self, study_id: str) -> StudyResultPublic:
        return await self._send(_Api.result(study_id))

    async def best(self, study_id: str) -> BestSchedule:
        return await self._send(_Api.best(study_id))

    async def budgets(self, study_id: str) -> BudgetsPublic:
        return await self._send(_Api.budgets(study_id))

    async def plot(self, study_id: str, which: str = "budgets") -> bytes:
        return await self._send(_Api.plot(study_id, which))

    async def recommend_phi(self, model: str, dataset: str, optimizer: str = "sgd",
                            budget: int | None = None) -> Recommendation:
        return await self._send(_Api.recommend_phi(model, dataset, optimizer, budget))

    async def recommend(self, spec: StudyCreate | Mapping[str, Any], *,
                        timeout: float | None = 600, poll: float = 1.0) -> PhiRecommendation:
        answer = await self._send(_Api.recommend(spec))
        if isinstance(answer, PhiRecommendation):
            return answer
        deadline = None if timeout is None else time.monotonic() + timeout
        quiet = _Progress(False)
        while answer.status not in TERMINAL_STATUSES:
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"recommendation job {answer.id} still {answer.status} "
                                  f"after {timeout} s")
            await asyncio.sleep(poll)
            answer = await self._send_retrying(_Api.recommendation_job(answer.id), quiet)
        return _recommendation_result(answer)

    async def curvature(self, spec: CurvatureCreate | Mapping[str, Any], *, wait: bool = True,
                        timeout: float | None = 600, poll: float = 1.0) -> CurvatureJobPublic:
        job = await self._send(_Api.curvature_submit(spec))
        deadline = None if timeout is None else time.monotonic() + timeout
        quiet = _Progress(False)
        while wait and job.status not in TERMINAL_STATUSES:
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"curvature job {job.id} still {job.status} after {timeout} s")
            await asyncio.sleep(poll)
            job = await self._send_retrying(_Api.curvature_get(job.id), quiet)
        return job

    async def cancel(self, study_id: str) -> StudyPublic:
        return await self._send(_Api.cancel(study_id))

    async def extend(self, study_id: str, extra_iterations: int = 1) -> StudyPublic:
        return await self._send(_Api.extend(study_id, extra_iterations))

    async def claim_lease(self, study_id: str, *,
                          agent: str | None = None) -> LeasePublic | None:
        return await self._send(_Api.claim_lease(study_id, agent))

    async def heartbeat(self, lease_id: str, *, agent: str | None = None) -> LeaseState:
        return await self._send(_Api.heartbeat(lease_id, agent))

    async def report_result(self, lease_id: str, result: LeaseResult | Mapping[str, Any], *,
                            agent: str | None = None) -> LeaseState:
        return await self._send(_Api.report_result(lease_id, result, agent))

    async def record_trial(self, study_id: str, trial_id: str,
                           record: LibraryTrialRecord | Mapping[str, Any]) -> TrialPublic:
        return await self._send(_Api.record_trial(study_id, trial_id, record))

    async def heartbeat_study(self, study_id: str) -> LibraryHeartbeat:
        return await self._send(_Api.heartbeat_study(study_id))

    async def finish_study(self, study_id: str, *, result: Mapping[str, Any] | None = None,
                           error: str | None = None) -> StudyPublic:
        return await self._send(_Api.finish_study(study_id, result, error))

    async def wait(self, study_id: str, *, timeout: float | None = None, poll: float = 2.0,
                   progress: bool | Callable[[StudyPublic], None] = False) -> StudyPublic:
        deadline = None if timeout is None else time.monotonic() + timeout
        shown = _Progress(progress)
        while True:
            study = await self._send_retrying(_Api.get(study_id), shown)
            shown.show(study)
            if study.status in TERMINAL_STATUSES:
                return study
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"study {study_id} still {study.status} after {timeout} s")
            await asyncio.sleep(poll)


def format_progress(study: StudyPublic) -> str:
    p = study.progress
    best = "—" if p.best_value is None else f"{p.best_value:.4f} at {p.best_value_steps} steps"
    return (f"[{study.status}] trials: {p.trials_finished} finished, {p.trials_running} running, "
            f"{p.trials_failed} failed | best {study.spec.metric}: {best}")


# ----------------------------------------------------------------------------- agent mode

class TrialRunFailed(Exception):
    """Raised by a training function to report its run as failed with this message (any
    other exception fails the run too, with its type and message)."""


@dataclass
class AgentSummary:
    """What an :class:`Agent` did: runs reported as finished or failed, leases lost (expired
    or replaced while training, the report refused), and why it stopped."""

    finished: int = 0
    failed: int = 0
    lost: int = 0
    stopped: str = ""


class Agent:
    """The agent loop of an external study (``trainer: external``), for in-process training.

    ``Agent(client, study_id).run(train)`` claims a trial, calls ``train(trial)`` with its
    :class:`~service.schemas.TrialFile` while a thread heartbeats the lease (every third of
    its TTL), reports what ``train`` returns (a mapping of metric names to numbers, the
    study's metric among them) or a failed run when it raises, and claims the next, until the
    study ends (410), ``max_trials`` runs were trained, or :meth:`stop`. With nothing to train
    right now it polls every ``poll`` seconds. ``phitune agent ... -- COMMAND`` is this loop
    with a subprocess as ``train``.

    When the lease is lost while ``train`` runs (it expired, or the study ended),
    :attr:`stopping` is set: a long loop may check it and return early; what it returns is
    not reported (the server would refuse it, 409). Reports are retried on connection
    errors and 5xx: the server answers a repeated identical report like the first.
    """

    def __init__(self, client: PhiTuneClient, study_id: str, *, name: str | None = None,
                 max_trials: int | None = None, poll: float = 2.0,
                 log: Callable[[str], None] | None = None) -> None:
        import os
        import socket
        import threading

        self.client, self.study_id = client, study_id
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.max_trials, self.poll = max_trials, poll
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        #: set while a run must stop: its lease was lost, the study ended, or :meth:`stop`
        self.stopping = threading.Event()
        self._stop = threading.Event()
        self.summary = AgentSummary()

    def stop(self) -> None:
        """End the loop after the current run (and interrupt it through :attr:`stopping`)."""
        self._stop.set()
        self.stopping.set()

    def run(self, train: Callable[[TrialFile], Mapping[str, float]]) -> AgentSummary:
        trained = 0
        while not self._stop.is_set() and (self.max_trials is None or trained < self.max_trials):
            try:
                lease = self._retrying(lambda: self.client.claim_lease(self.study_id,
                                                                       agent=self.name))
            except StudyEnded as exc:
                self.summary.stopped = str(exc.detail)
                break
            if lease is None:
                self._stop.wait(self.poll)
                continue
            trained += 1
            if self._train_one(lease, train):
                break
        if not self.summary.stopped:
            self.summary.stopped = ("stopped" if self._stop.is_set()
                                    else f"trained {trained} trial(s) (max_trials)")
        return self.summary

    def _retrying(self, send: Callable[[], Any]) -> Any:
        delays = self.client.retry.delays()
        while True:
            try:
                return send()
            except _RETRIABLE as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                self.log(f"{exc}; retrying in {delay:g} s")
                time.sleep(delay)

    def _train_one(self, lease: LeasePublic, train: Callable[[TrialFile], Any]) -> bool:
        """One leased run: train, heartbeat meanwhile, report. True: the study ended."""
        import threading

        self.stopping.clear()
        done = threading.Event()
        lost: list[PhiTuneClientError] = []

        def beat() -> None:
            while not done.wait(max(0.05, lease.ttl_s / 3)):
                try:
                    self.client.heartbeat(lease.lease_id, agent=self.name)
                except _RETRIABLE as exc:  # the next beat may get through before expiry
                    self.log(f"heartbeat of trial {lease.trial_id}: {exc}")
                except PhiTuneClientError as exc:  # expired, replaced, study ended
                    lost.append(exc)
                    self.stopping.set()
                    return

        self.log(f"trial {lease.trial_id} (attempt {lease.attempt}): {lease.trial.total_steps} "
                 f"steps, {lease.trial.schedule} {lease.trial.schedule_params}")
        beater = threading.Thread(target=beat, name=f"heartbeat-{lease.trial_id}", daemon=True)
        beater.start()
        body: dict[str, Any]
        try:
            metrics = train(lease.trial)
            body = {"metrics": _metrics_of(metrics, lease.trial.metric)}
        except Exception as exc:  # noqa: BLE001 - every failure of the user's run is a report
            reason = str(exc) if isinstance(exc, TrialRunFailed) else (
                f"{type(exc).__name__}: {exc}")
            body = {"failed": True, "error": reason[:4000]}
        finally:
            done.set()
            beater.join()
        if lost:
            self.summary.lost += 1
            self.log(f"trial {lease.trial_id}: lease lost ({lost[0]}); not reported")
            return isinstance(lost[0], StudyEnded)
        try:
            try:
                self._retrying(lambda: self.client.report_result(lease.lease_id, body,
                                                                 agent=self.name))
            except Validation as exc:  # e.g. no study metric: the run failed, say why
                body = {"failed": True, "error": f"result refused: {exc}"[:4000]}
                self._retrying(lambda: self.client.report_result(lease.lease_id, body,
                                                                 agent=self.name))
        except StudyEnded:
            return True
        except Conflict as exc:
            self.summary.lost += 1
            self.log(f"trial {lease.trial_id}: report refused ({exc})")
            return False
        if body.get("failed"):
            self.summary.failed += 1
            self.log(f"trial {lease.trial_id}: failed ({body['error']})")
        else:
            self.summary.finished += 1
            self.log(f"trial {lease.trial_id}: {lease.trial.metric}="
                     f"{body['metrics'][lease.trial.metric]:.6g}")
        return False


def _metrics_of(metrics: Any, metric: str) -> dict[str, float]:
    """A run's result as the report's ``metrics``: a mapping of names to finite numbers;
    :class:`TrialRunFailed` naming what is wrong otherwise."""
    import math

    if not isinstance(metrics, Mapping):
        raise TrialRunFailed(f"the result must be a JSON object / mapping of metric names to "
                             f"numbers, got {type(metrics).__name__}")
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TrialRunFailed(f"result {key!r}: {value!r} is not a number")
        if not math.isfinite(value):
            raise TrialRunFailed(f"result {key!r}: {value} is not finite (the run diverged?)")
        out[str(key)] = float(value)
    if metric not in out:
        raise TrialRunFailed(f"the result has no {metric!r} (the study's metric); got "
                             f"{sorted(out) or 'nothing'}")
    return out
