"""Python client for the phitune API: ``httpx`` + the service's pydantic schemas only.

    >>> from service.client import PhiTuneClient
    >>> client = PhiTuneClient("http://127.0.0.1:8000")
    >>> study = client.submit({"model": "mlp", "dataset": "digits", "budget": {"steps": 300}})
    >>> client.wait(study.id, progress=True)
    >>> client.best(study.id).phi

Installing ``phitune[client]`` is enough: this module never imports torch, Ray or SQLAlchemy.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from service.schemas import (
    TERMINAL_STATUSES,
    BestSchedule,
    BudgetsPublic,
    CurvatureCreate,
    CurvatureJobPublic,
    Recommendation,
    StudiesPublic,
    StudyCreate,
    StudyPublic,
    StudyResultPublic,
    TrialsPublic,
)


class PhiTuneError(Exception):
    """An API call failed; ``status_code`` is the HTTP status (0 when unreachable)."""

    def __init__(self, message: str, status_code: int = 0) -> None:
        super().__init__(message)
        self.status_code = status_code


def _error_message(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text or response.reason_phrase
    if isinstance(detail, list):
        parts = []
        for item in detail:
            loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
            parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
        return "; ".join(parts)
    return str(detail)


class PhiTuneClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", *, token: str | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PhiTuneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PhiTuneError(f"cannot reach {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise PhiTuneError(f"{response.status_code}: {_error_message(response)}",
                               response.status_code)
        return response.json()

    # studies -----------------------------------------------------------------------------
    def submit(self, spec: StudyCreate | Mapping[str, Any], *,
               idempotency_key: str | None = None) -> StudyPublic:
        """Submit a study; validation happens on the server so the error names the field."""
        body = spec.model_dump(mode="json", exclude_unset=True) if isinstance(
            spec, StudyCreate) else dict(spec)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return StudyPublic.model_validate(
            self._request("POST", "/v1/studies", json=body, headers=headers))

    def get(self, study_id: str) -> StudyPublic:
        return StudyPublic.model_validate(self._request("GET", f"/v1/studies/{study_id}"))

    def list(self, *, status: str | None = None, limit: int = 50,
             offset: int = 0) -> StudiesPublic:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return StudiesPublic.model_validate(self._request("GET", "/v1/studies", params=params))

    def trials(self, study_id: str, *, status: str | None = None,
               budget_steps: int | None = None, limit: int = 1000,
               offset: int = 0) -> TrialsPublic:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        if budget_steps is not None:
            params["budget_steps"] = budget_steps
        return TrialsPublic.model_validate(
            self._request("GET", f"/v1/studies/{study_id}/trials", params=params))

    def result(self, study_id: str) -> StudyResultPublic:
        return StudyResultPublic.model_validate(
            self._request("GET", f"/v1/studies/{study_id}/result"))

    def best(self, study_id: str) -> BestSchedule:
        return BestSchedule.model_validate(self._request("GET", f"/v1/studies/{study_id}/best"))

    def budgets(self, study_id: str) -> BudgetsPublic:
        """Metric vs budget, baselines and the smallest budget reaching the spec's target."""
        return BudgetsPublic.model_validate(
            self._request("GET", f"/v1/studies/{study_id}/budgets"))

    def plot(self, study_id: str, which: str = "budgets") -> bytes:
        """PNG bytes of a study plot: ``budgets`` (metric vs budget) or ``phi`` (φ response)."""
        try:
            response = self._http.get(f"/v1/studies/{study_id}/plots/{which}.png")
        except httpx.HTTPError as exc:
            raise PhiTuneError(f"cannot reach {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise PhiTuneError(f"{response.status_code}: {_error_message(response)}",
                               response.status_code)
        return response.content

    def recommend_phi(self, model: str, dataset: str, optimizer: str = "sgd",
                      budget: int | None = None) -> Recommendation:
        """The φ to start from for this model/dataset/optimizer/budget, with its evidence."""
        params: dict[str, Any] = {"model": model, "dataset": dataset, "optimizer": optimizer}
        if budget is not None:
            params["budget"] = budget
        return Recommendation.model_validate(
            self._request("GET", "/v1/recommendations", params=params))

    def curvature(self, spec: CurvatureCreate | Mapping[str, Any], *, wait: bool = True,
                  timeout: float | None = 600, poll: float = 1.0) -> CurvatureJobPublic:
        """Queue a Hessian-spectrum estimate (runs on Ray); by default wait for its report."""
        body = spec.model_dump(mode="json", exclude_unset=True) if isinstance(
            spec, CurvatureCreate) else dict(spec)
        job = CurvatureJobPublic.model_validate(self._request("POST", "/v1/curvature", json=body))
        deadline = None if timeout is None else time.monotonic() + timeout
        while wait and job.status not in TERMINAL_STATUSES:
            if deadline is not None and time.monotonic() > deadline:
                raise PhiTuneError(f"curvature job {job.id} still {job.status} after {timeout} s")
            time.sleep(poll)
            job = CurvatureJobPublic.model_validate(
                self._request("GET", f"/v1/curvature/{job.id}"))
        return job

    def cancel(self, study_id: str) -> StudyPublic:
        return StudyPublic.model_validate(self._request("DELETE", f"/v1/studies/{study_id}"))

    def wait(self, study_id: str, *, timeout: float | None = None, poll: float = 2.0,
             progress: bool | Callable[[StudyPublic], None] = False) -> StudyPublic:
        """Poll until the study is succeeded/failed/cancelled. ``progress=True`` prints one line
        per change to stderr; a callable receives every polled study instead."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last_line = ""
        while True:
            study = self.get(study_id)
            if callable(progress):
                progress(study)
            elif progress:
                line = format_progress(study)
                if line != last_line:
                    print(line, file=sys.stderr, flush=True)
                    last_line = line
            if study.status in TERMINAL_STATUSES:
                return study
            if deadline is not None and time.monotonic() > deadline:
                raise PhiTuneError(f"study {study_id} still {study.status} after {timeout} s")
            time.sleep(poll)


def format_progress(study: StudyPublic) -> str:
    p = study.progress
    best = "—" if p.best_value is None else f"{p.best_value:.4f}"
    return (f"[{study.status}] trials: {p.trials_finished} finished, {p.trials_running} running, "
            f"{p.trials_failed} failed | best {study.spec.metric}: {best}")
