"""User-facing failures, each a :class:`PhituneError` subclass mapped to HTTP exactly once
(``service.api.main``). Messages name the field, the value and what is allowed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class PhituneError(Exception):
    status_code = 400
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses build the message from other arguments than Exception.args holds; rebuild
        # from the finished state instead of calling their __init__ (errors cross processes).
        return (_rebuild, (type(self), self.args), self.__dict__)

    def detail(self) -> Any:
        if self.field is None:
            return self.message
        return [{"loc": ["body", *self.field.split(".")], "msg": self.message,
                 "type": type(self).__name__}]


def _rebuild(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """An exception of ``cls`` with ``args``, without running ``cls.__init__`` (pickle then
    restores its ``__dict__``)."""
    err = cls.__new__(cls)
    err.args = args
    return err


class InvalidSpecError(PhituneError):
    status_code = 422


class UnknownNameError(InvalidSpecError):
    def __init__(self, field: str, value: str, allowed: Sequence[str]) -> None:
        super().__init__(f"unknown {field} {value!r}; valid: {', '.join(sorted(allowed))}",
                         field=field)


class LimitExceededError(InvalidSpecError):
    def __init__(self, field: str, value: Any, limit: Any) -> None:
        super().__init__(f"{field}={value} exceeds the configured limit {limit}", field=field)


class StudyNotFoundError(PhituneError):
    status_code = 404

    def __init__(self, study_id: str) -> None:
        super().__init__(f"study {study_id!r} not found")


class GradNormsNotFoundError(PhituneError):
    """The trial has no recorded gradient norms (unknown trial, still running, failed, or
    trained before norms were recorded)."""

    status_code = 404

    def __init__(self, study_id: str, trial_id: str) -> None:
        super().__init__(f"no gradient norms for trial {trial_id!r} of study {study_id!r}: "
                         "norms are stored when a trial finishes its budget")


class ResultNotReadyError(PhituneError):
    status_code = 409

    def __init__(self, study_id: str, status: str) -> None:
        super().__init__(f"study {study_id!r} has no result yet (status: {status})")


class TooManyStudiesError(PhituneError):
    """The queue is full: every slot runs (``max_concurrent_studies``) and
    ``max_queued_studies`` jobs wait already. Below that a submit is queued, never refused."""

    status_code = 429

    def __init__(self, running: int, queued: int, kind: str = "studies") -> None:
        super().__init__(
            f"the queue is full: {running} {kind} running (max_concurrent_studies) and "
            f"{queued} queued (max_queued_studies); retry when one has finished")


class CurvatureJobNotFoundError(PhituneError):
    status_code = 404

    def __init__(self, job_id: str) -> None:
        super().__init__(f"curvature job {job_id!r} not found")


class RecommendationJobNotFoundError(PhituneError):
    status_code = 404

    def __init__(self, job_id: str) -> None:
        super().__init__(f"recommendation job {job_id!r} not found")


class AuthError(PhituneError):
    """Missing or wrong bearer token (RFC 6750: 401 with ``WWW-Authenticate: Bearer``)."""

    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


class StudyStateError(PhituneError):
    """The request does not fit the study's current state (e.g. resuming a running study)."""

    status_code = 409


class LeaseNotFoundError(PhituneError):
    status_code = 404

    def __init__(self, lease_id: str) -> None:
        super().__init__(f"lease {lease_id!r} not found")


class LeaseHolderError(PhituneError):
    """A lease is reported or renewed by someone other than the agent that claimed it."""

    status_code = 403

    def __init__(self, lease_id: str) -> None:
        super().__init__(f"lease {lease_id!r} belongs to another agent (token and "
                         "X-Phitune-Agent of its claim); an agent can only report its own trial")


class LeaseConflictError(PhituneError):
    """The lease can no longer be renewed or reported: it expired (the trial was or will be
    offered again), another lease replaced it, or it reported a different result already."""

    status_code = 409


class StudyEndedError(PhituneError):
    """The study ended (succeeded, failed, cancelled): nothing more to train. An agent stops."""

    status_code = 410

    def __init__(self, study_id: str, status: str) -> None:
        super().__init__(f"study {study_id!r} is {status}: no trials to train")
        self.status = status
