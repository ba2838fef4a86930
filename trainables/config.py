"""The one trial configuration: what a single phitune training run is.

Where does a trial's config come from? From here. :class:`TrainConfig` is built once per
study (the service maps the request onto it; a notebook or benchmark constructs it directly),
specialised per rung, budget or comparison arm with :meth:`TrainConfig.for_budget` and
:meth:`TrainConfig.with_schedule`, and passed around as this frozen object. It turns into a
flat JSON dict (:meth:`TrainConfig.to_dict`) exactly once, at the Ray boundary, and back
(:meth:`TrainConfig.from_mapping`) inside the trial. The schedule (name, φ, phases, variant,
η_min) lives here as fields, not in a side dict, so there is one place and one default.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from trainables.errors import ConfigError
from tuning.schedules import SCHEDULES
from tuning.schedules._uba import DEFAULT_VARIANT, PAPER_DEFAULT_PHI, UBA_VARIANTS

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_VARIANT", "PAPER_DEFAULT_PHI", "SCHEDULE_FREE", "TRAINED_STEPS", "TrainConfig",
           "metric_mode", "trained_steps"]

Optimizer = Literal["sgd", "adamw", "sgd_schedulefree", "adamw_schedulefree"]
#: Schedule-free optimizers (Defazio et al. 2024, the ``schedulefree`` package): the peer a user
#: picks to avoid a schedule altogether. They average their iterates instead of decaying the LR,
#: so they run with the ``constant`` schedule and take warmup inside the optimizer.
SCHEDULE_FREE: tuple[str, ...] = ("sgd_schedulefree", "adamw_schedulefree")
#: The learning-rate range a tuned arm searches, as factors of the study's optimizer lr: [¼, 4]×,
#: 16× wide. One definition for searched UBA's η_max, every ladder-tuned scheduled arm and
#: AutoLRS's BO range, so every arm of a comparison looks in the same place.
SCHEDULED_LR_FACTORS: tuple[float, float] = (0.25, 4.0)
Metric = Literal["val_accuracy", "val_loss", "val_perplexity"]

#: Keys a config may carry besides the fields (bookkeeping added by tuners), ignored silently.
_SCHEDULE_FIELDS = ("phi", "phases", "variant", "eta_min")


def metric_mode(metric: str) -> Literal["max", "min"]:
    """Optimisation direction of a reported metric (accuracy up, loss/perplexity down)."""
    return "max" if metric.endswith("accuracy") else "min"


#: Reported by a trial that trains more optimizer steps than its position in the budget
#: (``step``): AutoLRS's candidate windows (:mod:`trainables.autolrs`). Compute counts it.
TRAINED_STEPS = "trained_steps_total"


def trained_steps(metrics: Mapping[str, Any]) -> int:
    """Optimizer steps a trial trained, from its last report: ``trained_steps_total`` where
    reported (search included), else ``step`` (a plain run trains each step once)."""
    value = metrics.get(TRAINED_STEPS)
    if value is None:
        value = metrics.get("step", 0)
    return int(value or 0)


@dataclass(frozen=True)
class TrainConfig:
    """One training run: model, data, optimizer, budget, schedule, evaluation and seed.

    ``lr`` is η_max, the schedule's peak. ``total_steps`` is the iteration budget T (the UBA
    curve is a function of T); ``0`` marks a study's template whose budget the search sets
    per rung with :meth:`for_budget`, and is refused by :meth:`check`. ``phi``/``phases`` are
    the UBA parameters (``None`` for other schedules); ``schedule_params`` holds a baseline's
    extra parameters only. ``divergence_factor``: a run whose mean training loss between two
    evaluations exceeds this multiple of its first step's loss is stopped as diverged (NaN/inf
    always is); ``0`` disables the check. 2, not 1: a short window early in a run can sit a
    little above the first step's loss by noise alone (seen with AdamW on a tiny CNN).
    """

    model: str
    dataset: str
    lr: float = 0.1
    total_steps: int = 0
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    #: Roots every path in ``dataset_kwargs`` must resolve inside (None: no restriction).
    data_roots: tuple[str, ...] | None = None
    #: Memory budget of one trial in MB, enforced inside it (trainables.preflight); None: none.
    memory_limit_mb: float | None = None
    optimizer: Optimizer = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 128
    schedule: str = "uba"
    phi: float | None = None
    phases: int | None = None
    variant: str = DEFAULT_VARIANT
    eta_min: float = 0.0
    schedule_params: dict[str, Any] = field(default_factory=dict)
    eval_every: int = 0  # 0 -> about 10 evaluations per run
    checkpoint_every: int = 0  # 0 -> at eval points only; < 0 -> never
    eval_batch_size: int = 0  # 0 -> max(batch_size, 512)
    seed: int = 0
    device: str = "auto"
    amp: str | None = None
    compile: bool = False
    channels_last: bool = False
    metric: Metric = "val_accuracy"
    divergence_factor: float = 2.0

    # ------------------------------------------------------------------ derive

    def for_budget(self, total_steps: int, *, seed: int | None = None) -> TrainConfig:
        """This config with budget T = ``total_steps`` (eval interval clipped to it)."""
        eval_every = min(self.eval_every, total_steps) if self.eval_every else 0
        cfg = replace(self, total_steps=total_steps, eval_every=eval_every,
                      seed=self.seed if seed is None else seed)
        cfg.check()
        return cfg

    def with_schedule(self, schedule: str = "uba", **params: Any) -> TrainConfig:
        """This config with another schedule: ``phi``, ``phases``, ``variant``, ``eta_min``,
        ``lr`` (η_max) and ``seed`` set the fields, anything else is a baseline parameter."""
        own = {k: params.pop(k) for k in (*_SCHEDULE_FIELDS, "lr", "seed") if k in params}
        if schedule != "uba":
            own.setdefault("phi", None)
            own.setdefault("phases", None)
        cfg = replace(self, schedule=schedule, schedule_params=dict(params), **own)
        if cfg.total_steps:
            cfg.check()
        return cfg

    def schedule_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``tuning.schedules.create_schedule(schedule, T, eta_max=lr, ...)``."""
        kw = dict(self.schedule_params)
        if self.schedule == "uba":
            kw.update(phi=self.phi if self.phi is not None else PAPER_DEFAULT_PHI[self.optimizer],
                      phases=self.phases or 1, variant=self.variant, eta_min=self.eta_min)
        elif self.schedule in SCHEDULES and "eta_min" in SCHEDULES[self.schedule].params:
            kw.setdefault("eta_min", self.eta_min)
        return kw

    @property
    def eval_interval(self) -> int:
        return self.eval_every or max(1, self.total_steps // 10)

    # ------------------------------------------------------------- Ray boundary

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON dict a Ray Tune trial receives (the only place it is a dict)."""
        return asdict(self)

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> TrainConfig:
        """Parse and check a trial config dict (the inverse of :meth:`to_dict`).

        Unknown keys are ignored (a tuner may add bookkeeping keys). For configs written before
        the schedule fields existed, ``phi``/``phases``/``variant``/``eta_min`` inside
        ``schedule_params`` are lifted to the fields.
        """
        if isinstance(config, TrainConfig):
            config.check()
            return config
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("model", "dataset", "lr", "total_steps") if k not in config]
        if missing:
            raise ConfigError(f"trial config is missing required key(s) {missing}")
        extra = sorted(set(config) - known)
        if extra:
            logger.debug("ignoring trial config keys %s", extra)
        kw = {k: config[k] for k in known if k in config and config[k] is not None}
        params = dict(config.get("schedule_params") or {})
        for k in _SCHEDULE_FIELDS:
            if k in params:
                value = params.pop(k)
                # old format: top-level phi/phases (Optuna's) overrode schedule_params, and
                # variant/eta_min lived only there
                if k in ("variant", "eta_min") or config.get(k) is None:
                    kw[k] = value
        kw["schedule_params"] = params
        kw["model_kwargs"] = dict(config.get("model_kwargs") or {})
        kw["dataset_kwargs"] = dict(config.get("dataset_kwargs") or {})
        if config.get("data_roots") is not None:
            kw["data_roots"] = tuple(str(r) for r in config["data_roots"])
        if "amp" in config:
            kw["amp"] = config["amp"] or None
        cfg = cls(**kw)
        cfg.check()
        return cfg

    # ---------------------------------------------------------------- checks

    def check(self) -> None:
        """Reject out-of-range values with a message naming field, value and allowed range."""

        def bad(name: str, allowed: str) -> ConfigError:
            return ConfigError(f"{name}={getattr(self, name)!r} is invalid; allowed: {allowed}")

        def is_int(v: Any) -> bool:  # numpy integers from a search space count too
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        if not is_int(self.total_steps) or self.total_steps < 1:
            raise bad("total_steps", "integer >= 1")
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise bad("batch_size", "integer >= 1")
        if not isinstance(self.lr, numbers.Real) or not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad("lr", "finite number > 0")
        if self.optimizer not in ("sgd", "adamw", *SCHEDULE_FREE):
            raise bad("optimizer", "'sgd', 'adamw', 'sgd_schedulefree' or 'adamw_schedulefree'")
        if self.optimizer in SCHEDULE_FREE and self.schedule != "constant":
            raise bad("schedule", f"'constant' with optimizer {self.optimizer!r} (a schedule-free "
                                  "optimizer replaces the schedule; warmup goes in "
                                  "schedule_params.warmup_steps)")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "0 <= momentum < 1")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise bad("nesterov", "True only with optimizer 'sgd' and momentum > 0")
        if not self.weight_decay >= 0:
            raise bad("weight_decay", ">= 0")
        if self.phi is not None and not (isinstance(self.phi, numbers.Real) and self.phi >= 0
                                         and math.isfinite(self.phi)):
            raise bad("phi", "finite number >= 0 (phi < 0 puts a pole in Eq. 5)")
        if self.phases is not None and (not is_int(self.phases) or self.phases < 1):
            raise bad("phases", "integer >= 1")
        if self.variant not in UBA_VARIANTS:
            raise bad("variant", " or ".join(repr(v) for v in UBA_VARIANTS))
        if not (isinstance(self.eta_min, numbers.Real) and self.eta_min >= 0):
            raise bad("eta_min", ">= 0")
        for name in ("eval_every", "eval_batch_size"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "integer >= 0 (0 = default)")
        if not is_int(self.checkpoint_every):
            raise bad("checkpoint_every", "integer (0 = at eval points, < 0 = never)")
        if not is_int(self.seed):
            raise bad("seed", "integer")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.amp not in (None, "bf16"):
            raise bad("amp", "null or 'bf16'")
        if self.metric not in ("val_accuracy", "val_loss", "val_perplexity"):
            raise bad("metric", "'val_accuracy', 'val_loss' or 'val_perplexity'")
        if not (self.divergence_factor == 0 or self.divergence_factor >= 1):
            raise bad("divergence_factor", "0 (off) or >= 1")
        if self.schedule == "refined":
            self._check_refined()
        if self.memory_limit_mb is not None and not (
            isinstance(self.memory_limit_mb, numbers.Real) and self.memory_limit_mb > 0
        ):
            raise bad("memory_limit_mb", "null or a number > 0")

    def _check_refined(self) -> None:
        """A ``refined`` schedule (Defazio et al. 2023) carries its run's gradient norms as
        data: ``schedule_params.norms`` one finite value > 0 per update of this run (w = Ĝ^-p
        needs a positive norm; None = constant norms, linear decay) and ``optimizer`` the
        family the formula distinguishes. Checked here so a bad config fails before training
        with the field named, not inside the scheduler."""
        from tuning.schedules import REFINED_OPTIMIZERS

        params = self.schedule_params
        family = params.get("optimizer", "sgd")
        if family not in REFINED_OPTIMIZERS:
            raise ConfigError(f"schedule_params.optimizer={family!r} is invalid for schedule "
                              f"'refined'; allowed: {', '.join(REFINED_OPTIMIZERS)}")
        norms = params.get("norms")
        if norms is None:
            return
        if isinstance(norms, str | bytes) or not hasattr(norms, "__len__"):
            raise ConfigError(f"schedule_params.norms must be a list of numbers, got "
                              f"{type(norms).__name__}")
        if len(norms) != self.total_steps:
            raise ConfigError(f"schedule_params.norms has {len(norms)} values; allowed: one per "
                              f"update, total_steps={self.total_steps}")
        for i, v in enumerate(norms):
            if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                    and v > 0):
                raise ConfigError(f"schedule_params.norms[{i}]={v!r} is invalid; allowed: "
                                  "finite numbers > 0")
