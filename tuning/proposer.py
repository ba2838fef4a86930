"""What the search tries: the family-aware candidate design, Optuna's proposals and its records.

Why a design and not random points (design.md, "Search design, part 2"): with 8 candidates, a
random design in (φ, phases, η_max) lost to an 8-point η_max grid of a fixed shape (behind
tuned cosine/REX in 5 of 9 quality-bench cells) although UBA contains those shapes; η_max
matters at least as much as φ. So the lowest rung of the first ladder iteration is trained in
two stages, both complete schedules of the rung's horizon:

* **Stage A, η_max sweep** (:func:`eta_sweep_points`): half the candidates at a neutral,
  REX-like φ (:data:`NEUTRAL_PHI`, one phase), η_max at the centres of equal log-cells of the
  η_max range — a tuned REX-like schedule by itself.
* **Stage B, shapes at the best η_max** (:func:`shape_points`): the study's first points (the
  fitted φ model's recommendation, curvature suggestions, warm starts, the spec's extra
  points) at the stage-A winner's η_max, then the neutral φ half a cell from the winner, on
  the side where the sweep's values put the optimum (:func:`hedge_lr`), then the family's
  known shapes there: cosine (φ = 2), a late drop (φ = 0.2, UBA's fit to WSD decaying over
  its last ~45 %), the WSD-like hold (:data:`WSD_PHI`, the fit to WSD's default last-20 %
  decay) and the paper's default φ, as far as the stage's candidates reach. The
  sweep's cells are 2× wide where a peer's 8-point grid has √2×, so without this half step
  UBA's η_max was coarser than every peer's; the side comes from the data because the
  optimum moved up with the horizon on one bench task and down on another (the rank-fidelity
  table of ``bench/results/schedule_quality.md``), not always down as Bjorck et al. (ICLR 2025) found.
* **Stage C, model-based joint refinement** (:func:`propose`): later ladder iterations, TPE or
  GP over (φ, phases, η_max) fitted on the COMPLETE runs of the highest rung with data.

A peer arm (cosine, REX, schedule-free, ...) has one knob: its candidates are the same
log-cell centres of its lr range (:func:`lr_grid`), so every arm is tuned by the same plan.

Optuna keeps one study per horizon (``<study_id>-budget-<steps>``): a trial there is COMPLETE
only when its run trained the whole schedule of exactly that horizon (:func:`tell_rung`).
Everything here is deterministic given the spec and the values told.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna

from trainables.config import PAPER_DEFAULT_PHI
from tuning.arms import LR, PHASES, PHI, WARMUP
from tuning.ladder import Candidate, Outcome
from tuning.specs import StudySpec

__all__ = ["LR", "PHASES", "PHI", "WARMUP", "NEUTRAL_PHI", "WSD_PHI", "SHAPE_PHIS", "MIN_MODEL_POINTS",
           "optuna_space", "warmup_steps", "initial_points", "grid_points", "lr_grid",
           "eta_sweep_points", "hedge_lr", "shape_points", "stage_sizes", "derive_seed", "make_sampler",
           "optuna_study_name", "open_rung_study", "propose", "model_trials", "ask_rung",
           "tell_rung"]

#: A rung's model is fitted on the highest rung with at least this many COMPLETE trials.
MIN_MODEL_POINTS = 4
#: φ of the η_max sweep: REX-like (REX ≈ φ 0.74). Tuned REX was the best scheduled peer in
#: the tuning objective in 8 of 9 quality-bench cells, so the sweep's shape is a strong one.
NEUTRAL_PHI = 0.75
#: φ of UBA's closest fit (:func:`tuning.schedules.fit.fit_uba`, least squares over log φ) to
#: WSD with its default last-20 % linear decay: holds η within 5 % of its peak for 70 % of the
#: run, then drops (4.5 % RMSE). ``tests/tuning/test_staged_search.py`` re-fits it.
WSD_PHI = 0.034
#: Shapes stage B tries at the sweep's best η_max, in order: cosine (φ = 2), a late drop
#: (φ = 0.2, UBA's fit to WSD decaying over its last ~45 %) and the WSD-like hold
#: (:data:`WSD_PHI`).
SHAPE_PHIS: tuple[float, ...] = (2.0, 0.2, WSD_PHI)


# ----------------------------------------------------------------------------- space


def optuna_space(spec: StudySpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """φ log-uniform (it spans REX ≈ 0.8 to exponential ≈ 30), phases integer, η_max log-uniform."""
    s = spec.search
    space: dict[str, optuna.distributions.BaseDistribution] = {
        PHI: optuna.distributions.FloatDistribution(s.phi_min, s.phi_max, log=True),
        PHASES: optuna.distributions.IntDistribution(s.phases_min, s.phases_max),
    }
    rng = spec.eta_range
    if rng is not None:
        space[LR] = optuna.distributions.FloatDistribution(rng[0], rng[1], log=True)
    if s.searches_warmup:
        space[WARMUP] = optuna.distributions.FloatDistribution(s.warmup_min, s.warmup_max)
    return space


def warmup_steps(spec: StudySpec, params: Mapping[str, Any], steps: int) -> int:
    """Warmup steps of a run of ``steps`` updates: the candidate's (or the spec's fixed)
    fraction of it, leaving at least one step of the UBA curve."""
    frac = float(params.get(WARMUP, spec.search.warmup_min))
    return max(0, min(int(frac * steps), steps - 1))


def _clip_point(spec: StudySpec, cand: Mapping[str, Any], lr: float | None = None
                ) -> dict[str, Any]:
    """A full point of the space from a partial one: φ, phases clipped to their ranges, η_max
    (when searched) from the point, else ``lr``, else the optimizer's lr, clipped too."""
    s = spec.search
    phi = float(cand.get(PHI, PAPER_DEFAULT_PHI[spec.train.optimizer]))
    point: dict[str, Any] = {
        PHI: min(max(phi, s.phi_min), s.phi_max),
        PHASES: int(min(max(int(cand.get(PHASES, s.phases_min)), s.phases_min), s.phases_max)),
    }
    rng = spec.eta_range
    if rng is not None:
        value = float(cand.get(LR, lr if lr is not None else spec.train.lr))
        point[LR] = min(max(value, rng[0]), rng[1])
    if s.searches_warmup:
        w = float(cand.get(WARMUP, s.warmup_min))
        point[WARMUP] = min(max(w, s.warmup_min), s.warmup_max)
    return point


def _key(p: Mapping[str, Any]) -> tuple[float, ...]:
    return tuple(round(float(v), 6) for v in p.values())


def _dedup(points: Sequence[dict[str, Any]], skip: Sequence[Mapping[str, Any]] = ()
           ) -> list[dict[str, Any]]:
    out, seen = [], {_key(p) for p in skip}
    for p in points:
        if _key(p) not in seen:
            seen.add(_key(p))
            out.append(p)
    return out


def initial_points(spec: StudySpec, warm_start: Sequence[Mapping[str, Any]] = ()) -> list[dict]:
    """Points evaluated before any sampling: warm starts (e.g. curvature suggestions), the
    spec's extra points and the paper's default φ for the optimizer, clipped to the range
    (η_max, when searched, starts at the optimizer's lr). Duplicates are dropped."""
    cands = [*warm_start, *spec.extra_points, {PHI: PAPER_DEFAULT_PHI[spec.train.optimizer]}]
    return _dedup([_clip_point(spec, c) for c in cands])[: spec.num_trials]


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """``sampler="grid"``: the φ grid (the paper's ablation grid by default) clipped to the
    range, at ``phases_min`` phases and the optimizer's lr, in grid order."""
    return _dedup([_clip_point(spec, {PHI: phi}) for phi in spec.search.phi_grid])


# ------------------------------------------------------------------ staged design


def lr_grid(lo: float, hi: float, n: int) -> list[float]:
    """``n`` learning rates at the centres of ``n`` equal log-cells of [lo, hi], low to high.

    Centres rather than end points: the range's extremes are where the fewest good rates
    lie, and every rate in the range is then within half a cell (a factor (hi/lo)^(1/2n)) of
    a grid point. [¼, 4] with 4 points gives ¼·2^(½, 1½, 2½, 3½) = 0.35, 0.71, 1.41, 2.83.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < lo <= hi:
        raise ValueError(f"lr range must satisfy 0 < lo <= hi, got [{lo}, {hi}]")
    ratio = hi / lo
    return [lo * ratio ** ((i + 0.5) / n) for i in range(n)]


def stage_sizes(n: int, searches_eta: bool) -> tuple[int, int]:
    """(stage A, stage B) sizes of the first iteration's lowest rung of ``n`` candidates:
    half (rounded up, at least 2) for the η_max sweep, the rest for shapes. Without a searched
    η_max there is no sweep and every candidate is a shape."""
    if not searches_eta:
        return 0, n
    if n <= 2:
        return n, 0
    a = max(2, math.ceil(n / 2))
    return a, n - a


def eta_sweep_points(spec: StudySpec, n: int) -> list[dict[str, Any]]:
    """Stage A: ``n`` candidates at :data:`NEUTRAL_PHI`, one phase, η_max on :func:`lr_grid`."""
    rng = spec.eta_range
    assert rng is not None, "stage A needs a searched eta_max"
    return [_clip_point(spec, {PHI: NEUTRAL_PHI, PHASES: 1, LR: lr})
            for lr in lr_grid(rng[0], rng[1], n)]


def _cell_ratio(spec: StudySpec, n_sweep: int) -> float:
    rng = spec.eta_range
    return (rng[1] / rng[0]) ** (1.0 / max(1, n_sweep)) if rng else 1.0


def hedge_lr(spec: StudySpec, sweep: Mapping[float, float | None], best_lr: float,
             n_sweep: int) -> float:
    """The η_max half a sweep cell from the winner ``best_lr``, on the side where the sweep
    (η_max → rung value) puts the optimum.

    The side is the vertex of the parabola in log η_max through the winner and its two nearest
    sweep points: between two neighbours that is the better neighbour's side; at an edge of
    the sweep it says whether the optimum lies past the edge or just inside it (outwards when
    the fit is not convex; a tie: lower). A neighbour without a value (diverged, failed) is
    worst: the hedge moves away from it. With fewer than three sweep points (no curvature to
    fit): lower, where the best η_max moves as the horizon grows (Bjorck et al., ICLR 2025),
    and away from divergence. Clipped to the η_max range by the caller.
    """
    half = math.sqrt(_cell_ratio(spec, n_sweep))
    lrs = sorted(sweep)
    if best_lr not in lrs or len(lrs) < 2:
        return best_lr / half
    i = lrs.index(best_lr)
    lo = max(0, min(i - 1, len(lrs) - 3))
    window = lrs[lo:lo + 3]

    def badness(lr: float) -> float:  # lower is better
        value = sweep[lr]
        if value is None or not math.isfinite(value):
            return math.inf
        return value if spec.mode == "min" else -value

    failed = [lr for lr in window if lr != best_lr and badness(lr) == math.inf]
    if failed:  # away from a neighbour that diverged or failed
        up = all(lr < best_lr for lr in failed)
    elif len(window) == 2:
        up = False  # no curvature from two points: the side the optimum moves to, and safer
    else:
        x = [math.log(lr) for lr in window]
        a, b, _ = np.polyfit(x, [badness(lr) for lr in window], 2)
        if a > 0:
            up = -b / (2 * a) > math.log(best_lr) + 1e-12
        else:
            up = best_lr == lrs[-1]
    return best_lr * half if up else best_lr / half


def shape_points(spec: StudySpec, n: int, best_lr: float | None, n_sweep: int,
                 first: Sequence[Mapping[str, Any]] = (),
                 skip: Sequence[Mapping[str, Any]] = (),
                 sweep: Mapping[float, float | None] | None = None) -> list[dict[str, Any]]:
    """Stage B: ``n`` candidates at the sweep's best η_max ``best_lr`` (the optimizer's lr when
    η_max is fixed): the ``first`` points (recommendation, suggestions, warm starts, extra
    points; a point that names its own η_max keeps it), then the neutral φ half a cell from
    the winner (:func:`hedge_lr` over ``sweep``, the stage-A values by η_max), cosine, the
    late-drop shape and the paper's default φ. ``skip``: points already trained (stage A) are
    not proposed again."""
    lr = best_lr if best_lr is not None else spec.train.lr
    pts = [_clip_point(spec, p, lr) for p in first]
    if spec.eta_range is not None:
        hedge = hedge_lr(spec, sweep or {}, lr, n_sweep)
        pts.append(_clip_point(spec, {PHI: NEUTRAL_PHI, PHASES: 1}, hedge))
    pts += [_clip_point(spec, {PHI: phi, PHASES: 1}, lr) for phi in SHAPE_PHIS]
    pts.append(_clip_point(spec, {PHI: PAPER_DEFAULT_PHI[spec.train.optimizer], PHASES: 1}, lr))
    if spec.search.sampler == "grid":
        pts += [_clip_point(spec, {PHI: phi}, lr) for phi in spec.search.phi_grid]
    return _dedup(pts, skip)[:n]


# ----------------------------------------------------------------- Optuna: proposals


def derive_seed(seed: int, *keys: object) -> int:
    """A seed derived from the study seed and a label (stable across runs and machines)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def make_sampler(spec: StudySpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The spec's Optuna sampler, seeded: TPE (≤ 4 random startup trials), GP (Optuna's
    GPSampler, needs scipy), or random. ``grid`` enumerates :func:`grid_points` itself and
    uses random sampling only once the grid is exhausted."""
    seed = spec.seed if seed is None else seed
    startup = min(4, spec.num_trials)
    name = spec.search.sampler
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.RandomSampler(seed=seed)


def optuna_study_name(spec: StudySpec, budget_steps: int) -> str:
    """Name of a horizon's Optuna study (what optuna-dashboard lists): every trial in it was
    trained (or stopped, then PRUNED) at ``budget_steps``."""
    return f"{spec.study_id}-budget-{budget_steps}"


def open_rung_study(spec: StudySpec, steps: int, arm: str = "uba") -> optuna.Study:
    """The Optuna study of one horizon, in the RDB storage when the spec names one. A tuned
    compare arm gets its own studies (``<study>-<arm>-budget-<steps>``)."""
    direction = "maximize" if spec.mode == "max" else "minimize"
    if spec.optuna_storage_url:
        storage = optuna.storages.RDBStorage(spec.optuna_storage_url)
        name = optuna_study_name(spec, steps)
        if arm != "uba":
            name = f"{spec.study_id}-{arm}-budget-{steps}"
        return optuna.create_study(storage=storage, study_name=name,
                                   direction=direction, load_if_exists=True)
    return optuna.create_study(direction=direction)


def propose(spec: StudySpec, iteration: int, n: int,
            model: Sequence[optuna.trial.FrozenTrial] = (),
            first: Sequence[dict[str, Any]] = (), skip: Sequence[dict[str, Any]] = ()
            ) -> list[dict[str, Any]]:
    """Stage C: ``n`` new candidates: ``first`` points, then the grid or the sampler's
    proposals given the ``model`` trials (COMPLETE, one horizon; copied into a transient study
    seeded from the study seed and ``iteration``). All are asked before any is told; a
    model-based sampler is told a constant lie (the worst value seen) after each ask so a
    batch spreads out."""
    out = [dict(p) for p in first][:n]
    if spec.search.sampler == "grid":
        seen = {_key(p) for p in [*skip, *out]}
        for p in grid_points(spec):
            if len(out) < n and _key(p) not in seen:
                out.append(p)
    if len(out) >= n:
        return out
    space = optuna_space(spec)
    direction = "maximize" if spec.mode == "max" else "minimize"
    study = optuna.create_study(direction=direction,
                                sampler=make_sampler(spec, derive_seed(spec.seed, "propose",
                                                                       iteration)))
    study.add_trials([optuna.trial.create_trial(params=t.params, distributions=space,
                                                value=t.value)
                      for t in model if set(t.params) == set(space)])
    values = [t.value for t in study.trials if t.value is not None]
    lie = (min(values) if spec.mode == "max" else max(values)) if values else None
    for p in out:
        study.enqueue_trial(p)
        trial = study.ask(space)
        if lie is not None:
            study.tell(trial, lie)
    while len(out) < n:
        trial = study.ask(space)
        out.append(dict(trial.params))
        if lie is not None:
            study.tell(trial, lie)
    return out


def model_trials(rung_studies: Mapping[int, optuna.Study],
                 before_iteration: int) -> list[optuna.trial.FrozenTrial]:
    """COMPLETE trials of iterations before ``before_iteration`` at the highest horizon that has
    >= :data:`MIN_MODEL_POINTS` of them, else at the lowest horizon (BOHB's rule: model the
    most faithful fidelity that has data). Only earlier iterations count, so a restarted
    driver proposes exactly what the first one did."""

    def done(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        return [t for t in sorted(study.trials, key=lambda t: t.number)
                if t.state == optuna.trial.TrialState.COMPLETE
                and int(t.user_attrs.get("iteration", 0)) < before_iteration]

    for steps in sorted(rung_studies, reverse=True):
        trials = done(rung_studies[steps])
        if len(trials) >= MIN_MODEL_POINTS:
            return trials
    return done(rung_studies[min(rung_studies)]) if rung_studies else []


# ------------------------------------------------------------------- Optuna: records


def _rung_space(study_space: Mapping[str, optuna.distributions.BaseDistribution],
                params: Mapping[str, Any]) -> dict[str, optuna.distributions.BaseDistribution]:
    return {k: v for k, v in study_space.items() if k in params}


def ask_rung(study: optuna.Study, space: Mapping[str, optuna.distributions.BaseDistribution],
             candidates: Sequence[Candidate], tag: str) -> list[optuna.trial.Trial | None]:
    """Ask the rung's Optuna study for every candidate (fixed params, before any tell), or find
    the trials a previous driver asked for them (a restarted study does not duplicate)."""
    existing = {t.user_attrs.get("candidate"): t for t in study.trials
                if t.user_attrs.get("run") == tag}
    trials: list[optuna.trial.Trial | None] = []
    for c in candidates:
        old = existing.get(c.index)
        if old is not None and old.state == optuna.trial.TrialState.RUNNING:
            trials.append(optuna.trial.Trial(study, old._trial_id))
            continue
        if old is not None:
            trials.append(None)  # already told by the previous driver
            continue
        sub = _rung_space(space, c.params)
        study.enqueue_trial({k: c.params[k] for k in sub},
                            user_attrs={"candidate": c.index, "run": tag,
                                        "iteration": c.iteration, "stage": c.stage})
        trials.append(study.ask(sub))
    return trials


def tell_rung(study: optuna.Study, trials: Sequence[optuna.trial.Trial | None],
              outcomes: Sequence[Outcome]) -> None:
    """Tell each outcome truthfully: COMPLETE only for a run that reached its horizon, PRUNED
    (with its last value as an intermediate report) for one stopped early, FAIL otherwise."""
    for trial, o in zip(trials, outcomes, strict=True):
        if trial is None:
            continue
        trial.set_user_attr("trained_steps", o.trained_steps)
        if o.completed:
            study.tell(trial, o.value)
        elif o.status == "stopped_early":
            if o.last_value is not None:
                trial.report(o.last_value, o.trained_steps)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            if o.error:
                trial.set_user_attr("error", o.error)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
