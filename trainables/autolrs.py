"""AutoLRS (Jin et al., ICLR 2021): the learning rate chosen on the fly, stage by stage, by
Bayesian optimisation of a forecast loss.

The algorithm (paper §3–4; the official code is ``YuchenJin/autolrs``, ``autolrs_server.py``):
training is split into stages of τ steps, τ doubling from stage to stage. At the start of a
stage the run is checkpointed (model, optimizer, data order, RNG). ``k`` candidate lrs are
proposed one after the other by a Gaussian-process BO over log10(lr) (a fresh GP per stage,
as the official server builds a new optimiser per stage); each candidate trains τ′ steps
from the checkpoint, and an exponential model

    L(t) = a · e^{b t} + c        (b < 0; t = optimizer steps since the checkpoint)

fitted to its smoothed training losses forecasts the loss at t = τ. The BO minimises that
forecast. The stage then restarts from the checkpoint and trains τ steps at the lr with the
best forecast. τ′ doubles with τ.

Scaled to a budget of T steps (the paper fixes τ₀ = 1000, τ′₀ = 100, k = 10 for runs of
10⁵–10⁶ steps; phitune budgets are 10²–10⁴): τ₀ and τ′₀ are fractions of T,
:class:`AutoLRSSettings`. Defaults: τ₀ = T/16, so four doubling stages cover 15/16 of T and
a fifth, truncated stage the rest (the chosen-lr stages sum to exactly T); τ′₀ = T/64 = τ₀/4
with k = 4, so each stage's search trains k·τ′ = τ steps, the paper's ratio (10 × τ/10):
the search costs about as much as the training, ≈ 2T in all. k = 4 rather than 10 because a
one-dimensional GP over two decades of lr is well determined by 4 points, and at fixed search
cost fewer candidates leave each one a longer window (τ′ = τ/4 instead of τ/10), which the
exponential fit needs on short budgets. The BO's range is a fixed range around the trial's
``lr`` (``lr_min_factor``, ``lr_max_factor``), as the official server takes one: by default
[¼, 4]× (:data:`~trainables.config.SCHEDULED_LR_FACTORS`), the range every ladder-tuned arm of
a comparison sweeps. It was [lr/10, 10·lr] first; on the quality bench's short budgets
(windows of 4–5 steps) the forecast then often chose 10·lr, and cnn-fmnist ended at 28–46 %
test accuracy (``bench/results/schedule_quality.md`` at 06d6345); with [¼, 4]× three seeds at
80 steps ended at 64–74 % (a minimum window of 8 steps instead of 4 did not help: 56–69 %).

Where this differs from the official code, and why:

* The first candidate of a stage is the incumbent (the last stage's lr; the base lr in stage
  0) instead of a random point, so with only k = 4 a stage can always keep the lr that served
  the last one; the other k − 1 come from Optuna's ``GPSampler`` (log-EI; the official uses
  scikit-optimize's GP with LCB).
* Candidates restart from the identical data order and RNG state (common random numbers),
  so their forecasts differ by the lr, not by the batches.
* Smoothing: the official iterative spline (outliers among the largest 3 % of residuals in
  the first half dropped, ten rounds), with the spline's smoothing set from the noise of the
  window (``s = m·σ̂²``, σ̂² from second differences, which a smooth decay hardly inflates)
  instead of ``s = m``, which assumes unit noise and reduces a loss in nats to a quadratic.
* τ keeps doubling until the budget ends (the official stops doubling at τ′ = 800 and then
  forecasts validation loss; no phitune budget gets there). A truncated last stage keeps
  τ′/τ; when that leaves fewer than :data:`MIN_TAU_PRIME` steps it runs without a search at
  the incumbent lr.
* The fit keeps c ≥ 0 (a loss's asymptote is not negative; unconstrained, a straight noisy
  window of a too-high lr forecast a negative loss and won: measured on digits).
* A candidate whose loss becomes NaN/inf stops there and gets forecast ``inf`` (the BO is
  told 10 × the loss it started from, on the loss scale, where the official tells 10⁶).
* A stage whose chosen lr diverges (the window was too short to show it) restarts from the
  stage's checkpoint with the next-best forecast's lr, and so on; only when every finite
  candidate diverged does the run raise :class:`~trainables.errors.DivergedError`. The
  stage's record lists what diverged (``diverged``: lr, step, steps trained, counted as
  compute). Measured: with [¼, 4]× on mlp-fmnist at 100 and 200 steps, 2 of 5 runs
  diverged in a stage without this.

Compute: everything trained counts, candidate steps included; each report carries
``trained_steps_total`` (:data:`trainables.config.TRAINED_STEPS`) next to ``step``, the
position in the budget. The final report's ``autolrs_stages`` is the schedule it produced.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from trainables.config import SCHEDULE_FREE, SCHEDULED_LR_FACTORS, TRAINED_STEPS, TrainConfig
from trainables.datasets import DataBundle
from trainables.errors import ConfigError, DivergedError
from trainables.loop import (
    _autocast,
    _loss_fn,
    _prepare,
    _prepare_input,
    _Prepared,
    _rng_state,
    _set_rng_state,
    _snapshot,
    evaluate,
)

logger = logging.getLogger(__name__)

__all__ = ["AUTOLRS", "MIN_TAU_PRIME", "AutoLRSSettings", "AutoLRSSettingsError", "Stage",
           "fit_exponential", "forecast_loss", "plan_stages", "run_autolrs", "smooth_losses"]

#: The schedule name of an AutoLRS trial (``TrainConfig.schedule``) and its compare arm.
AUTOLRS = "autolrs"
#: Fewest candidate steps a forecast is fitted on (three parameters, plus one to spare).
MIN_TAU_PRIME = 4
#: A checkpoint written by :func:`run_autolrs` (not resumable by ``run_training``).
CHECKPOINT_KIND = "autolrs"
_CHECKPOINT_VERSION = 1
#: The BO's parameter: the candidate lr's base-10 logarithm.
_PARAM = "log10_lr"
#: Host reads of a candidate's losses (a NaN candidate stops early) at most this many apart.
_CHECK_EVERY = 16


class AutoLRSSettingsError(ConfigError):
    """AutoLRS settings that are out of range or whose stages do not fit the budget; ``field``
    names the setting (the service's 422 says ``autolrs.<field>``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)

    def __reduce__(self) -> tuple:
        # Ray pickles a trial's exception to record it; rebuild from the constructor's args
        return (type(self), (self.field, self.args[0]))


@dataclass(frozen=True)
class AutoLRSSettings:
    """τ₀ = ``tau_fraction``·T, τ′₀ = ``tau_prime_fraction``·T (rounded), ``candidates`` = k
    lrs tried per stage in [``lr_min_factor``, ``lr_max_factor``] × the trial's lr (log
    scale). Defaults and their reasons: module docstring. Out-of-range values raise
    :class:`AutoLRSSettingsError` naming the field; whether stages fit a budget is
    :func:`plan_stages`'s check."""

    tau_fraction: float = 1 / 16
    tau_prime_fraction: float = 1 / 64
    candidates: int = 4
    lr_min_factor: float = SCHEDULED_LR_FACTORS[0]
    lr_max_factor: float = SCHEDULED_LR_FACTORS[1]

    def __post_init__(self) -> None:
        def real(v: Any) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("tau_fraction", "tau_prime_fraction"):
            v = getattr(self, name)
            if not (real(v) and 0 < v <= 1):
                raise AutoLRSSettingsError(name, f"{name}={v!r} is invalid; allowed: a fraction "
                                                 "of the budget in (0, 1]")
        if self.tau_prime_fraction > self.tau_fraction:
            raise AutoLRSSettingsError(
                "tau_prime_fraction", f"tau_prime_fraction={self.tau_prime_fraction!r} is "
                f"invalid; allowed: <= tau_fraction ({self.tau_fraction!r}): a candidate's "
                "window is part of the stage it forecasts")
        c = self.candidates
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise AutoLRSSettingsError("candidates", f"candidates={c!r} is invalid; allowed: "
                                                     "an integer >= 1")
        lo, hi = self.lr_min_factor, self.lr_max_factor
        if not (real(lo) and lo > 0):
            raise AutoLRSSettingsError("lr_min_factor", f"lr_min_factor={lo!r} is invalid; "
                                                        "allowed: a number > 0")
        if not (real(hi) and hi > lo):
            raise AutoLRSSettingsError("lr_max_factor", f"lr_max_factor={hi!r} is invalid; "
                                                        f"allowed: a number > lr_min_factor "
                                                        f"({lo!r})")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AutoLRSSettings:
        """From a trial config's ``schedule_params`` (unknown keys refused, named)."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(params) - known)
        if extra:
            raise AutoLRSSettingsError(extra[0], f"unknown AutoLRS setting(s) {extra}; valid: "
                                                 f"{sorted(known)}")
        return cls(**dict(params))

    def to_params(self) -> dict[str, Any]:
        """The ``schedule_params`` of an AutoLRS trial config."""
        return asdict(self)


@dataclass(frozen=True)
class Stage:
    """Stage ``index``: the chosen lr trains steps ``start+1 … start+tau`` of the budget;
    each candidate trains ``tau_prime`` steps from the checkpoint at ``start`` (0: no search,
    the incumbent lr is kept)."""

    index: int
    start: int
    tau: int
    tau_prime: int


def plan_stages(total_steps: int, settings: AutoLRSSettings) -> tuple[Stage, ...]:
    """The stages of an AutoLRS run of ``total_steps``: τᵢ = τ₀·2ⁱ and τ′ᵢ = τ′₀·2ⁱ, the last
    stage truncated so the τᵢ sum to exactly ``total_steps`` (its τ′ scaled with it).

    Raises :class:`AutoLRSSettingsError` naming the field when τ′₀ is under
    :data:`MIN_TAU_PRIME` steps or the first stage and its search (τ₀ + k·τ′₀) exceed the
    budget."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ConfigError(f"total_steps={total_steps!r} is invalid; allowed: integer >= 1")
    s = settings
    tau0 = max(1, round(s.tau_fraction * total_steps))
    prime0 = round(s.tau_prime_fraction * total_steps)
    if prime0 < MIN_TAU_PRIME:
        raise AutoLRSSettingsError(
            "tau_prime_fraction", f"tau_prime_fraction={s.tau_prime_fraction!r} gives candidate "
            f"windows of {prime0} steps at total_steps={total_steps}; the forecast needs >= "
            f"{MIN_TAU_PRIME} (raise it to >= {MIN_TAU_PRIME / total_steps:.4g})")
    first = tau0 + s.candidates * prime0
    if first > total_steps:
        raise AutoLRSSettingsError(
            "tau_fraction", f"tau_fraction={s.tau_fraction!r}: the first stage ({tau0} steps) "
            f"plus its search (candidates={s.candidates} x {prime0} steps) is {first} steps, "
            f"more than total_steps={total_steps}; lower tau_fraction, tau_prime_fraction or "
            "candidates")
    stages: list[Stage] = []
    start, i = 0, 0
    while start < total_steps:
        full = tau0 * 2**i
        tau = min(full, total_steps - start)
        prime = min(prime0 * 2**i, tau) if tau == full else round(tau * prime0 / tau0)
        stages.append(Stage(i, start, tau, prime if prime >= MIN_TAU_PRIME else 0))
        start += tau
        i += 1
    return tuple(stages)


# ------------------------------------------------------------------------- forecast


def _exp_residual(beta: float, t: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Least-squares (a', c) of y ≈ a'·e^{b(t−t₀)} + c at b = −e^β with c ≥ 0, and the
    residual. c is the loss the run tends to: a training loss (cross-entropy) is never
    negative, and an unconstrained fit of a nearly straight window puts c far below zero,
    forecasting an impossible loss that wins the search."""
    basis = np.exp(-math.exp(beta) * (t - t[0]))
    design = np.stack([basis, np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    if coef[1] < 0:  # the constrained optimum then lies on c = 0
        coef = np.array([float(basis @ y) / float(basis @ basis), 0.0])
    return float(np.sum((design @ coef - y) ** 2)), coef


def fit_exponential(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c) of L(t) = a·e^{bt} + c, b < 0, c ≥ 0, by least squares.

    Variable projection as in the official code: for a given b the model is linear in (a, c);
    b = −e^β is found by a grid over β (rates from 10⁻³ to 50 per window) refined by a bounded
    scalar search (the official starts Nelder–Mead at β = 0, b = −1 per step, which on a
    window of hundreds of steps finds the nearest local minimum)."""
    from scipy.optimize import minimize_scalar

    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if t.shape != y.shape or t.size < 3:
        raise ValueError(f"fit_exponential needs >= 3 points of equal shape, got {t.shape}, "
                         f"{y.shape}")
    span = float(t[-1] - t[0]) or 1.0
    grid = np.linspace(math.log(1e-3 / span), math.log(50.0 / span), 80)
    res = [_exp_residual(g, t, y)[0] for g in grid]
    j = int(np.argmin(res))
    lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)]
    beta = float(grid[j])
    if hi > lo:
        opt = minimize_scalar(lambda g: _exp_residual(g, t, y)[0], bounds=(lo, hi),
                              method="bounded", options={"xatol": 1e-8})
        if opt.fun <= res[j]:
            beta = float(opt.x)
    _, (a_shifted, c) = _exp_residual(beta, t, y)
    b = -math.exp(beta)
    return float(a_shifted * math.exp(-b * t[0])), b, float(c)


def smooth_losses(y: np.ndarray, *, rounds: int = 10, outlier_ratio: float = 0.03,
                  bound: float = 0.5) -> np.ndarray:
    """The official iterative spline: fit a quadratic smoothing spline, drop the largest
    ``outlier_ratio`` of residuals that lie in the first ``bound`` of the window, ``rounds``
    times; return the last spline at every step. Smoothing ``s = m·σ̂²`` with σ̂² the noise
    estimated from second differences (scale-free, unlike the official ``s = m``; first
    differences carry the decay's slope and over-smooth: measured, a 4× extrapolation of a
    noisy exponential was off by 0.05–0.11 with them, 0.01–0.06 with second differences)."""
    y = np.asarray(y, dtype=float)
    xs_all = np.arange(1, y.size + 1, dtype=float)
    if y.size <= 3:
        return y.copy()
    noise = float(np.var(np.diff(y, 2)) / 6)  # white noise: Var(Δ²y) = 6σ²
    if noise <= 1e-12 * float(np.mean(y**2)):  # no noise to smooth
        return y.copy()
    xs, ys = xs_all, y
    limit = xs_all[int((y.size - 1) * bound)]
    spline = None
    for _ in range(rounds):
        spline = _spline(xs, ys, noise)
        dys = np.abs(ys - spline(xs))
        n_out = int(round(ys.size * outlier_ratio))
        if n_out == 0 or ys.size - n_out <= 3:
            break
        worst = np.argsort(dys)[-n_out:]
        drop = [i for i in worst if xs[i] < limit]
        if not drop:
            break
        keep = np.setdiff1d(np.arange(ys.size), drop)
        xs, ys = xs[keep], ys[keep]
        spline = _spline(xs, ys, noise)
    assert spline is not None
    return np.asarray(spline(xs_all), dtype=float)


def _spline(xs: np.ndarray, ys: np.ndarray, noise: float) -> Any:
    from scipy.interpolate import UnivariateSpline

    with warnings.catch_warnings():  # FITPACK's "s too small": it returns the closest spline
        warnings.simplefilter("ignore", UserWarning)
        return UnivariateSpline(xs, ys, k=2, s=ys.size * noise)


def forecast_loss(losses: np.ndarray, tau: int) -> tuple[float, tuple[float, float, float]]:
    """The loss forecast at step ``tau`` of a stage from a candidate's per-step training
    ``losses`` (step 1 … τ′): the exponential model fitted to the smoothed losses, evaluated
    at t = τ. ``inf`` when a loss is not finite."""
    losses = np.asarray(losses, dtype=float)
    if losses.size == 0 or not np.all(np.isfinite(losses)):
        return math.inf, (math.nan, math.nan, math.nan)
    t = np.arange(1, losses.size + 1, dtype=float)
    a, b, c = fit_exponential(t, smooth_losses(losses))
    value = a * math.exp(b * tau) + c
    return (value if math.isfinite(value) else math.inf), (a, b, c)


# ---------------------------------------------------------------------------- run


def _capture(p: _Prepared) -> dict[str, Any]:
    """The stage's checkpoint in memory, on the trial's device."""
    return {"model": copy.deepcopy(p.model.state_dict()),
            "optimizer": copy.deepcopy(p.optimizer.state_dict()),
            "sampler": p.sampler.state_dict(), "rng": _rng_state(p.device)}


def _restore(p: _Prepared, ckpt: Mapping[str, Any]) -> None:
    p.model.load_state_dict(ckpt["model"])
    # a copy: load_state_dict keeps tensors already on the right device, and the optimizer's
    # in-place updates would then write into the checkpoint the next candidate starts from
    p.optimizer.load_state_dict(copy.deepcopy(ckpt["optimizer"]))
    p.sampler.load_state_dict(ckpt["sampler"])
    _set_rng_state(ckpt["rng"], p.device)


def _train(p: _Prepared, lr: float, steps: int) -> np.ndarray:
    """``steps`` optimizer steps at a constant ``lr``; the per-step training losses. A run
    whose loss becomes NaN/inf stops at the next host read: fewer losses, the last not
    finite."""
    for group in p.optimizer.param_groups:
        group["lr"] = lr
    loss_fn = _loss_fn(p.bundle.task)
    x_all, y_all, augment = p.bundle.train_x, p.bundle.train_y, p.bundle.augment
    buf: list[torch.Tensor] = []
    out: list[float] = []
    for step in range(1, steps + 1):
        idx = p.sampler.next()
        x, y = x_all[idx], y_all[idx]
        if augment is not None:
            x = augment(x, p.generator)
        x = _prepare_input(x, p.bundle, p.cfg.channels_last)
        with _autocast(p.cfg, p.device):
            loss = loss_fn(p.forward(x), y)
        p.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        p.optimizer.step()
        buf.append(loss.detach())
        if len(buf) == _CHECK_EVERY or step == steps:
            block = torch.stack(buf).float().tolist()  # one host sync per block
            buf.clear()
            bad = next((i for i, v in enumerate(block) if not math.isfinite(v)), None)
            if bad is not None:
                out.extend(block[:bad + 1])
                break
            out.extend(block)
    return np.asarray(out, dtype=float)


def _bo_study(seed: int) -> Any:
    import optuna

    sampler = optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=1,
        independent_sampler=optuna.samplers.RandomSampler(seed=seed))
    return optuna.create_study(direction="minimize", sampler=sampler)


def _search(p: _Prepared, stage: Stage, settings: AutoLRSSettings, incumbent: float,
            ckpt: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The stage's k candidates (BO over log10 lr, each τ′ steps from ``ckpt``) with their
    forecasts at τ, and the steps they trained."""
    import optuna

    base = p.cfg.lr
    dist = optuna.distributions.FloatDistribution(math.log10(base * settings.lr_min_factor),
                                                  math.log10(base * settings.lr_max_factor))
    first = min(max(math.log10(incumbent), dist.low), dist.high)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = _bo_study(p.cfg.seed * 1009 + stage.index)
        study.enqueue_trial({_PARAM: first})
        candidates: list[dict[str, Any]] = []
        trained = 0
        for _ in range(settings.candidates):
            trial = study.ask({_PARAM: dist})
            lr = 10.0 ** float(trial.params[_PARAM])
            _restore(p, ckpt)
            losses = _train(p, lr, stage.tau_prime)
            trained += losses.size
            value, (a, b, c) = forecast_loss(losses, stage.tau)
            # the GP learns from finite values on the loss scale (the official tells 1e6): a
            # diverged candidate counts as 10 x the loss it started from
            start = float(losses[0]) if losses.size and math.isfinite(losses[0]) else 1e5
            study.tell(trial, value if math.isfinite(value) else 10.0 * abs(start) + 1.0)
            # non-finite numbers are recorded as None: results are stored as strict JSON
            candidates.append({"lr": lr, "forecast": _finite(value), "steps": int(losses.size),
                               "last_loss": _finite(losses[-1]) if losses.size else None,
                               "a": _finite(a), "b": _finite(b), "c": _finite(c)})
    finally:
        optuna.logging.set_verbosity(verbosity)
    return candidates, trained


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _rank(candidate: Mapping[str, Any]) -> tuple[float, float]:
    """Best forecast first (a diverged candidate, forecast None, last); ties: the lower lr."""
    forecast = candidate["forecast"]
    return (math.inf if forecast is None else forecast, candidate["lr"])


def _stage_divergence(p: _Prepared, cfg: TrainConfig, stage: Stage, lr: float,
                      losses: np.ndarray, start_loss: float | None
                      ) -> tuple[DivergedError | None, dict[str, float]]:
    """(why the stage's run at ``lr`` diverged, or None; its validation metrics, empty when
    not evaluated). Diverged: a non-finite training loss, a mean training loss above
    ``divergence_factor`` × the run's first loss, or a non-finite validation loss after it.
    Only a stage whose training losses are fine is evaluated."""
    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if bad is not None:
        return DivergedError(stage.start + bad + 1, float(losses[bad]), lr), {}
    end = stage.start + stage.tau
    first = float(losses[0]) if start_loss is None else start_loss
    mean = float(np.mean(losses))
    if cfg.divergence_factor and mean > cfg.divergence_factor * first:
        return DivergedError(end, mean, lr, reason=f"above {cfg.divergence_factor:g} x its "
                                                    f"start {first:.4g}"), {}
    val = evaluate(p.forward, p.model, p.bundle, cfg, p.device)
    if not math.isfinite(val["val_loss"]):
        return DivergedError(end, val["val_loss"], lr), val
    return None, val


def run_autolrs(
    config: TrainConfig | Mapping[str, Any],
    report: Any,
    *,
    resume_state: dict[str, Any] | None = None,
    bundle: DataBundle | None = None,
) -> dict[str, Any]:
    """Train ``config["total_steps"]`` steps with AutoLRS and report at the end of each stage.

    ``config`` is a trial config (:class:`TrainConfig` or its dict) with ``schedule ==
    "autolrs"`` and the :class:`AutoLRSSettings` in ``schedule_params``; ``lr`` is the centre
    of the BO's range and the first stage's incumbent. The model, data and optimizer are
    built as every trial's (:func:`trainables.loop._prepare`); the lr is set per stage (no
    scheduler).

    Each ``report(metrics, state)`` (at a stage end) carries ``step`` (position in the
    budget), ``epoch``, ``train_loss`` (the stage's mean), ``val_loss``, ``val_accuracy``
    (``val_perplexity`` for LMs), ``lr`` (the stage's), ``samples_per_s``,
    ``trained_steps_total`` (every step trained so far, candidates included),
    ``autolrs_stages`` (per stage: ``start``, ``tau``, ``tau_prime``, ``lr``, ``forecast``
    and its ``candidates``, each with ``lr``, ``forecast`` (None: it diverged), ``steps``,
    ``last_loss`` and the fit's ``a``, ``b``, ``c``) and ``done``. ``state`` (None when ``checkpoint_every < 0``)
    resumes the run at that stage boundary as ``resume_state``. ``bundle``: already loaded
    data (as :func:`trainables.loop.run_training` takes it; the bench's split halves).

    Raises :class:`AutoLRSSettingsError` for settings that do not fit the budget, ConfigError
    for a schedule-free optimizer (it has no lr to schedule), :class:`DivergedError` when a
    stage diverges at every candidate lr with a finite forecast (the chosen one first, then
    the next-best; a candidate that diverges in its window only loses the search).
    """
    cfg = TrainConfig.from_mapping(config)
    if cfg.schedule != AUTOLRS:
        raise ConfigError(f"schedule={cfg.schedule!r} is invalid here; run_autolrs trains "
                          f"schedule {AUTOLRS!r}")
    if cfg.optimizer in SCHEDULE_FREE:
        raise ConfigError(f"optimizer={cfg.optimizer!r} is invalid with schedule 'autolrs'; "
                          "allowed: 'sgd' or 'adamw' (a schedule-free optimizer has no lr "
                          "schedule to choose)")
    settings = AutoLRSSettings.from_params(cfg.schedule_params)
    stages = plan_stages(cfg.total_steps, settings)
    p = _prepare(replace(cfg, schedule="constant", schedule_params={}), bundle)
    records: list[dict[str, Any]] = []
    trained_total = 0
    incumbent = cfg.lr
    start_loss: float | None = None
    if resume_state is not None:
        if resume_state.get("kind") != CHECKPOINT_KIND or \
                resume_state.get("version") != _CHECKPOINT_VERSION:
            raise ConfigError("checkpoint is not an AutoLRS checkpoint of this version")
        if int(resume_state["total_steps"]) != cfg.total_steps:
            raise ConfigError(f"checkpoint was made for total_steps="
                              f"{resume_state['total_steps']}, config says {cfg.total_steps}")
        _restore(p, resume_state)
        records = [dict(r) for r in resume_state["stages"]]
        trained_total = int(resume_state["trained_steps_total"])
        incumbent = float(resume_state["lr"])
        start_loss = resume_state.get("start_loss")
        logger.info("resuming AutoLRS %s/%s after stage %d", cfg.model, cfg.dataset,
                    len(records) - 1)
    metrics: dict[str, Any] = {}
    for stage in stages[len(records):]:
        t0 = time.perf_counter()
        ckpt = _capture(p)
        candidates: list[dict[str, Any]] = []
        forecast: float | None = None
        if stage.tau_prime and settings.candidates:
            candidates, searched = _search(p, stage, settings, incumbent, ckpt)
            trained_total += searched
            best = min(candidates, key=_rank)
            incumbent, forecast = best["lr"], best["forecast"]
            _restore(p, ckpt)
        # the forecast's best lr, then (if its stage diverges) the next-best candidates in
        # forecast order, each from the stage's checkpoint
        fallbacks = [c for c in sorted(candidates, key=_rank)
                     if c["forecast"] is not None and c["lr"] != incumbent]
        diverged: list[dict[str, Any]] = []
        while True:
            losses = _train(p, incumbent, stage.tau)
            trained_total += losses.size
            problem, val = _stage_divergence(p, cfg, stage, incumbent, losses, start_loss)
            if problem is None:
                break
            diverged.append({"lr": incumbent, "at_step": problem.step,
                             "steps": int(losses.size)})
            if not fallbacks:
                raise problem
            logger.warning("AutoLRS stage %d: lr %.4g diverged at step %d; the next-best "
                           "forecast's lr %.4g trains the stage from its checkpoint",
                           stage.index, incumbent, problem.step, fallbacks[0]["lr"])
            nxt = fallbacks.pop(0)
            incumbent, forecast = nxt["lr"], nxt["forecast"]
            _restore(p, ckpt)
        end = stage.start + stage.tau
        if start_loss is None:
            start_loss = float(losses[0])
        train_loss = float(np.mean(losses))
        records.append({"stage": stage.index, "start": stage.start, "tau": stage.tau,
                        "tau_prime": stage.tau_prime, "lr": incumbent, "forecast": forecast,
                        "candidates": candidates, "diverged": diverged})
        elapsed = time.perf_counter() - t0
        metrics = {
            "step": end, "epoch": end * cfg.batch_size / p.bundle.num_train,
            "train_loss": train_loss, **val, "lr": incumbent,
            "samples_per_s": (stage.tau + sum(c["steps"] for c in [*candidates, *diverged]))
            * cfg.batch_size / elapsed if elapsed > 0 else math.nan,
            TRAINED_STEPS: trained_total, "autolrs_stages": copy.deepcopy(records),
            "done": end == cfg.total_steps,
        }
        if p.bundle.task == "lm":
            metrics["tokens_per_s"] = metrics["samples_per_s"] * p.bundle.input_shape[0]
        logger.info("AutoLRS stage %d: lr %.4g (forecast %s) for steps %d-%d, %d trained",
                    stage.index, incumbent, forecast, stage.start + 1, end, trained_total)
        state = None
        if cfg.checkpoint_every >= 0:
            state = _snapshot({**_capture(p), "kind": CHECKPOINT_KIND,
                               "version": _CHECKPOINT_VERSION, "step": end,
                               "total_steps": cfg.total_steps, "stages": records,
                               "trained_steps_total": trained_total, "lr": incumbent,
                               "start_loss": start_loss})
        report(metrics, state)
    return metrics
