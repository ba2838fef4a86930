"""The one HTTP contract of phitune, shared by routes, the client library and the CLI.

Pydantic only (no torch, Ray or SQLAlchemy) so that ``pip install phitune[client]`` can import
it. Naming follows the FastAPI full-stack template: ``StudyCreate`` is what a user POSTs,
``StudyPublic`` what leaves the service. Every bound a user can violate lives in a ``Field``
so a bad spec is a 422 naming the field, before anything is stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

StudyStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class _Strict(BaseModel):
    """Unknown fields are errors: a typo in a spec must not be silently ignored. ``NaN`` and
    ``±inf`` are refused too (also as strings such as ``"nan"``): they are not JSON, could not
    be stored or echoed back, and no bound below holds for them."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


#: Seeds feed numpy/Optuna samplers, which take unsigned 32-bit seeds.
MAX_SEED = 2**32 - 1


class OptimizerSpec(_Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0, le=10, description="η_max: the peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, le=1)


class BudgetSpec(_Strict):
    """The iteration budget: optimizer steps, or epochs converted with the dataset size.

    ``fractions`` are the paper's 25/50/100 % budgets, each trained from scratch.
    """

    steps: int | None = Field(None, ge=1, description="total optimizer steps of the full budget")
    epochs: float | None = Field(None, gt=0, description="full budget in epochs (alternative)")
    fractions: list[float] = Field(default_factory=lambda: [1.0], min_length=1, max_length=8)

    @model_validator(mode="after")
    def _one_budget(self) -> BudgetSpec:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of budget.steps or budget.epochs")
        for f in self.fractions:
            if not 0 < f <= 1:
                raise ValueError(f"budget.fractions: {f} is outside (0, 1]")
        if len(set(self.fractions)) != len(self.fractions):
            raise ValueError(f"budget.fractions has duplicates: {self.fractions}")
        return self


class Range(_Strict):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class PositiveRange(Range):
    min: float = Field(gt=0, description="> 0: the range is searched on a log scale")
    max: float = Field(gt=0, le=1e4)


class IntRange(_Strict):
    min: int = Field(1, ge=1)
    max: int = Field(3, ge=1, le=64)

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class SearchSpaceSpec(_Strict):
    """What Optuna searches. φ is log-uniform in (0, ∞); phases is an integer (= paper K − 1)."""

    phi: PositiveRange = Field(default_factory=lambda: PositiveRange(min=0.01, max=50.0))
    phases: IntRange = Field(default_factory=IntRange)
    eta_max: PositiveRange | None = Field(None, description="also search η_max (log-uniform)")
    variant: Literal["cyclic", "restart"] = Field(
        "restart", description="cyclic: paper's (k−1)π offset (even phases rise); restart: decays"
    )


class ResourcesSpec(_Strict):
    cpu: float = Field(1.0, ge=0, le=256)
    gpu: float = Field(0.0, ge=0, le=16, description="fractional GPUs pack trials on one GPU")

    @model_validator(mode="after")
    def _not_all_zero(self) -> ResourcesSpec:
        if self.cpu + self.gpu <= 0:
            raise ValueError("resources: cpu and gpu cannot both be 0 (a trial needs one)")
        return self


class StudyCreate(_Strict):
    """A tuning request: which run to tune, for which budget, how hard to search."""

    name: str | None = Field(None, max_length=200)
    model: str = Field(..., min_length=1, max_length=100, examples=["mlp"])
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    dataset: str = Field(..., min_length=1, max_length=100, examples=["digits"])
    dataset_kwargs: dict[str, Any] = Field(default_factory=dict)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    batch_size: int = Field(128, ge=1, le=65536)
    budget: BudgetSpec
    search: SearchSpaceSpec = Field(default_factory=SearchSpaceSpec)
    eta_min: float = Field(0.0, ge=0)
    num_trials: int = Field(8, ge=1, description="trials per budget (upper cap from settings)")
    max_concurrent_trials: int = Field(2, ge=1, le=1024)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    early_stopping: bool = True
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    eval_every: int = Field(50, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    compare: list[str] = Field(
        default_factory=list, max_length=12,
        description="baselines trained at every budget on the same seeds as the tuned UBA "
        "(cosine, step, onecycle, linear, rex, clr, exponential, wsd, constant, uba_default)",
    )
    seeds: int = Field(1, ge=1, le=10, description="seeds per arm in the comparison")
    compare_eta_max: list[float] = Field(
        default_factory=list, max_length=6,
        description="η_max grid searched for each baseline (default: optimizer.lr)",
    )
    target: float | None = Field(None, description="metric value to reach: smallest budget")
    curvature: bool = Field(
        False, description="estimate the Hessian spectrum first; its φ suggestions warm-start "
        "the search and are compared with the tuned φ")

    @model_validator(mode="after")
    def _compare_lrs_positive(self) -> StudyCreate:
        peak = min([self.optimizer.lr] + ([self.search.eta_max.min] if self.search.eta_max
                                            else []))
        if not self.eta_min < peak:
            raise ValueError(f"eta_min ({self.eta_min}) must be < the peak learning rate "
                             f"({peak}: optimizer.lr or search.eta_max.min)")
        for lr in self.compare_eta_max:
            if not lr > 0:
                raise ValueError(f"compare_eta_max: {lr} must be > 0")
        return self


class Link(BaseModel):
    href: str


class Progress(BaseModel):
    trials_total: int = 0
    trials_running: int = 0
    trials_finished: int = 0
    trials_failed: int = 0
    best_value: float | None = None


class StudyPublic(BaseModel):
    id: str
    name: str | None
    status: StudyStatus
    spec: StudyCreate
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    dashboard_url: str | None = Field(None, description="Ray dashboard the study runs on")
    tensorboard_logdir: str | None = Field(
        None, description="the study's Ray results (TensorBoard event files): "
        "tensorboard --logdir <this>")
    optuna_storage: str | None = Field(
        None, description="Optuna RDB storage of the study's search state (password hidden); "
        "its Optuna studies are named <study id>-...")
    optuna_dashboard_command: str | None = Field(
        None, description="command that opens the search state in optuna-dashboard")
    progress: Progress = Field(default_factory=Progress)
    links: dict[str, Link] = Field(default_factory=dict)


class RayInfo(BaseModel):
    mode: Literal["shared", "per-study", "cluster"] = Field(
        description="shared: one local head for every driver (phitune serve); per-study: each "
        "driver starts its own local Ray; cluster: PHITUNE_RAY_ADDRESS")
    address: str | None = None
    dashboard_url: str | None = None


class ServiceInfo(BaseModel):
    """Where the service runs its jobs and how full its queue is (``GET /v1/info``)."""

    ray: RayInfo
    runner: str
    tensorboard_root: str
    optuna_storage: str | None = None
    max_concurrent_studies: int
    max_queued_studies: int
    studies_running: int
    studies_queued: int


class StudiesPublic(BaseModel):
    data: list[StudyPublic]
    count: int


class TrialPublic(BaseModel):
    trial_id: str
    budget_steps: int
    status: str
    params: dict[str, Any]
    step: int
    metrics: dict[str, float]
    error: str | None = None
    node_ip: str | None = Field(None, description="Ray node the trial ran on")
    updated_at: datetime


class TrialsPublic(BaseModel):
    data: list[TrialPublic]
    count: int


class BestSchedule(BaseModel):
    """The recommended schedule: feed ``phi``, ``phases``, ``eta_max`` to ``tuning.schedules.UBALR``
    (or use ``lr_curve`` directly: η for each of the ``total_steps`` updates, Eq. (5))."""

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


class BudgetPublic(BaseModel):
    budget_steps: int
    fraction: float
    num_trials: int
    num_failed: int
    best: BestSchedule | None


class StudyResultPublic(BaseModel):
    """Best schedule per budget, plus curvature, φ suggestions and baselines when asked."""

    metric: str
    mode: str
    best: BestSchedule | None
    budgets: list[BudgetPublic]
    curvature: dict[str, Any] | None = None
    suggestions: list[dict[str, Any]] = Field(default_factory=list)
    baselines: list[dict[str, Any]] = Field(default_factory=list)
    budget_curve: list[dict[str, Any]] = Field(default_factory=list)
    target: dict[str, Any] | None = None


class BudgetsPublic(BaseModel):
    """``GET /v1/studies/{id}/budgets``: metric vs budget for tuned UBA and the best baseline;
    ``target.kind`` says whether the smallest budget is measured or interpolated."""

    metric: str
    mode: str
    curve: list[dict[str, Any]]
    baselines: list[dict[str, Any]]
    target: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    detail: Any


class Recommendation(BaseModel):
    """``GET /v1/recommendations``: the φ to start from, and every suggestion with its source,
    κ definition, rationale and validity. ``phi`` is the most specific suggestion available."""

    model: str
    dataset: str
    optimizer: str
    budget: int | None
    phi: float
    source: str
    suggestions: list[dict[str, Any]]
    curvature_measured: bool
    history_studies: int


class CurvatureCreate(_Strict):
    """A Hessian-spectrum estimate of a registered model at initialisation on its data.

    Cost ≈ ``num_batches × num_probes × lanczos_steps`` Hessian-vector products."""

    model: str = Field(..., min_length=1, max_length=100)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    dataset: str = Field(..., min_length=1, max_length=100)
    dataset_kwargs: dict[str, Any] = Field(default_factory=dict)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    num_batches: int = Field(4, ge=1, le=64)
    batch_size: int = Field(128, ge=1, le=8192)
    lanczos_steps: int = Field(30, ge=2, le=200)
    num_probes: int = Field(4, ge=1, le=64)
    ggn: bool = Field(False, description="Gauss-Newton matrix (PSD) instead of the Hessian")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    at_steps: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list, max_length=16,
        description="also measure at these steps of a real UBA run of train_steps steps "
        "(e.g. each phase boundary, for per-phase φ)")
    train_steps: int | None = Field(None, ge=1, le=1_000_000)
    lr: float = Field(0.1, gt=0, le=10, description="η_max of that run")
    phi: float = Field(5.0, ge=0, le=1e4, description="φ of that run")
    phases: int = Field(1, ge=1, le=64)
    train_batch_size: int = Field(128, ge=1, le=65536)

    @model_validator(mode="after")
    def _timeline(self) -> CurvatureCreate:
        if any(s > 0 for s in self.at_steps):
            if self.train_steps is None:
                raise ValueError("at_steps after 0 need train_steps (the run's length)")
            bad = [s for s in self.at_steps if not 0 <= s <= self.train_steps]
            if bad:
                raise ValueError(f"at_steps {bad} outside [0, train_steps={self.train_steps}]")
        return self


class CurvatureJobPublic(BaseModel):
    id: str
    status: StudyStatus
    spec: CurvatureCreate
    created_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    report: dict[str, Any] | None = None
    suggestions: list[dict[str, Any]] | None = None
    timeline: list[dict[str, Any]] | None = Field(
        None, description="[{step, phase, report, suggestions}] along the run (at_steps)")
    links: dict[str, Link] = Field(default_factory=dict)
