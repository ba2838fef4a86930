"""``max_failed_trials``: end a study once more of its trials have failed than allowed.

Katib's ``maxFailedTrialCount``: a spec whose trials keep crashing (a bad model kwarg, an
out-of-memory batch size) should stop spending compute and say why, instead of running its
whole trial budget into errors. Ray Tune has the two pieces: a ``Callback`` sees every trial
error, a ``Stopper`` whose ``stop_all()`` turns true ends the experiment (pending trials never
start). One object is both, so the count and the decision cannot drift apart; one object per
study (:func:`guard_for`) counts across the study's experiments (rungs, budgets, finalists).

An experiment restored after a driver restart is not guarded again (its earlier errors are not
in this process's count); the errors it reports still reach the store through the sink.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback
from ray.tune.stopper import Stopper

__all__ = ["FailedTrialsGuard", "TooManyFailedTrialsError", "guard_for"]


class TooManyFailedTrialsError(RuntimeError):
    """More trials failed than the spec's ``max_failed_trials``; the study ends failed."""


class FailedTrialsGuard(Callback, Stopper):
    """Counts failed trials (``on_trial_error``) and stops the experiment past ``limit``."""

    def __init__(self, limit: int, study_id: str = "") -> None:
        if limit < 0:
            raise ValueError(f"max_failed_trials must be >= 0, got {limit}")
        self.limit = limit
        self.study_id = study_id
        self.failed = 0

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed += 1

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False  # never stops a single trial: only failures count

    def stop_all(self) -> bool:
        return self.failed > self.limit

    def check(self) -> None:
        """Raise :class:`TooManyFailedTrialsError` when the limit was passed."""
        if self.stop_all():
            raise TooManyFailedTrialsError(
                f"study {self.study_id}: {self.failed} trials failed, more than "
                f"max_failed_trials={self.limit}; the remaining trials were not run")


_GUARDS: dict[str, FailedTrialsGuard] = {}


def guard_for(study_id: str, limit: int | None) -> FailedTrialsGuard | None:
    """The study's guard (the same object for every experiment of the study in this
    process), or ``None`` when the spec sets no limit."""
    if limit is None:
        return None
    guard = _GUARDS.get(study_id)
    if guard is None or guard.limit != limit:
        guard = _GUARDS[study_id] = FailedTrialsGuard(limit, study_id)
    return guard
