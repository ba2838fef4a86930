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

MetricName = Literal["val_accuracy", "val_loss"]
Optimizer = Literal["sgd", "adamw"]

#: Paper defaults (§4.1): φ = 5 for SGD, φ = 0.5 for AdamW. Optuna evaluates them first.
PAPER_DEFAULT_PHI: dict[str, float] = {"sgd": 5.0, "adamw": 0.5}


def metric_mode(metric: str) -> Literal["max", "min"]:
    """Optimisation direction of a reported metric (accuracy up, loss/perplexity down)."""
    return "max" if metric.endswith("accuracy") else "min"


@dataclass(frozen=True)
class SearchSpace:
    """What Optuna searches: φ log-uniformly, the phase count as an integer, η_max optionally.

    ``phi_min`` must be > 0 because φ is sampled on a log scale (φ = 0, the constant-LR limit,
    is a valid *schedule* but not a valid *log-range* bound).
    """

    phi_min: float = 0.01
    phi_max: float = 50.0
    phases_min: int = 1
    phases_max: int = 3
    eta_max_min: float | None = None
    eta_max_max: float | None = None
    variant: Literal["cyclic", "restart"] = "restart"

    def __post_init__(self) -> None:
        if not (self.phi_min > 0 and math.isfinite(self.phi_min)):
            raise ValueError(f"phi_min must be > 0 (log-uniform range), got {self.phi_min}")
        if not self.phi_max >= self.phi_min:
            raise ValueError(f"phi_max ({self.phi_max}) must be >= phi_min ({self.phi_min})")
        if self.phases_min < 1:
            raise ValueError(f"phases_min must be >= 1, got {self.phases_min}")
        if self.phases_max < self.phases_min:
            raise ValueError(
                f"phases_max ({self.phases_max}) must be >= phases_min ({self.phases_min})"
            )
        if (self.eta_max_min is None) != (self.eta_max_max is None):
            raise ValueError("eta_max_min and eta_max_max must be given together")
        if self.eta_max_min is not None and self.eta_max_max is not None:
            if not 0 < self.eta_max_min <= self.eta_max_max:
                raise ValueError(
                    f"eta_max range must satisfy 0 < min <= max, got "
                    f"[{self.eta_max_min}, {self.eta_max_max}]"
                )

    @property
    def searches_eta_max(self) -> bool:
        return self.eta_max_min is not None


@dataclass(frozen=True)
class Resources:
    """Resources of one trial; fractional ``gpu`` packs several small trials on one GPU."""

    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        if self.cpu < 0 or self.gpu < 0 or self.cpu + self.gpu <= 0:
            raise ValueError(f"resources must be non-negative and not all zero: {self}")

    def as_ray(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}


@dataclass(frozen=True)
class TrainSpec:
    """Everything a trial needs besides the searched schedule parameters.

    The fields map 1:1 onto the trial config keys of ``trainables.tune_trainable``.
    """

    model: str
    dataset: str
    optimizer: Optimizer = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    eta_min: float = 0.0
    batch_size: int = 128
    eval_every: int = 50
    metric: MetricName = "val_accuracy"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    data_dir: str = ""
    device: str = "auto"

    def trial_config(self, total_steps: int, seed: int) -> dict[str, Any]:
        """The constant part of a Ray Tune ``param_space`` for a budget of ``total_steps``."""
        return {
            "model": self.model,
            "model_kwargs": dict(self.model_kwargs),
            "dataset": self.dataset,
            "dataset_kwargs": dict(self.dataset_kwargs),
            "data_dir": self.data_dir,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "total_steps": total_steps,
            "eval_every": max(1, min(self.eval_every, total_steps)),
            "checkpoint_every": 0,
            "seed": seed,
            "device": self.device,
            "metric": self.metric,
            "schedule": "uba",
        }


@dataclass(frozen=True)
class StudySpec:
    """One tuning study: search φ/phases for each budget fraction of ``total_steps``.

    ``budget_fractions`` follow the paper (25/50/100 % of the full budget), every budget trained
    from scratch because the UBA curve depends on T. ``num_trials`` is per budget.
    """

    study_id: str
    train: TrainSpec
    total_steps: int
    search: SearchSpace = field(default_factory=SearchSpace)
    budget_fractions: tuple[float, ...] = (1.0,)
    num_trials: int = 8
    max_concurrent_trials: int = 2
    resources: Resources = field(default_factory=Resources)
    early_stopping: bool = True
    seed: int = 0
    storage_path: str = ""
    max_failures: int = 1
    extra_points: tuple[dict[str, Any], ...] = ()
    compare: tuple[str, ...] = ()
    seeds: int = 1
    compare_eta_max: tuple[float, ...] = ()
    target: float | None = None
    curvature: bool = False
    #: SQLAlchemy URL of an Optuna RDB storage: the search state of each budget is then an
    #: Optuna study ``<study_id>-budget-<steps>`` that optuna-dashboard can open.
    optuna_storage_url: str | None = None
    history: tuple[Any, ...] = ()  # tuning.curvature.HistoryPoint of finished studies

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if self.num_trials < 1:
            raise ValueError(f"num_trials must be >= 1, got {self.num_trials}")
        if self.max_concurrent_trials < 1:
            raise ValueError(f"max_concurrent_trials must be >= 1, got {self.max_concurrent_trials}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if any(not lr > 0 for lr in self.compare_eta_max):
            raise ValueError(f"compare_eta_max values must be > 0: {self.compare_eta_max}")
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

    @property
    def metric(self) -> str:
        return self.train.metric

    @property
    def mode(self) -> Literal["max", "min"]:
        return metric_mode(self.train.metric)

    def budget_steps(self) -> list[int]:
        """Steps of each budget, smallest first (small budgets run first and warm-start later)."""
        return [round(f * self.total_steps) for f in sorted(self.budget_fractions)]
