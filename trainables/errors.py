"""User-facing failures of the trainables package.

Each failure a user can cause (a bad name in a spec, a missing data root, a bad config value,
a diverging run) has its own class so that the service can map it to an HTTP status once and
Ray can record a clear reason for an errored trial. The messages name the field, the value
and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable


class TrainablesError(Exception):
    """Base class of every error this package raises on purpose."""


class UnknownNameError(TrainablesError, KeyError, ValueError):
    """A model or dataset name that is not in the registry.

    Subclasses both ``KeyError`` (a registry lookup failed) and ``ValueError`` (a spec field
    has a bad value) so callers can catch whichever fits their layer.
    """

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.valid = sorted(valid)
        super().__init__(
            f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid) or '(none)'}"
        )

    def __str__(self) -> str:  # KeyError would repr() the message; keep it readable
        return str(self.args[0])

    def __reduce__(self) -> tuple:
        # Ray pickles a trial's exception to record it; rebuild from the constructor's args
        return (type(self), (self.kind, self.name, self.valid))


class DatasetNotFoundError(TrainablesError, FileNotFoundError):
    """A dataset's files are not where they should be; the message names the expected layout."""

    def __str__(self) -> str:
        return str(self.args[0])


class ConfigError(TrainablesError, ValueError):
    """A trial config or builder argument is out of range or of the wrong type."""


class DivergedError(TrainablesError, RuntimeError):
    """The training loss became NaN or infinite, or rose above its start (``reason``); the run
    was stopped at ``step``."""

    def __init__(self, step: int, loss: float, lr: float, reason: str = "") -> None:
        self.step = step
        self.loss = loss
        self.lr = lr
        self.reason = reason
        what = f"{loss:.6g} ({reason})" if reason else f"{loss}"
        super().__init__(
            f"training diverged: loss became {what} at step {step} (lr={lr:.6g}); "
            "lower lr (eta_max) or use a faster-decaying schedule"
        )

    def __reduce__(self) -> tuple:
        # Ray pickles a trial's exception to record it; rebuild from the constructor's args
        return (type(self), (self.step, self.loss, self.lr, self.reason))
