"""Frozen study specifications that `tuning` consumes.

These are plain dataclasses in the spirit of Ray Tune's ``TuneConfig``/``RunConfig``: the
service maps its pydantic request schema onto them once (``service.launch.runner.spec_from_study``),
and everything below that line only reads them. Keeping them free of pydantic, SQLAlchemy and
HTTP concerns is what lets `tuning` run from a notebook, a benchmark or a Ray Job alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from trainables.autolrs import AUTOLRS, AutoLRSSettings, plan_stages
from trainables.config import (
    DEFAULT_VARIANT,
    PAPER_DEFAULT_PHI,
    SCHEDULED_LR_FACTORS,
    TrainConfig,
    metric_mode,
)
from tuning.ladder import DEFAULT_ETA, Ladder, plan_brackets

__all__ = ["PAPER_DEFAULT_PHI", "PAPER_PHI_GRID", "AutoLRSSettings", "LadderSpec", "Resources",
           "SearchSpace", "StudySpec", "TrackingSpec", "TrainConfig", "metric_mode"]

MetricName = Literal["val_accuracy", "val_loss"]
Optimizer = Literal["sgd", "adamw"]
SamplerName = Literal["tpe", "gp", "random", "grid"]
Method = Literal["ladder", "asha"]

#: The paper's φ ablation grid (§4): what ``sampler="grid"`` evaluates by default.
PAPER_PHI_GRID: tuple[float, ...] = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

@dataclass(frozen=True)
class SearchSpace:
    """What the search tries: φ log-uniformly, the phase count as an integer, and η_max.

    ``phi_min`` must be > 0 because φ is sampled on a log scale (φ = 0, the constant-LR limit,
    is a valid *schedule* but not a valid *log-range* bound).

    η_max is searched by default (it decides as much as φ; design.md, "Search design, part
    2"): in ``[eta_max_min, eta_max_max]`` when given (absolute), else in
    ``eta_max_factors`` × the optimizer's lr (default [¼, 4]×, the range every tuned compare
    arm sweeps too); ``eta_max_factors=None`` without absolute bounds keeps the optimizer's lr
    fixed (the spec's ``eta_max: fixed``).
    """

    phi_min: float = 0.01
    phi_max: float = 50.0
    phases_min: int = 1
    phases_max: int = 3
    eta_max_min: float | None = None
    eta_max_max: float | None = None
    eta_max_factors: tuple[float, float] | None = SCHEDULED_LR_FACTORS
    variant: Literal["cyclic", "restart"] = DEFAULT_VARIANT  # type: ignore[assignment]
    #: Optuna sampler proposing candidates: TPE and GP (Optuna's GPSampler, needs scipy) model
    #: the values of the highest rung with enough points; ``grid`` evaluates ``phi_grid``
    #: (clipped to the range, ``phases_min`` phases) in order; ``random`` is the control.
    sampler: SamplerName = "tpe"
    phi_grid: tuple[float, ...] = PAPER_PHI_GRID
    #: Linear warmup as a fraction of each run (so every horizon of the ladder warms up alike):
    #: fixed when min == max (0: none), searched uniformly in [min, max] otherwise.
    warmup_min: float = 0.0
    warmup_max: float = 0.0

    def __post_init__(self) -> None:
        if self.sampler not in ("tpe", "gp", "random", "grid"):
            raise ValueError(f"sampler must be one of tpe, gp, random, grid, got {self.sampler!r}")
        if not self.phi_grid or any(not (p > 0 and math.isfinite(p)) for p in self.phi_grid):
            raise ValueError(f"phi_grid must be non-empty with values > 0, got {self.phi_grid}")
        if not (self.phi_min > 0 and math.isfinite(self.phi_min)):
            raise ValueError(f"phi_min must be > 0 (log-uniform range), got {self.phi_min}")
        if not self.phi_max >= self.phi_min:
            raise ValueError(f"phi_max ({self.phi_max}) must be >= phi_min ({self.phi_min})")
        if self.phases_min < 1:
            raise ValueError(f"phases_min must be >= 1, got {self.phases_min}")
        if not 0.0 <= self.warmup_min <= self.warmup_max < 1.0:
            raise ValueError(f"warmup range must satisfy 0 <= warmup_min <= warmup_max < 1, "
                             f"got [{self.warmup_min}, {self.warmup_max}]")
        if self.phases_max < self.phases_min:
            raise ValueError(
                f"phases_max ({self.phases_max}) must be >= phases_min ({self.phases_min})"
            )
        if (self.eta_max_min is None) != (self.eta_max_max is None):
            raise ValueError("eta_max_min and eta_max_max must be given together")
        if self.eta_max_min is not None and self.eta_max_max is not None:
            if not 0 < self.eta_max_min < self.eta_max_max:
                raise ValueError(
                    f"eta_max range must satisfy 0 < min < max, got "
                    f"[{self.eta_max_min}, {self.eta_max_max}]"
                )
        if self.eta_max_factors is not None:
            lo, hi = self.eta_max_factors
            if not 0 < lo < hi:
                raise ValueError(f"eta_max_factors must satisfy 0 < min < max, got [{lo}, {hi}]")

    @property
    def searches_eta_max(self) -> bool:
        return self.eta_max_min is not None or self.eta_max_factors is not None

    def eta_range(self, lr: float) -> tuple[float, float] | None:
        """The searched η_max range for an optimizer lr of ``lr`` (None: η_max fixed at it)."""
        if self.eta_max_min is not None and self.eta_max_max is not None:
            return self.eta_max_min, self.eta_max_max
        if self.eta_max_factors is not None:
            return lr * self.eta_max_factors[0], lr * self.eta_max_factors[1]
        return None

    @property
    def searches_warmup(self) -> bool:
        return self.warmup_max > self.warmup_min


@dataclass(frozen=True)
class Resources:
    """Resources of one trial; fractional ``gpu`` packs several small trials on one GPU."""

    cpu: float = 1.0
    gpu: float = 0.0
    #: Memory Ray reserves for the trial (its ``memory`` resource), in MB; 0 = none.
    memory_mb: float = 0.0

    def __post_init__(self) -> None:
        if self.cpu < 0 or self.gpu < 0 or self.cpu + self.gpu <= 0:
            raise ValueError(f"resources must be non-negative and not all zero: {self}")
        if not self.memory_mb >= 0:
            raise ValueError(f"memory_mb must be >= 0, got {self.memory_mb}")

    def as_ray(self) -> dict[str, float]:
        out = {"cpu": self.cpu, "gpu": self.gpu}
        if self.memory_mb > 0:  # bytes, as Ray counts its memory resource
            out["memory"] = float(int(self.memory_mb * 2**20))
        return out


@dataclass(frozen=True)
class TrackingSpec:
    """Optional experiment trackers every rung's Tune experiment logs to (off by default):
    MLflow (one run per trial, in ``mlflow_experiment``, default ``phitune-<study id>``) and
    W&B (one run per trial in ``wandb_project``, grouped by study; ``wandb_mode`` offline
    writes the runs into each trial's directory without network). :mod:`tuning.tracking`
    turns this into Ray's logger callbacks."""

    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str | None = None
    wandb_project: str | None = None
    wandb_mode: Literal["online", "offline"] = "online"

    def __post_init__(self) -> None:
        if self.wandb_mode not in ("online", "offline"):
            raise ValueError(f"wandb_mode must be 'online' or 'offline', got {self.wandb_mode!r}")


@dataclass(frozen=True)
class LadderSpec:
    """Settings of the horizon ladder (:mod:`tuning.ladder`); see :func:`tuning.ladder.plan_ladder`.

    ``min_fraction``/``rungs`` left at None take the soft defaults (25 %, as many rungs as the
    eval interval and trial budget allow); given explicitly they are checked strictly.
    ``iterations``: how many successive ladders share ``num_trials`` (None: one per 8
    candidates), so TPE/GP propose the later ladders' candidates from the earlier ones'
    results. ``brackets`` > 1 cycles the iterations through Hyperband brackets.
    """

    eta: int = DEFAULT_ETA
    min_fraction: float | None = None
    rungs: int | None = None
    brackets: int = 1
    iterations: int | None = None

    def __post_init__(self) -> None:
        if self.iterations is not None and self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")


def refine_problem(spec: StudySpec) -> str | None:
    """Why ``refine: true`` cannot work for ``spec`` (a message naming ``refine``), or None.

    Refinement needs a full-budget run (``total_steps`` updates) among the requested budgets:
    the refined schedule is that run's and competes at that budget; and it needs per-update
    gradient norms, which phitune's own trainer records (:mod:`trainables.grad_norms`) and a
    study of the user's own code (library or agent mode, model ``user``) does not."""
    if not spec.refine:
        return None
    from trainables.function_trial import USER_FUNCTION  # Ray-aware module: only when asked

    if 1.0 not in spec.budget_fractions:
        return (f"refine: needs the full budget (fraction 1.0 of total_steps="
                f"{spec.total_steps}) among budget_fractions {spec.budget_fractions}: the "
                "refined schedule is a full-budget run's and competes at that budget")
    if spec.train.model == USER_FUNCTION or spec.train.dataset == USER_FUNCTION:
        return ("refine: your own training code (model 'user': library or agent mode) "
                "records no per-update gradient norms; refinement needs phitune's trainer "
                "(trainables.loop.run_training records them)")
    return None


def default_finalists(num_trials: int) -> int:
    """Finalists of a study that leaves ``finalists`` unset: 2 from 8 candidates on."""
    return 2 if num_trials >= 8 else 0


def default_iterations(num_trials: int) -> int:
    """Ladder iterations of a study that leaves ``ladder.iterations`` unset: one per 8."""
    return max(1, num_trials // 8)


@dataclass(frozen=True)
class StudySpec:
    """One tuning study: search φ/phases for each budget fraction of ``total_steps``.

    ``budget_fractions`` follow the paper (25/50/100 % of the full budget), every budget trained
    from scratch because the UBA curve depends on T. ``train`` is the trial-config template
    (its ``total_steps``, schedule and seed are set per rung and candidate).

    ``method="ladder"`` (default): the horizon ladder, successive halving over horizons; every
    candidate is a complete schedule at its rung's horizon, the user's budgets are rungs of it,
    and ``num_trials`` counts the candidates entering at the lowest rung over all iterations.
    ``method="asha"``: one search per budget, ``num_trials`` each, with ASHA stopping trials
    on their intermediate values. Measured on the demo task, those values rank UBA schedules
    backwards (Spearman −0.68 at T/4): ASHA prefers fast-decaying φ; use it knowingly.

    ``finalists``: the best full-budget candidates re-trained with ``finalist_seeds`` extra
    seeds, the winner chosen by the mean (None: 2 when num_trials >= 8, else 0).
    """

    study_id: str
    train: TrainConfig
    total_steps: int
    search: SearchSpace = field(default_factory=SearchSpace)
    budget_fractions: tuple[float, ...] = (1.0,)
    num_trials: int = 8
    max_concurrent_trials: int = 2
    resources: Resources = field(default_factory=Resources)
    method: Method = "ladder"
    ladder: LadderSpec = field(default_factory=LadderSpec)
    finalists: int | None = None
    finalist_seeds: int = 2
    seed: int = 0
    storage_path: str = ""
    max_failures: int = 1
    #: End the study once more trials than this have failed (None: never); tuning.failed_trials
    max_failed_trials: int | None = None
    extra_points: tuple[dict[str, Any], ...] = ()
    compare: tuple[str, ...] = ()
    seeds: int = 1
    compare_eta_max: tuple[float, ...] = ()
    #: ``ladder``: every compare arm is tuned by the same ladder and plan as UBA (η_max, lr for
    #: schedule-free) before the evaluation seeds; ``fixed``: arms train at the study's lr
    #: (or the best of ``compare_eta_max``), the former comparison, labelled untuned.
    compare_tuning: Literal["ladder", "fixed"] = "ladder"
    #: Stages and search of the ``autolrs`` compare arm (:mod:`trainables.autolrs`); checked
    #: against every budget when ``compare`` holds it.
    autolrs: AutoLRSSettings = field(default_factory=AutoLRSSettings)
    #: Refine the best full-budget UBA run and a linear-decay run from their recorded
    #: gradient norms (Defazio et al. 2023), tune each refined schedule's base lr by the same
    #: ladder and let both compete on the evaluation seeds (:mod:`tuning.refine`).
    refine: bool = False
    target: float | None = None
    curvature: bool = False
    #: SQLAlchemy URL of an Optuna RDB storage: the search state of each rung (horizon) is then
    #: an Optuna study ``<study_id>-budget-<steps>`` that optuna-dashboard can open; each holds
    #: only values of runs trained to that horizon.
    optuna_storage_url: str | None = None
    history: tuple[Any, ...] = ()  # tuning.curvature.HistoryPoint of finished studies
    tracking: TrackingSpec = field(default_factory=TrackingSpec)

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if self.num_trials < 1:
            raise ValueError(f"num_trials must be >= 1, got {self.num_trials}")
        if self.max_concurrent_trials < 1:
            raise ValueError(f"max_concurrent_trials must be >= 1, got {self.max_concurrent_trials}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.max_failed_trials is not None and self.max_failed_trials < 0:
            raise ValueError(f"max_failed_trials must be >= 0, got {self.max_failed_trials}")
        if any(not lr > 0 for lr in self.compare_eta_max):
            raise ValueError(f"compare_eta_max values must be > 0: {self.compare_eta_max}")
        if self.compare_tuning not in ("ladder", "fixed"):
            raise ValueError(f"compare_tuning must be 'ladder' or 'fixed', got "
                             f"{self.compare_tuning!r}")
        if not self.budget_fractions:
            raise ValueError("budget_fractions must not be empty")
        for f in self.budget_fractions:
            if not 0 < f <= 1:
                raise ValueError(f"budget fraction {f} is outside (0, 1]")
        if len(set(self.budget_fractions)) != len(self.budget_fractions):
            raise ValueError(f"budget_fractions has duplicates: {self.budget_fractions}")
        for steps in self.budget_steps():
            if steps < 1:
                raise ValueError(
                    f"a budget fraction rounds to zero steps (total_steps={self.total_steps})"
                )
        if self.method not in ("ladder", "asha"):
            raise ValueError(f"method must be 'ladder' or 'asha', got {self.method!r}")
        if self.finalists is not None and self.finalists < 0:
            raise ValueError(f"finalists must be >= 0, got {self.finalists}")
        if self.finalist_seeds < 0:
            raise ValueError(f"finalist_seeds must be >= 0, got {self.finalist_seeds}")
        if self.method == "ladder":
            self.ladders()  # a ladder that cannot fit raises ValueError naming the field
        problem = refine_problem(self)
        if problem is not None:
            raise ValueError(problem)
        if AUTOLRS in self.compare:  # stages that cannot fit a budget: ValueError naming it
            for steps in self.budget_steps():
                plan_stages(steps, self.autolrs)

    @property
    def num_finalists(self) -> int:
        """Finalists re-trained with extra seeds (0: no noise-aware final pick)."""
        if self.finalist_seeds == 0:
            return 0
        if self.finalists is None:
            return default_finalists(self.num_trials)
        return self.finalists

    @property
    def num_iterations(self) -> int:
        if self.ladder.iterations is not None:
            return self.ladder.iterations
        return default_iterations(self.num_trials)

    def ladders(self) -> list[Ladder]:
        """The horizon ladder of each iteration (``num_trials`` split over them, the first
        ones getting the remainder; iteration i uses Hyperband bracket i mod ``brackets``)."""
        n_iter = self.num_iterations
        if n_iter > self.num_trials:
            raise ValueError(f"iterations={n_iter} is more than num_trials={self.num_trials}")
        out = []
        eval_every = self.train.eval_every or max(1, self.total_steps // 10)
        for i in range(n_iter):
            share = self.num_trials // n_iter + (1 if i < self.num_trials % n_iter else 0)
            brackets = plan_brackets(
                self.total_steps, share, self.ladder.brackets, eta=self.ladder.eta,
                min_fraction=self.ladder.min_fraction, rungs=self.ladder.rungs,
                eval_every=eval_every, budget_fractions=self.budget_fractions,
                min_top=max(1, self.num_finalists))
            out.append(brackets[i % len(brackets)])
        return out

    @property
    def eta_range(self) -> tuple[float, float] | None:
        """The searched η_max range of UBA (None: fixed at the optimizer's lr)."""
        return self.search.eta_range(self.train.lr)

    @property
    def metric(self) -> str:
        return self.train.metric

    @property
    def mode(self) -> Literal["max", "min"]:
        return metric_mode(self.train.metric)

    def budget_steps(self) -> list[int]:
        """Steps of each requested budget, smallest first."""
        return [round(f * self.total_steps) for f in sorted(self.budget_fractions)]
