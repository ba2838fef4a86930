"""What a study produces, as typed rows, and the sink through which `tuning` hands it over.

`tuning` never imports the service: it reports through :class:`StudySink`, a tiny Protocol the
service implements by writing to its store (and tests implement with :class:`RecordingSink`).
Every result row is a dataclass here, the one definition; ``service.schemas`` mirrors them in
pydantic for the HTTP contract and a test checks that the fields agree. ``to_dict`` gives the
JSON the store keeps (field names are the keys, nothing else).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

#: ``terminated``: trained to its horizon; ``stopped_early``: stopped by ASHA (only with
#: ``method="asha"``; its value is not a result of its horizon); ``error``: failed or diverged.
TrialStatus = Literal["pending", "running", "terminated", "stopped_early", "error"]
TRIAL_STATUSES: tuple[str, ...] = ("pending", "running", "terminated", "stopped_early", "error")
#: What a trial was for: a search candidate (at its rung's horizon), a finalist's extra seed,
#: or a comparison arm.
TrialKind = Literal["search", "finalist", "compare"]


@dataclass
class TrialRecord:
    """Latest known state of one Ray Tune trial (one horizon, one φ/phases point)."""

    trial_id: str
    budget_steps: int
    status: TrialStatus
    params: dict[str, Any]
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    node_ip: str | None = None
    #: The gradient norm of every update (``trainables.grad_norms.GradNorms.to_dict``: norm,
    #: total_steps, stride, values), set on the event that ends a trial when it reported them.
    grad_norms: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BestSchedule:
    """The recommended schedule of one budget: the parameters and its full LR curve.

    ``value`` is the metric the choice was made on: the mean over ``seeds`` when the finalists
    were re-trained with extra seeds (``n_seeds`` > 1, ``value_std`` their sample standard
    deviation), else the single search run's value (``n_seeds`` = 1, ``value_std`` None).
    """

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
    value_std: float | None = None
    n_seeds: int = 1
    seeds: list[int] = field(default_factory=list)
    #: linear warmup steps at the start of ``lr_curve`` (part of ``total_steps``)
    warmup_steps: int = 0
    #: set when another arm of the study's comparison beat this schedule on the evaluation
    #: seeds (which, by how much); this stays UBA's best either way
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_scheduler(self, optimizer: Any, *, style: str = "torch") -> Any:
        """Drive ``optimizer`` with this schedule: a ``torch`` ``LRScheduler`` (plain loops, HF
        ``Trainer``), a ``timm`` ``step_update`` scheduler or a ``lightning`` config dict
        (:func:`tuning.schedules.scheduler_from_best`; the client's mirror does the same)."""
        from tuning.schedules import scheduler_from_best

        return scheduler_from_best(self, optimizer, style=style)


@dataclass
class BudgetResult:
    """One requested budget: how many candidates were trained to it and the best of them."""

    budget_steps: int
    fraction: float
    num_trials: int
    num_failed: int
    best: BestSchedule | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RungResult:
    """One rung of the horizon ladder (all iterations together): candidates trained to
    ``steps``, how many finished, failed or diverged, and the best value there."""

    steps: int
    fraction: float
    requested: bool
    num_trials: int
    num_completed: int
    num_failed: int
    best_value: float | None


@dataclass
class FinalistRow:
    """A full-budget finalist re-trained with extra seeds: its values and their mean ± std;
    ``trial_id`` is its search run (the first of ``values``). ``robust`` False: it could not
    win (a failed/diverged seed, or a seed spread far above the other finalists', ``note``
    says which); ``phi``/``phases`` are None for a tuned peer arm."""

    trial_id: str
    phi: float | None
    phases: int | None
    eta_max: float
    seeds: list[int]
    values: list[float]
    n: int
    mean: float | None
    std: float | None
    failed_seeds: int = 0
    robust: bool = True
    note: str | None = None
    arm: str = "uba"
    candidate: int | None = None


@dataclass
class BaselineRow:
    """One comparison arm at one budget: per-seed values and mean ± std (the best η_max of a
    baseline by mean); ``errors`` are the failed seeds' reasons."""

    budget_steps: int
    schedule: str
    n: int
    values: list[float]
    mean: float | None
    std: float | None
    eta_max: float | None = None
    seeds: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: True: the arm was tuned by the study's ladder before these evaluation seeds (its
    #: ``eta_max`` is its pick); False: trained at the study's lr or the best of a fixed
    #: ``compare_eta_max`` list (``compare_tuning: fixed``), not tuned.
    tuned: bool = False
    #: Compute of the arm's tuning (ladder + finalists) in full-budget runs (0 when untuned
    #: or for UBA at the smaller budgets, whose search is the shared ladder).
    tuning_units: float = 0.0
    #: The arm's pick besides η_max (UBA: phi, phases; a tuned arm: its finalists' values; a
    #: refined arm: the whole schedule, ``schedule: refined`` with its norms; AutoLRS: each
    #: seed's stages (``runs``) and its median seed's stage lrs as ``schedule: piecewise``;
    #: see :meth:`to_scheduler`).
    params: dict[str, Any] = field(default_factory=dict)

    def to_scheduler(self, optimizer: Any, *, style: str = "torch") -> Any:
        """Drive ``optimizer`` with this arm's schedule when its ``params`` describe one (a
        refined arm: ``schedule``, ``total_steps``, ``eta_max``, ``norms``, ...; AutoLRS: its
        representative run's stage lrs, ``piecewise``); see :func:`schedule_params_scheduler`."""
        return schedule_params_scheduler(self.schedule, self.params, optimizer, style=style)


@dataclass
class Winner:
    """The best arm of a study at one budget on the evaluation seeds (UBA or a compare arm),
    with its paired margin over UBA: ``margin`` = mean over seeds of (arm − UBA), signed so
    that positive means the winner is better; ``wins``/``ties``/``losses`` count the seeds.
    ``arm == "uba"`` with margin 0 when UBA won or nothing was compared."""

    budget_steps: int
    arm: str
    mean: float | None
    eta_max: float | None
    uba_mean: float | None
    margin: float
    wins: int
    ties: int
    losses: int
    n: int
    tuned: bool
    params: dict[str, Any] = field(default_factory=dict)

    def to_scheduler(self, optimizer: Any, *, style: str = "torch") -> Any:
        """Drive ``optimizer`` with the winner's schedule when its ``params`` describe one (a
        refined or an AutoLRS arm); for UBA use ``result.best.to_scheduler``."""
        return schedule_params_scheduler(self.arm, self.params, optimizer, style=style)


def schedule_params_scheduler(arm: str, params: dict[str, Any], optimizer: Any, *,
                              style: str = "torch") -> Any:
    """The scheduler of a comparison row whose ``params`` name a ``schedule`` and its
    ``total_steps`` (``tuning.schedules.scheduler_from_best`` reads them as a best schedule);
    ValueError naming the arm otherwise. The client's mirrors call the same function."""
    if not params.get("schedule") or params.get("total_steps") is None:
        raise ValueError(f"arm {arm!r}: its params do not describe a schedule (only refined "
                         "and AutoLRS arms' do); for UBA use the study's best schedule (result.best)")
    from tuning.schedules import scheduler_from_best

    return scheduler_from_best(params, optimizer, style=style)


@dataclass
class BudgetRow:
    """One row of the budget curve: tuned UBA (search value and, when compared, mean ± std over
    seeds) next to the best baseline at that budget."""

    budget_steps: int
    fraction: float
    uba_phi: float | None
    uba_phases: int | None
    uba_search_value: float | None
    uba_mean: float | None
    uba_std: float | None
    uba_n: int
    best_baseline: str | None
    baseline_mean: float | None
    baseline_std: float | None


@dataclass
class TargetEstimate:
    """Smallest budget reaching ``target``: ``measured`` (a trained budget), ``interpolated``
    (linear in log steps between the two measured budgets in ``between``) or ``not_reached``."""

    target: float
    steps: int | None
    kind: Literal["measured", "interpolated", "not_reached"]
    between: list[int] | None = None
    note: str | None = None


@dataclass
class ComputeSpent:
    """Compute a study trained, in optimizer steps and in units of one full-budget run
    (``units`` = ``steps`` / ``full_budget_steps``), split by what it was for."""

    steps: int
    units: float
    full_budget_steps: int
    search_steps: int = 0
    finalist_steps: int = 0
    compare_steps: int = 0
    #: the compare arms' own ladders and finalists (``compare_tuning="ladder"``)
    compare_tuning_steps: int = 0
    #: ``refine: true``: the refined arms' ladders and finalists, and the linear-decay source
    #: run when it was trained for refinement (their evaluation seeds are in compare_steps)
    refine_steps: int = 0


@dataclass
class StudyResult:
    """Final result. ``curvature``, ``suggestions`` and ``baselines`` are filled by the
    curvature and comparison steps when the spec asks for them."""

    metric: str
    mode: str
    budgets: list[BudgetResult]
    curvature: dict[str, Any] | None = None
    suggestions: list[dict[str, Any]] = field(default_factory=list)
    baselines: list[BaselineRow] = field(default_factory=list)
    budget_curve: list[BudgetRow] = field(default_factory=list)
    target: TargetEstimate | None = None
    method: str = "ladder"
    rungs: list[RungResult] = field(default_factory=list)
    finalists: list[FinalistRow] = field(default_factory=list)
    compute: ComputeSpent | None = None
    #: Best arm per compared budget (smallest budget first); see :attr:`winner`.
    winners: list[Winner] = field(default_factory=list)

    @property
    def winner(self) -> Winner | None:
        """The winner at the largest compared budget (None: nothing was compared)."""
        return max(self.winners, key=lambda w: w.budget_steps) if self.winners else None

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
        winner = self.winner
        data["winner"] = asdict(winner) if winner else None
        return data


@runtime_checkable
class StudySink(Protocol):
    """Receives progress from a running study. Implementations must be cheap and thread-safe
    enough to be called from Ray Tune's callback hooks in the driver process."""

    def on_start(self, *, dashboard_url: str | None) -> None: ...

    def on_trial(self, record: TrialRecord) -> None: ...

    def on_finish(self, result: StudyResult) -> None: ...


class RecordingSink:
    """A sink that keeps the trial records and the result in memory (notebooks, benchmarks,
    tests)."""

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


#: Former name (it never was a null object: it records everything).
NullSink = RecordingSink
