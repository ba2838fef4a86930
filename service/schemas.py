"""The one HTTP contract of phitune, shared by routes, the client library and the CLI.

Pydantic only (no torch, Ray or SQLAlchemy) so that the base ``pip install phitune`` can import
it. Naming follows the FastAPI full-stack template: ``StudyCreate`` is what a user POSTs,
``StudyPublic`` what leaves the service. Every bound a user can violate lives in a ``Field``
so a bad spec is a 422 naming the field, before anything is stored.
"""

from __future__ import annotations

import math
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


class StepsRange(_Strict):
    """A range of optimizer steps (0 allowed): searched uniformly."""

    min: int = Field(0, ge=0)
    max: int = Field(..., ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> StepsRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


#: The paper's φ ablation grid (§4), what ``search.sampler: grid`` evaluates by default
#: (mirrors ``tuning.specs.PAPER_PHI_GRID``; the schema cannot import tuning).
PAPER_PHI_GRID: tuple[float, ...] = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ScaleRange(_Strict):
    """A range relative to ``optimizer.lr``: η_max is searched in [min·lr, max·lr]."""

    min: float = Field(0.3, gt=0, le=1, description="lower factor on optimizer.lr")
    max: float = Field(3.0, ge=1, le=100, description="upper factor on optimizer.lr")


class SearchSpaceSpec(_Strict):
    """What Optuna searches. φ is log-uniform in (0, ∞); phases is an integer (= paper K − 1)."""

    phi: PositiveRange = Field(default_factory=lambda: PositiveRange(min=0.01, max=50.0))
    phases: IntRange = Field(default_factory=IntRange)
    eta_max: PositiveRange | Literal["fixed"] | float | None = Field(
        None, description="η_max is searched by default, in [¼, 4]× optimizer.lr (it decides as "
        "much as φ). {min, max}: absolute bounds (log-uniform, 0 < min < max); \"fixed\": "
        "keep optimizer.lr; a number > 0: η_max fixed at it")
    eta_max_scale: ScaleRange | None = Field(
        None, description="the searched η_max range relative to optimizer.lr, [min·lr, max·lr] "
        "(default [0.25, 4]; give this or an eta_max range, not both)")
    variant: Literal["cyclic", "restart"] = Field(
        "restart", description="cyclic: paper's (k−1)π offset (even phases rise); restart: decays"
    )
    sampler: Literal["tpe", "gp", "random", "grid"] = Field(
        "tpe", description="Optuna sampler proposing candidates: tpe, gp (Optuna's GPSampler), "
        "random, or grid (evaluates phi_grid in order)")
    phi_grid: list[float] = Field(
        default_factory=lambda: list(PAPER_PHI_GRID), min_length=1, max_length=64,
        description="φ values of sampler 'grid' (default: the paper's ablation grid)")
    warmup_steps: Annotated[int, Field(ge=0)] | StepsRange = Field(
        0, description="linear warmup before the UBA curve, in steps of the full budget: a "
        "number (fixed) or {min, max} (searched); shorter horizons of the ladder warm up for "
        "the same fraction of their run")

    @model_validator(mode="after")
    def _one_eta_max_range(self) -> SearchSpaceSpec:
        if self.eta_max is not None and self.eta_max_scale is not None:
            raise ValueError("search.eta_max_scale: give eta_max or eta_max_scale, not both")
        eta = self.eta_max
        if isinstance(eta, PositiveRange) and not eta.min < eta.max:
            raise ValueError(f"search.eta_max: min ({eta.min}) must be < max ({eta.max})")
        if isinstance(eta, float | int) and not (0 < eta <= 10):
            raise ValueError(f"search.eta_max: a fixed η_max must be in (0, 10], got {eta}")
        sc = self.eta_max_scale
        if sc is not None and not sc.min < sc.max:
            raise ValueError(f"search.eta_max_scale: min ({sc.min}) must be < max ({sc.max})")
        for phi in self.phi_grid:
            if not phi > 0:
                raise ValueError(f"search.phi_grid: {phi} must be > 0")
        return self


class LadderSettings(_Strict):
    """The horizon ladder (successive halving over horizons; ``method: ladder``).

    Every candidate is a complete schedule trained from scratch at its rung's horizon; the best
    1/eta move up to the next horizon, the top rung is the full budget. Requested
    ``budget.fractions`` are rungs of the same ladder."""

    eta: int = Field(3, ge=2, le=10, description="keep the best 1/eta of a rung for the next")
    min_fraction: float | None = Field(
        None, gt=0, le=1, description="shortest horizon as a fraction of the budget (default "
        "0.25, then shortened to fit; given explicitly, a rung under one eval interval is a 422)")
    rungs: int | None = Field(None, ge=1, le=8, description="number of internal rungs "
                              "(default: as many as min_fraction, eval_every and num_trials allow)")
    brackets: int = Field(1, ge=1, le=8, description="Hyperband brackets over the horizons "
                          "(> 1 hedges against rank changes between horizons)")
    iterations: int | None = Field(None, ge=1, le=64, description="successive ladders sharing "
                                   "num_trials (default: one per 8 candidates); later ladders' "
                                   "candidates are proposed from the earlier results")


#: Fewest steps of an AutoLRS candidate window (``trainables.autolrs.MIN_TAU_PRIME``; a test
#: checks they agree).
AUTOLRS_MIN_TAU_PRIME = 4


class AutoLRSSettingsSpec(_Strict):
    """The ``autolrs`` compare arm (Jin et al., ICLR 2021): stages of τ steps (τ doubling,
    τ₀ = tau_fraction × budget), each starting with ``candidates`` lrs tried for τ′ steps
    (τ′₀ = tau_prime_fraction × budget, doubling too) from a checkpoint, chosen by a GP over
    log lr in [lr_min_factor, lr_max_factor] × optimizer.lr by the loss an exponential fit
    forecasts at τ. Defaults: τ₀ = T/16 and k·τ′ = τ (its search trains about as much as its
    stages, the paper's ratio). Mirrors ``trainables.autolrs.AutoLRSSettings``."""

    tau_fraction: float = Field(1 / 16, gt=0, le=1, description="first stage, a fraction of "
                                "the budget (stages double; the last is truncated to fit)")
    tau_prime_fraction: float = Field(1 / 64, gt=0, le=1, description="first candidate "
                                      "window, a fraction of the budget (<= tau_fraction)")
    candidates: int = Field(4, ge=1, le=32, description="lrs tried per stage (the paper: 10)")
    lr_min_factor: float = Field(0.25, gt=0, description="lowest lr tried, × optimizer.lr")
    lr_max_factor: float = Field(4.0, gt=0, description="highest lr tried, × optimizer.lr")

    @model_validator(mode="after")
    def _ordered(self) -> AutoLRSSettingsSpec:
        if self.tau_prime_fraction > self.tau_fraction:
            raise ValueError(f"autolrs.tau_prime_fraction: {self.tau_prime_fraction} must be "
                             f"<= tau_fraction ({self.tau_fraction})")
        if not self.lr_max_factor > self.lr_min_factor:
            raise ValueError(f"autolrs.lr_max_factor: {self.lr_max_factor} must be > "
                             f"lr_min_factor ({self.lr_min_factor})")
        return self

    def stage_problem(self, steps: int) -> tuple[str, str] | None:
        """Why the stages cannot fit a budget of ``steps``, as (field, message naming it), or
        None (``trainables.autolrs.plan_stages``'s check; a test checks both agree)."""
        prime = round(self.tau_prime_fraction * steps)
        if prime < AUTOLRS_MIN_TAU_PRIME:
            return "autolrs.tau_prime_fraction", (
                f"autolrs.tau_prime_fraction: {self.tau_prime_fraction} gives candidate windows "
                f"of {prime} steps at a budget of {steps}; the forecast needs >= "
                f"{AUTOLRS_MIN_TAU_PRIME}")
        tau = max(1, round(self.tau_fraction * steps))
        if tau + self.candidates * prime > steps:
            return "autolrs.tau_fraction", (
                f"autolrs.tau_fraction: {self.tau_fraction}: the first stage ({tau} steps) plus "
                f"its search ({self.candidates} x {prime} steps) exceeds the budget of {steps}")
        return None


class ResourcesSpec(_Strict):
    cpu: float = Field(1.0, ge=0, le=256)
    gpu: float = Field(0.0, ge=0, le=16, description="fractional GPUs pack trials on one GPU")

    @model_validator(mode="after")
    def _not_all_zero(self) -> ResourcesSpec:
        if self.cpu + self.gpu <= 0:
            raise ValueError("resources: cpu and gpu cannot both be 0 (a trial needs one)")
        return self


#: Who trains a study's trials: ``builtin`` (the server's Ray trains a registered model on a
#: registered dataset), ``external`` (agents train the user's own code; see :class:`TrialFile`)
#: or ``library`` (the user's own process plans and trains the study on the user's Ray,
#: ``service.library.tune_schedule``, and only records it here: no driver, no server compute).
Trainer = Literal["builtin", "external", "library"]
#: Trainers whose code phitune never sees: no model or dataset, a budget in steps.
OWN_CODE_TRAINERS = ("external", "library")
#: Fields that name what phitune would train: required by ``builtin``, refused otherwise.
BUILTIN_ONLY_FIELDS = ("model", "model_kwargs", "dataset", "dataset_kwargs")


class StudyCreate(_Strict):
    """A tuning request: which run to tune, for which budget, how hard to search.

    ``trainer: external`` (agent mode): the server plans the study as usual but trains
    nothing; agents claim its trials (``POST /v1/studies/{id}/leases``), run the user's own
    code and report the metric. Such a study names no model or dataset (phitune never sees
    them), gives its budget in ``budget.steps`` and measures no curvature."""

    name: str | None = Field(None, max_length=200)
    trainer: Trainer = Field(
        "builtin", description="builtin: the server trains `model` on `dataset`; external: "
        "agents (`phitune agent`) train your own code, no model or dataset given; library: "
        "recorded only, planned and trained by your own process on your Ray "
        "(`service.library.tune_schedule(..., server=URL)`), stored running, never queued")
    model: str | None = Field(None, min_length=1, max_length=100, examples=["mlp"],
                              description="registered model (trainer builtin: required)")
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    dataset: str | None = Field(None, min_length=1, max_length=100, examples=["digits"],
                                description="registered dataset (trainer builtin: required)")
    dataset_kwargs: dict[str, Any] = Field(default_factory=dict)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    batch_size: int = Field(128, ge=1, le=65536)
    budget: BudgetSpec
    search: SearchSpaceSpec = Field(default_factory=SearchSpaceSpec)
    eta_min: float = Field(0.0, ge=0)
    num_trials: int = Field(8, ge=1, description="candidates the search proposes: with the "
                            "ladder, those entering at its lowest rung (over all iterations); with "
                            "ASHA, per budget (upper cap from settings)")
    max_concurrent_trials: int = Field(2, ge=1, le=1024)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    method: Literal["ladder", "asha"] = Field(
        "ladder", description="multi-fidelity method. ladder: complete schedules on growing "
        "horizons (rank φ like the full budget: Spearman +0.89 at T/4 on the demo task). asha: "
        "Ray's ASHA stops runs on intermediate values, which rank UBA schedules backwards "
        "(Spearman −0.68 at T/4, −0.75 at T/2 on the demo task): it favours fast-decaying φ")
    ladder: LadderSettings = Field(default_factory=LadderSettings)
    finalists: int | None = Field(
        None, ge=0, le=8, description="best full-budget candidates re-trained with "
        "finalist_seeds extra seeds, the winner picked by the mean (default: 2 when "
        "num_trials >= 8, else 0)")
    finalist_seeds: int = Field(2, ge=0, le=10, description="extra seeds per finalist")
    early_stopping: bool | None = Field(
        None, description="deprecated: true is method 'asha'; false changes nothing")
    metric: Literal["val_accuracy", "val_loss", "val_perplexity"] = Field(
        "val_accuracy", description="what the search optimises (accuracy up, loss and "
        "perplexity down); val_perplexity needs a language-model dataset")
    warm_start_from: str | None = Field(
        None, max_length=64, description="id of a finished study whose best candidates this "
        "search evaluates first (up to half of the first ladder iteration's candidates, as the "
        "source stood at this submission); the rest are sampled")
    max_failed_trials: int | None = Field(
        None, ge=0, description="end the study as failed once more trials than this have "
        "failed (Katib's maxFailedTrialCount); null: trial failures never stop the study")
    eval_every: int = Field(50, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    compare: list[str] = Field(
        default_factory=list, max_length=12,
        description="baselines trained at every budget on the same seeds as the tuned UBA "
        "(cosine, step, onecycle, linear, rex, clr, exponential, wsd, constant, uba_default, "
        "schedulefree: the optimizer's schedule-free form at a constant lr; autolrs: the lr "
        "chosen on the fly by AutoLRS, settings in `autolrs`, its search counted as compute)",
    )
    seeds: int = Field(1, ge=1, le=10, description="evaluation seeds per arm in the "
                       "comparison (paired across arms; the winner is the best mean)")
    compare_tuning: Literal["ladder", "fixed"] = Field(
        "ladder", description="ladder: every compare arm is tuned by the same ladder and plan "
        "as UBA (η_max; lr for schedulefree) before the evaluation seeds, its compute reported; "
        "fixed: arms train at optimizer.lr or the best of compare_eta_max (untuned, labelled)")
    compare_eta_max: list[float] = Field(
        default_factory=list, max_length=6,
        description="η_max grid searched for each baseline (default: optimizer.lr)",
    )
    autolrs: AutoLRSSettingsSpec = Field(
        default_factory=AutoLRSSettingsSpec, description="stages and search of the autolrs "
        "compare arm (checked against every budget when compare holds it)")
    refine: bool = Field(
        False, description="refine the best full-budget UBA run and a linear-decay run from "
        "their recorded gradient norms (Defazio et al. 2023), tune each refined schedule's "
        "base lr by the same ladder as the compare arms and let them compete for the winner "
        "(rows refined-uba, refined-linear; the linear run is the tuned linear arm's when "
        "compare holds it, else one run at optimizer.lr, counted); needs budget fraction 1.0 "
        "and trainer builtin")
    target: float | None = Field(None, description="metric value to reach: smallest budget")
    curvature: bool = Field(
        False, description="estimate the Hessian spectrum first; its φ suggestions warm-start "
        "the search and are compared with the tuned φ")

    @model_validator(mode="after")
    def _trainer_fields(self) -> StudyCreate:
        """``builtin`` needs a model and a dataset; ``external`` trains neither, so naming one
        (or what needs one: curvature, epochs, the schedule-free arm) is an error naming it."""
        if self.trainer == "builtin":
            for name in ("model", "dataset"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name}: required with trainer 'builtin' (or set "
                                     "trainer: external to train your own code with agents)")
            return self
        kind = self.trainer
        who = "your agents bring" if kind == "external" else "your function brings"
        for name in BUILTIN_ONLY_FIELDS:
            if name in self.model_fields_set and getattr(self, name):
                raise ValueError(f"{name}: not allowed with trainer {kind!r} ({who} their own "
                                 "model and data; remove it)")
        if self.budget.steps is None:
            raise ValueError(f"budget.epochs: trainer {kind!r} needs budget.steps (phitune "
                             "does not know your dataset's size)")
        if self.curvature:
            raise ValueError(f"curvature: not available with trainer {kind!r} (it measures "
                             "a registered model's Hessian)")
        if "schedulefree" in self.compare:
            raise ValueError("compare: 'schedulefree' needs phitune to build the optimizer; "
                             f"with trainer {kind!r} compare schedules only")
        if self.refine:
            raise ValueError(f"refine: not available with trainer {kind!r} (refinement is "
                             "a built-in study's step)")
        return self

    @model_validator(mode="after")
    def _refine_has_a_full_budget(self) -> StudyCreate:
        """``refine`` refines full-budget runs and competes at that budget: fraction 1.0 must
        be requested (the same rule as ``tuning.specs.refine_problem``)."""
        if self.refine and 1.0 not in self.budget.fractions:
            raise ValueError(f"refine: needs the full budget (fraction 1.0) among "
                             f"budget.fractions {list(self.budget.fractions)}: the refined "
                             "schedule is a full-budget run's and competes at that budget")
        return self

    @model_validator(mode="after")
    def _compare_lrs_positive(self) -> StudyCreate:
        # the smallest peak LR any trial can have (tuned UBA or a baseline's η_max grid)
        eta = self.search.eta_max
        if isinstance(eta, PositiveRange):
            peak = eta.min
        elif eta == "fixed":
            peak = self.optimizer.lr
        elif isinstance(eta, float | int):
            peak = float(eta)
        else:
            scale = self.search.eta_max_scale
            peak = self.optimizer.lr * (scale.min if scale is not None else 0.25)
        peak = min([peak, *(lr for lr in self.compare_eta_max if lr > 0)])
        if not self.eta_min < peak:
            raise ValueError(f"eta_min ({self.eta_min}) must be < the smallest peak learning "
                             f"rate a trial can have ({peak:g}: optimizer.lr, search.eta_max "
                             "or compare_eta_max)")
        for lr in self.compare_eta_max:
            if not lr > 0:
                raise ValueError(f"compare_eta_max: {lr} must be > 0")
        if self.compare and self.compare_tuning == "ladder" and self.num_trials < 2:
            raise ValueError(f"compare: tuning the arms {self.compare} by the ladder needs "
                             f"num_trials >= 2 (an lr sweep), got {self.num_trials}; raise it "
                             "or set compare_tuning: fixed")
        if self.compare and self.compare_tuning == "ladder" and self.compare_eta_max:
            raise ValueError("compare_eta_max: a fixed lr list applies to compare_tuning: fixed "
                             "only (tuned arms sweep their own lr range)")
        w = self.search.warmup_steps
        longest = w if isinstance(w, int) else w.max
        if self.budget.steps is not None and longest >= self.budget.steps:
            raise ValueError(f"search.warmup_steps: {longest} must be < budget.steps "
                             f"({self.budget.steps}): the schedule needs steps after warmup")
        return self


    @model_validator(mode="after")
    def _autolrs_fits(self) -> StudyCreate:
        """AutoLRS stages that cannot fit a budget in steps are a 422 naming ``autolrs.*``
        (a budget in epochs: :func:`service.api.spec_checks.check_epoch_budget`)."""
        if self.budget.steps is not None:
            problem = self.autolrs_problem(self.budget.steps)
            if problem is not None:
                raise ValueError(problem[1])
        return self

    def autolrs_problem(self, steps: int) -> tuple[str, str] | None:
        """Why the ``autolrs`` arm cannot run at some budget fraction of ``steps`` (field,
        message), or None (it fits, or is not compared)."""
        if "autolrs" not in self.compare:
            return None
        for f in sorted(self.budget.fractions):
            problem = self.autolrs.stage_problem(round(f * steps))
            if problem is not None:
                return problem
        return None

    @model_validator(mode="after")
    def _ladder_fits(self) -> StudyCreate:
        """The ladder bounds of ``tuning.ladder.plan_ladder`` (ValueError there), checked here
        where the budget is known in steps, so a ladder that cannot fit is a 422 naming the
        field (tests/service/test_search_schema.py checks both layers agree). A budget in
        epochs is checked by the route once the training-set size is known."""
        if self.budget.steps is not None:
            problem = self.ladder_problem(self.budget.steps)
            if problem is not None:
                raise ValueError(problem[1])
        return self

    def ladder_problem(self, steps: int) -> tuple[str, str] | None:
        """Why the ladder cannot fit a budget of ``steps`` optimizer steps, as (field,
        message naming the field), or None when it fits (or the method is not the ladder)."""
        lad = self.ladder
        if self.method != "ladder" or self.early_stopping:
            return None
        interval = min(self.eval_every, steps)
        shortest = math.ceil(lad.min_fraction * steps - 1e-9) if lad.min_fraction else None
        if shortest is not None and shortest < interval:
            return "ladder.min_fraction", (
                f"ladder.min_fraction: {lad.min_fraction} gives a rung of {shortest} steps, "
                f"under one eval interval ({interval} steps)")
        if lad.rungs is not None:
            lowest = round(steps / lad.eta ** (lad.rungs - 1))
            if lowest < interval:
                return "ladder.rungs", (f"ladder.rungs: {lad.rungs} rungs make the lowest "
                                        f"{lowest} steps, under one eval interval ({interval} "
                                        "steps)")
            share = self.num_trials // (lad.iterations or max(1, self.num_trials // 8))
            if share < lad.eta ** (lad.rungs - 1):
                return "ladder.rungs", (f"ladder.rungs: {lad.rungs} rungs need at least "
                                        f"{lad.eta ** (lad.rungs - 1)} candidates per "
                                        f"iteration, num_trials allows {share}")
            if lad.brackets > lad.rungs:
                return "ladder.brackets", (f"ladder.brackets: {lad.brackets} is more than the "
                                           f"{lad.rungs} rungs")
        if lad.iterations is not None and lad.iterations > self.num_trials:
            return "ladder.iterations", (f"ladder.iterations: {lad.iterations} is more than "
                                         f"num_trials ({self.num_trials})")
        return None


class StudyExtend(_Strict):
    """Body of ``POST /v1/studies/{id}:extend``: more candidates for a finished ladder study.

    Counted in whole ladder iterations, not trials: ``num_trials`` is split over the
    iterations, so raising it alone would re-plan the iterations that already ran. Each extra
    iteration proposes as many candidates as the study's iterations had (``num_trials //
    iterations``) from every finished one; the stored spec's ``ladder.iterations`` and
    ``num_trials`` grow by that much."""

    extra_iterations: int = Field(
        ..., ge=1, le=63, description="ladder iterations to append (each with the study's "
        "per-iteration candidate count); ladder.iterations may reach 64 in all")


class Link(BaseModel):
    href: str


class Progress(BaseModel):
    trials_total: int = 0
    trials_running: int = 0
    trials_finished: int = 0
    trials_failed: int = 0
    best_value: float | None = Field(
        None, description="best metric value of the runs finished at best_value_steps (the "
        "longest horizon any run has finished): values of different ladder rungs are not "
        "comparable, and a running trial's value is an intermediate one")
    best_value_steps: int | None = Field(
        None, description="the horizon (optimizer steps) best_value was reached at; it grows "
        "as the ladder's rungs finish, the full budget last")


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


class GradNormsPublic(BaseModel):
    """``GET /v1/studies/{id}/trials/{trial_id}/grad_norms``: the gradient norm of every update
    of one finished trial, in the norm its optimizer uses (``l2`` SGD, ``l1`` Adam-type), the
    input of a refined schedule (Defazio et al. 2023). ``values[j]`` is the mean norm of
    updates ``j·stride .. (j+1)·stride - 1``: ``stride`` is 1 (one value per update) up to
    20 000 steps. A value that was not finite reads as null. Mirror of
    ``trainables.grad_norms.GradNorms`` plus ``trial_id``."""

    trial_id: str
    norm: Literal["l1", "l2"]
    total_steps: int
    stride: int
    values: list[float | None]

    def per_step(self) -> list[float | None]:
        """One value per update (``total_steps`` of them): the ``norms`` of
        ``create_schedule("refined", total_steps, norms=..., optimizer=...)``."""
        out = [v for v in self.values for _ in range(self.stride)]
        return out[: self.total_steps]

    def refine_optimizer(self) -> str:
        """The ``optimizer`` family of the refined schedule: ``sgd`` for l2, ``adam`` for l1."""
        return "sgd" if self.norm == "l2" else "adam"


class BestSchedule(BaseModel):
    """The recommended schedule: ``best.to_scheduler(optimizer)`` drives a torch optimizer with
    it (or use ``lr_curve`` directly: η for each of the ``total_steps`` updates, Eq. (5)).

    ``value`` is the mean over ``seeds`` when the finalists were re-trained (``n_seeds`` > 1,
    ``value_std`` their standard deviation), else the one search run's value.
    Mirror of ``tuning.results.BestSchedule``."""

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
    seeds: list[int] = Field(default_factory=list)
    warmup_steps: int = Field(0, description="linear warmup steps at the start of lr_curve")
    note: str | None = Field(None, description="set when another arm of the comparison beat "
                             "this UBA schedule (which arm, by how much; see result.winner)")

    def to_scheduler(self, optimizer: Any, *, style: str = "torch") -> Any:
        """A scheduler for ``optimizer`` following this schedule: ``style`` ``torch`` (an
        ``LRScheduler``: plain loops, HF ``Trainer``), ``timm`` (``step_update``) or
        ``lightning`` (the ``lr_scheduler`` dict). Needs the schedule library, imported only
        here so the client stays light: ``pip install 'phitune[schedules]'``."""
        try:
            from tuning.schedules import scheduler_from_best
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                f"BestSchedule.to_scheduler needs {exc.name}: pip install 'phitune[schedules]'",
                name=exc.name) from exc
        return scheduler_from_best(self, optimizer, style=style)


def _params_scheduler(arm: str, params: dict[str, Any], optimizer: Any, style: str) -> Any:
    """A comparison row's schedule from its ``params`` (``schedule``, ``total_steps``, and the
    registry entry's fields), as ``tuning.results.schedule_params_scheduler`` builds it."""
    if not params.get("schedule") or params.get("total_steps") is None:
        raise ValueError(f"arm {arm!r}: its params do not describe a schedule (only refined "
                         "and AutoLRS arms' do); for UBA use the study's best schedule")
    try:
        from tuning.schedules import scheduler_from_best
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"to_scheduler needs {exc.name}: pip install 'phitune[schedules]'",
            name=exc.name) from exc
    return scheduler_from_best(params, optimizer, style=style)


class BudgetPublic(BaseModel):
    """One requested budget (mirror of ``tuning.results.BudgetResult``)."""

    budget_steps: int
    fraction: float
    num_trials: int
    num_failed: int
    best: BestSchedule | None


class RungResult(BaseModel):
    """One horizon of the ladder (mirror of ``tuning.results.RungResult``)."""

    steps: int
    fraction: float
    requested: bool
    num_trials: int
    num_completed: int
    num_failed: int
    best_value: float | None


class FinalistRow(BaseModel):
    """A finalist re-trained with extra seeds (mirror of ``tuning.results.FinalistRow``)."""

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
    robust: bool = Field(True, description="false: it could not win (a failed or diverged "
                         "seed, or a seed spread far above the other finalists'; see note)")
    note: str | None = None
    arm: str = "uba"
    candidate: int | None = None


class BaselineRow(BaseModel):
    """One comparison arm at one budget (mirror of ``tuning.results.BaselineRow``)."""

    budget_steps: int
    schedule: str
    n: int
    values: list[float]
    mean: float | None
    std: float | None
    eta_max: float | None = None
    seeds: list[int] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    tuned: bool = Field(False, description="true: tuned by the study's ladder before the "
                        "evaluation seeds; false: trained at a fixed lr (compare_tuning: fixed)")
    tuning_units: float = Field(0.0, description="compute of the arm's tuning, in full-budget "
                                "runs")
    params: dict[str, Any] = Field(default_factory=dict, description="the arm's pick besides "
                                   "eta_max; a refined arm: its whole schedule (schedule: "
                                   "refined, total_steps, eta_max, norms, optimizer); "
                                   "AutoLRS: each seed's stages (runs) and its median seed's "
                                   "stage lrs (schedule: piecewise, boundaries, factors, "
                                   "from_seed); see to_scheduler")

    def to_scheduler(self, optimizer: Any, *, style: str = "torch") -> Any:
        """A scheduler for ``optimizer`` following this arm's schedule when its ``params``
        describe one (a refined arm; AutoLRS: its median seed's stage lrs, ``piecewise``); see
        :meth:`BestSchedule.to_scheduler` for ``style``."""
        return _params_scheduler(self.schedule, self.params, optimizer, style)


class Winner(BaseModel):
    """The best arm at one budget on the evaluation seeds, with its paired margin over UBA
    (positive: the winner is better); mirror of ``tuning.results.Winner``."""

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
    params: dict[str, Any] = Field(default_factory=dict)

    def to_scheduler(self, optimizer: Any, *, style: str = "torch") -> Any:
        """A scheduler for ``optimizer`` following the winner's schedule when its ``params``
        describe one (a refined or an AutoLRS arm); for UBA use the study's best
        (``client.best(id)``)."""
        return _params_scheduler(self.arm, self.params, optimizer, style)

    def advice(self, metric: str) -> str:
        """"use X" in one line, computed from the result (the CLI and README print it)."""
        lr = f" at η_max={self.eta_max:.4g}" if self.eta_max is not None else ""
        if self.arm == "uba":
            return (f"use UBA{lr}: the best arm at {self.budget_steps} steps "
                    f"({metric} {self.mean:.4g} over {self.n or 1} evaluation seed(s))")
        tuned = "tuned" if self.tuned else "untuned (fixed lr)"
        return (f"use {self.arm}{lr} ({tuned}): it beat UBA at {self.budget_steps} steps by "
                f"{abs(self.margin):.4g} {metric} on average over {self.n} paired seeds "
                f"(won {self.wins}, tied {self.ties}, lost {self.losses})")


class BudgetRow(BaseModel):
    """One row of the budget curve (mirror of ``tuning.results.BudgetRow``)."""

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


class TargetEstimate(BaseModel):
    """Smallest budget reaching a target (mirror of ``tuning.results.TargetEstimate``)."""

    target: float
    steps: int | None
    kind: Literal["measured", "interpolated", "not_reached"]
    between: list[int] | None = None
    note: str | None = None


class ComputeSpent(BaseModel):
    """Optimizer steps a study trained, and in units of one full-budget run (mirror of
    ``tuning.results.ComputeSpent``)."""

    steps: int
    units: float
    full_budget_steps: int
    search_steps: int = 0
    finalist_steps: int = 0
    compare_steps: int = 0
    compare_tuning_steps: int = 0
    refine_steps: int = Field(0, description="refine: the refined arms' ladders and finalists "
                              "and the linear source run when trained for it")


class StudyResultPublic(BaseModel):
    """Best schedule per budget, the ladder's rungs, the finalists (mean ± std over seeds), the
    compute spent, plus curvature, φ suggestions and baselines when asked."""

    metric: str
    mode: str
    best: BestSchedule | None
    budgets: list[BudgetPublic]
    curvature: dict[str, Any] | None = None
    suggestions: list[dict[str, Any]] = Field(default_factory=list)
    baselines: list[BaselineRow] = Field(default_factory=list)
    budget_curve: list[BudgetRow] = Field(default_factory=list)
    target: TargetEstimate | None = None
    method: str = "ladder"
    rungs: list[RungResult] = Field(default_factory=list)
    finalists: list[FinalistRow] = Field(default_factory=list)
    compute: ComputeSpent | None = None
    winners: list[Winner] = Field(default_factory=list)
    winner: Winner | None = Field(None, description="the best arm at the largest compared "
                                  "budget (UBA or a compare arm)")


class BudgetsPublic(BaseModel):
    """``GET /v1/studies/{id}/budgets``: metric vs budget for tuned UBA and the best baseline;
    ``target.kind`` says whether the smallest budget is measured or interpolated."""

    metric: str
    mode: str
    curve: list[BudgetRow]
    baselines: list[BaselineRow]
    target: TargetEstimate | None = None


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


class PhiRecommendation(BaseModel):
    """``POST /v1/recommendations``: the φ and phases to start a study from, for the same body
    as ``POST /v1/studies``. ``source`` is ``model`` (nearest tuned cases in curvature/budget
    feature space, ``tuning.curvature.recommend``), ``model_partial_features`` (curvature
    could not be measured: budget features only) or ``paper_default``. ``expected_gap`` is the
    leave-one-case-out gap to the tuned φ per unit (accuracy points / % relative loss:
    median, p90, worst, n); ``suggestions`` lists every labelled suggestion (model,
    history, calibrated, paper default, theory 2κ) as evidence. Never NaN: an unmeasurable
    number is null."""

    phi: float
    phases: int
    source: str
    budget_steps: int
    optimizer: str
    expected_gap: dict[str, Any]
    suggestions: list[dict[str, Any]]
    features: dict[str, float | None]
    feature_cost_s: dict[str, float]
    neighbours: list[dict[str, Any]]
    model_provenance: dict[str, Any]
    history_cases: int
    warnings: list[str]
    seconds: float


class RecommendationJobPublic(BaseModel):
    """A ``POST /v1/recommendations`` that measures curvature (202, ``Location``): poll
    ``GET /v1/recommendations/{id}`` until ``status`` is terminal; ``result`` is then the
    recommendation (``succeeded``) or ``error`` says why not (``failed``)."""

    id: str
    status: StudyStatus
    spec: StudyCreate
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    result: PhiRecommendation | None = None
    links: dict[str, Link] = Field(default_factory=dict)


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


# ----------------------------------------------------------------------------- agent mode

class TrialFile(BaseModel):
    """What an agent trains: the JSON file ``phitune agent`` writes to ``PHITUNE_TRIAL_FILE``.

    ``lr_curve[t - 1]`` is the absolute learning rate of update ``t`` (1-based, ``total_steps``
    of them): set it before each ``optimizer.step()``. ``schedule`` and ``schedule_params``
    name the same curve (UBA: φ, phases, variant, η_min, warmup_steps; Eq. 5), ``lr`` is its
    peak η_max. Seed model init and data order with ``seed`` (finalists and comparisons are
    seed-paired). The run's result is a JSON object with ``metric`` (finite), written to
    ``PHITUNE_RESULT_FILE``."""

    trial_id: str
    study_id: str
    total_steps: int
    seed: int
    metric: str
    mode: Literal["max", "min"]
    optimizer: str
    lr: float
    schedule: str
    schedule_params: dict[str, Any] = Field(default_factory=dict)
    lr_curve: list[float]
    tags: dict[str, Any] = Field(default_factory=dict, description="the study's bookkeeping "
                                 "(candidate, stage, compare arm), for your logs")


class LeasePublic(BaseModel):
    """A claimed trial (``POST /v1/studies/{id}/leases``): report its result with
    ``lease_id`` before ``expires_at``; heartbeats (``POST /v1/leases/{id}/heartbeat``)
    extend it by ``ttl_s``. Past it the trial is offered to another agent."""

    lease_id: str
    study_id: str
    trial_id: str
    expires_at: datetime
    ttl_s: float
    attempt: int = Field(description="1 for the trial's first lease, 2 when it was offered "
                         "again after a lease expired, ...")
    trial: TrialFile


class LeaseResult(_Strict):
    """Body of ``POST /v1/leases/{id}/result``: the run's metrics (the study's metric among
    them, finite), or ``{"failed": true, "error": "..."}``."""

    metrics: dict[str, float] | None = Field(
        None, description="final metrics of the run at step total_steps")
    failed: bool = False
    error: str | None = Field(None, max_length=4000)

    @model_validator(mode="after")
    def _one_outcome(self) -> LeaseResult:
        if self.failed and self.metrics is not None:
            raise ValueError("metrics: a failed run reports no metrics (give one of metrics "
                             "or failed: true)")
        if not self.failed and self.metrics is None:
            raise ValueError("metrics: required unless failed is true")
        return self


class LeaseState(BaseModel):
    """The answer to a heartbeat or a report: the lease as the server holds it now.
    ``status``: ``leased`` (running), ``succeeded`` or ``failed`` (the report accepted)."""

    lease_id: str
    study_id: str
    trial_id: str
    status: Literal["leased", "succeeded", "failed"]
    expires_at: datetime | None = None
    metrics: dict[str, float] | None = None
    error: str | None = None


# ----------------------------------------------------------------- library mode (recorded)

#: Trial statuses a running study reports (mirror of ``tuning.results.TRIAL_STATUSES``; a
#: test checks they agree). ``cancelled`` is the server's own, set when a study is cancelled.
ReportedTrialStatus = Literal["pending", "running", "terminated", "stopped_early", "error"]


class LibraryTrialRecord(_Strict):
    """Body of ``PUT /v1/studies/{id}/trials/{trial_id}`` (a ``trainer: library`` study): the
    latest state of one trial, as ``tuning.results.TrialRecord`` has it (its mirror, less the
    id in the path). The same body again changes nothing; a newer one replaces it.
    Non-finite metric values are not JSON: the sender leaves them out."""

    budget_steps: int = Field(ge=1, le=2**31 - 1, description="the trial's horizon T")
    status: ReportedTrialStatus
    params: dict[str, Any] = Field(default_factory=dict, description="the trial's schedule "
                                   "parameters (phi, phases, eta_max, ...), as the driver's")
    step: int = Field(0, ge=0, le=2**31 - 1)
    metrics: dict[str, float] = Field(default_factory=dict)
    error: str | None = Field(None, max_length=20_000)
    node_ip: str | None = Field(None, max_length=64)
    grad_norms: GradNormsRecord | None = Field(
        None, description="the gradient norm of every update of a finished trial")


class GradNormsRecord(_Strict):
    """``trainables.grad_norms.GradNorms.to_dict()`` as sent: a non-finite value as null."""

    norm: Literal["l1", "l2"]
    total_steps: int = Field(ge=1, le=2**31 - 1)
    stride: int = Field(ge=1, le=2**31 - 1)
    values: list[float | None] = Field(max_length=1_000_000)


class LibraryFinish(_Strict):
    """Body of ``POST /v1/studies/{id}:finish``: the study's result
    (``tuning.results.StudyResult.to_dict()``, stored as a driver stores it: ``/result`` and
    ``/best`` read it) or ``{"error": "..."}`` (the study failed)."""

    result: dict[str, Any] | None = None
    error: str | None = Field(None, min_length=1, max_length=20_000)

    @model_validator(mode="after")
    def _one_outcome(self) -> LibraryFinish:
        if (self.result is None) == (self.error is None):
            raise ValueError("result: give exactly one of result (the study succeeded) or "
                             "error (it failed)")
        return self


class LibraryHeartbeat(BaseModel):
    """The answer to ``POST /v1/studies/{id}:heartbeat`` (the library process is alive): when
    the server recorded it and how long it waits for the next one before it fails the study
    (``PHITUNE_LIBRARY_HEARTBEAT_TIMEOUT_S``), so the process can check that its interval is
    well inside that."""

    study_id: str
    heartbeat_at: datetime
    timeout_s: float
