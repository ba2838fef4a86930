"""What a study produces, and the sink through which `tuning` hands it over.

`tuning` never imports the service: it reports through :class:`StudySink`, a tiny Protocol the
service implements by writing to its store (and tests implement with a list). Hooks follow
Optuna's habit of small bases whose methods default to no-ops (:class:`NullSink`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

TrialStatus = Literal["pending", "running", "terminated", "stopped_early", "error"]


@dataclass
class TrialRecord:
    """Latest known state of one Ray Tune trial (one budget, one φ/phases point)."""

    trial_id: str
    budget_steps: int
    status: TrialStatus
    params: dict[str, Any]
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    node_ip: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BestSchedule:
    """The recommended schedule of one budget: the parameters and its full LR curve."""

    schedule: str
    phi: float
    phases: int
    eta_max: float
    eta_min: float
    variant: str
    total_steps: int
    metric: str
    value: float
    trial_id: str
    lr_curve: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BudgetResult:
    budget_steps: int
    fraction: float
    num_trials: int
    num_failed: int
    best: BestSchedule | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StudyResult:
    """Final result. ``curvature``, ``suggestions`` and ``baselines`` are filled by the
    curvature and comparison steps when the spec asks for them."""

    metric: str
    mode: str
    budgets: list[BudgetResult]
    curvature: dict[str, Any] | None = None
    suggestions: list[dict[str, Any]] = field(default_factory=list)
    baselines: list[dict[str, Any]] = field(default_factory=list)
    budget_curve: list[dict[str, Any]] = field(default_factory=list)
    target: dict[str, Any] | None = None

    @property
    def best(self) -> BestSchedule | None:
        """Best schedule at the largest budget that produced one."""
        for budget in sorted(self.budgets, key=lambda b: -b.budget_steps):
            if budget.best is not None:
                return budget.best
        return None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        best = self.best
        data["best"] = best.to_dict() if best else None
        return data


@runtime_checkable
class StudySink(Protocol):
    """Receives progress from a running study. Implementations must be cheap and thread-safe
    enough to be called from Ray Tune's callback hooks in the driver process."""

    def on_start(self, *, dashboard_url: str | None) -> None: ...

    def on_trial(self, record: TrialRecord) -> None: ...

    def on_finish(self, result: StudyResult) -> None: ...


class NullSink:
    """A sink that keeps the trial records in memory (for notebooks, benchmarks and tests)."""

    def __init__(self) -> None:
        self.trials: dict[str, TrialRecord] = {}
        self.result: StudyResult | None = None
        self.dashboard_url: str | None = None

    def on_start(self, *, dashboard_url: str | None) -> None:
        self.dashboard_url = dashboard_url

    def on_trial(self, record: TrialRecord) -> None:
        self.trials[record.trial_id] = record

    def on_finish(self, result: StudyResult) -> None:
        self.result = result
