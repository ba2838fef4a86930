"""The ladder search: stages → rungs → finalists, for searched UBA and for every tuned arm.

Why a ladder of horizons and not ASHA: a UBA schedule is a function of its budget, so a run's
intermediate metric ranks schedules backwards (design.md, "Search design"); every candidate
here is a complete schedule at its rung's horizon. What is tried comes from
:mod:`tuning.proposer` (η_max sweep, shapes at the best η_max, model-based refinement); how a
batch is trained comes from an :class:`Executor` (:class:`tuning.executor.RayExecutor` in a
study, an in-process one in the quality bench), so the bench measures this very code.

* **Determinism**: all candidates of a batch are asked before any is told, stage B depends
  only on stage A's values, samplers are seeded from the study seed, promotion ties break on
  the candidate index, search runs share the study seed (common random numbers) and the
  finalists' extra seeds are derived from it.
* **Truthful Optuna records**: one Optuna study per horizon (and per tuned arm); a trial is
  COMPLETE only with the value of a run that trained that whole horizon.
* **Robust pick** (:func:`pick_finalists`): the best full-budget candidates are re-trained with
  extra seeds; a finalist that diverged or failed on any seed, or whose seeds spread more than
  :data:`SPREAD_FACTOR` × the other finalists' median spread, cannot win.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import optuna

from tuning.arms import LR, PHASES, PHI, UBA, lr_factors
from tuning.ladder import Candidate, Outcome, promote, promote_hedged
from tuning.proposer import (
    derive_seed,
    eta_sweep_points,
    lr_grid,
    model_trials,
    open_rung_study,
    optuna_space,
    propose,
    shape_points,
    stage_sizes,
)
from tuning.results import FinalistRow, TrialKind
from tuning.specs import StudySpec

logger = logging.getLogger(__name__)

#: A finalist whose seed standard deviation exceeds this multiple of the other finalists'
#: median standard deviation cannot win (quality bench, charlm 200 steps: a pick with a
#: tuning std of 0.163 over 3 seeds, 5× the others', ended 0.3–0.5 nats behind on 2 of 5
#: evaluation seeds).
SPREAD_FACTOR = 3.0


class Executor(Protocol):
    """Trains a batch of (candidate, seed) runs as complete schedules of ``steps`` updates and
    returns one :class:`~tuning.ladder.Outcome` per run, in the order of ``runs``. ``name``
    identifies the batch (a restarted driver restores the batch of the same name)."""

    def run(self, name: str, steps: int, runs: Sequence[tuple[Candidate, int]],
            kind: TrialKind = "search") -> list[Outcome]: ...


def arm_lr_range(spec: StudySpec, arm: str) -> tuple[float, float]:
    """The lr range a tuned compare arm sweeps: its factors (:func:`tuning.arms.lr_factors`)
    times the study's lr."""
    lo, hi = lr_factors(arm, spec.train.optimizer)
    return spec.train.lr * lo, spec.train.lr * hi


def arm_space(spec: StudySpec, arm: str) -> dict[str, optuna.distributions.BaseDistribution]:
    """The Optuna space of an arm: UBA's (φ, phases, η_max, warmup) or a peer's lr alone."""
    if arm == UBA:
        return optuna_space(spec)
    lo, hi = arm_lr_range(spec, arm)
    return {LR: optuna.distributions.FloatDistribution(lo, hi, log=True)}


def _prefix(arm: str) -> str:
    return "" if arm == UBA else f"{arm}-"


class _Rungs:
    """The Optuna studies of one arm's horizons and the batch runner that records into them."""

    def __init__(self, spec: StudySpec, executor: Executor, arm: str,
                 horizons: Sequence[int]) -> None:
        self.spec, self.executor, self.arm = spec, executor, arm
        self.space = arm_space(spec, arm)
        self.studies = {steps: open_rung_study(spec, steps, arm) for steps in horizons}
        self.outcomes: dict[int, list[Outcome]] = defaultdict(list)

    def train(self, name: str, steps: int, cands: Sequence[Candidate]) -> list[Outcome]:
        from tuning.proposer import ask_rung, tell_rung

        study = self.studies[steps]
        trials = ask_rung(study, self.space, cands, name)  # every ask before any tell
        outs = self.executor.run(name, steps, [(c, self.spec.seed) for c in cands])
        tell_rung(study, trials, outs)
        self.outcomes[steps].extend(outs)
        return outs


def _best_lr(spec: StudySpec, outs: Sequence[Outcome]) -> float | None:
    keys = promote({o.candidate.index: o.value for o in outs}, 1, spec.mode)
    if not keys:
        return None
    return float(next(o for o in outs if o.candidate.index == keys[0]).candidate.params[LR])


def search_ladder(spec: StudySpec, executor: Executor, arm: str = UBA,
                  first: Sequence[Mapping[str, Any]] | None = None,
                  arm_params: Mapping[str, Any] | None = None) -> dict[int, list[Outcome]]:
    """Run ``arm``'s horizon ladder: per iteration, the lowest rung's candidates (UBA: stage A
    then stage B in the first iteration, stage C after; a peer: its lr grid), complete
    schedules of that horizon, the best 1/η promoted up to the full budget, hedged towards
    lower η_max (:func:`~tuning.ladder.promote_hedged`) except in UBA's staged first
    iteration: its design already carries the hedge as a candidate (stage B's neutral φ half a
    sweep cell from the winner, :func:`~tuning.proposer.hedge_lr`), and forcing that candidate
    into promotion as well spent one of the two full-budget slots on it in 8 of 8
    quality-bench cells, where it was the pick in 2 (``bench/results/schedule_quality_*_
    tuning.csv`` at 06d6345); now it is promoted only when its rung value earns it, so another
    shape can reach the full budget. ``first``: UBA's first points (default: the spec's
    ``extra_points``, i.e. the recommendation, curvature suggestions and warm starts).
    ``arm_params``: fixed parameters every candidate of a peer arm carries besides its lr (a
    refined arm's source norms); they reach the trial config, not the Optuna space.

    Each batch is one experiment ``[<arm>-]it<i>-rung<r>-<steps>[-shapes]`` and one batch of
    asks/tells in the Optuna study of its horizon. Returns every outcome by horizon.
    """
    ladders = spec.ladders()
    horizons = sorted({r.steps for ladder in ladders for r in ladder.rungs})
    rungs = _Rungs(spec, executor, arm, horizons)
    searched_lr = arm != UBA or spec.eta_range is not None
    grid: list[float] = []
    if arm != UBA:
        lo, hi = arm_lr_range(spec, arm)
        grid = lr_grid(lo, hi, spec.num_trials)
    proposed: list[dict[str, Any]] = []
    next_index = 0
    for it, ladder in enumerate(ladders):
        bottom = ladder.rungs[0]
        n0 = bottom.candidates
        name0 = f"{_prefix(arm)}it{it}-rung0-{bottom.steps}"
        logger.info("study %s: %s iteration %d, rungs %s, %d candidates", spec.study_id, arm,
                    it, [r.steps for r in ladder.rungs], n0)
        if arm != UBA:  # iteration i takes every len(ladders)-th grid point: spread out
            params = [{LR: lr, **(arm_params or {})} for lr in grid[it::len(ladders)]][:n0]
            cands = [Candidate(next_index + j, p, it, "sweep", arm) for j, p in enumerate(params)]
            outs = rungs.train(name0, bottom.steps, cands)
        elif it == 0:
            # raw points: one without its own η_max is placed at the sweep's best
            pts = list(spec.extra_points) if first is None else list(first)
            n_a, n_b = stage_sizes(n0, spec.eta_range is not None)
            outs = []
            cands = []
            if n_a:
                sweep = eta_sweep_points(spec, n_a)
                cands = [Candidate(next_index + j, p, it, "sweep") for j, p in enumerate(sweep)]
                outs = rungs.train(name0, bottom.steps, cands)
            if n_b:
                best = _best_lr(spec, outs) if n_a else None
                swept = {float(o.candidate.params[LR]): o.value for o in outs}
                shapes = shape_points(spec, n_b, best, n_a, pts,
                                      skip=[c.params for c in cands], sweep=swept)
                if len(shapes) < n_b:  # fewer distinct shapes than slots: the sampler fills
                    shapes += propose(spec, it, n_b - len(shapes), (), [],
                                      skip=[*(c.params for c in cands), *shapes])
                b = [Candidate(next_index + n_a + j, p, it, "shape") for j, p in enumerate(shapes)]
                outs = [*outs, *rungs.train(name0 + ("-shapes" if n_a else ""),
                                            bottom.steps, b)]
                cands = [*cands, *b]
        else:
            params = propose(spec, it, n0, model_trials(rungs.studies, it), [], skip=proposed)
            cands = [Candidate(next_index + j, p, it, "model") for j, p in enumerate(params)]
            outs = rungs.train(name0, bottom.steps, cands)
        proposed.extend(c.params for c in cands)
        next_index += len(cands)
        for rung in ladder.rungs:
            if rung.index > 0:
                outs = rungs.train(f"{_prefix(arm)}it{it}-rung{rung.index}-{rung.steps}",
                                   rung.steps, cands)
            if rung.promote == 0:
                break
            values = {o.candidate.index: o.value for o in outs}
            if searched_lr and not (arm == UBA and it == 0 and spec.eta_range is not None):
                lrs = {c.index: float(c.params[LR]) for c in cands}
                keep = set(promote_hedged(values, lrs, rung.promote, spec.mode))
            else:
                keep = set(promote(values, rung.promote, spec.mode))
            cands = [c for c in cands if c.index in keep]
            if not cands:
                logger.warning("study %s: %s: no candidate finished rung %d steps",
                               spec.study_id, arm, rung.steps)
                break
    return dict(rungs.outcomes)


def pick_finalists(spec: StudySpec, full: Sequence[Outcome], executor: Executor,
                   arm: str = UBA) -> tuple[list[FinalistRow], list[Outcome]]:
    """Noise-aware, robust final pick: re-train the best ``num_finalists`` full-budget
    candidates with ``finalist_seeds`` extra seeds (derived from the study seed, the same for
    every finalist: paired). Returns one row per finalist (its search run plus the extra
    seeds) in winning order — robust finalists by mean first, then the excluded ones with the
    reason — and the extra runs (for the compute count)."""
    k = spec.num_finalists
    done = [o for o in full if o.completed]
    if k == 0 or not done:
        return [], []
    keys = promote({o.candidate.index: o.value for o in done}, k, spec.mode)
    chosen = [next(o for o in done if o.candidate.index == i) for i in keys]
    seeds = [derive_seed(spec.seed, "finalist", j) for j in range(spec.finalist_seeds)]
    runs = [(o.candidate, s) for o in chosen for s in seeds]
    logger.info("study %s: %s: %d finalists x %d extra seeds", spec.study_id, arm,
                len(chosen), len(seeds))
    # named by who is re-trained: an extended study that picks other finalists trains them
    # in a new experiment instead of restoring the old one's runs
    name = f"{_prefix(arm)}finalists-c" + "-".join(str(i) for i in sorted(keys))
    extra = executor.run(name, spec.total_steps, runs, "finalist")
    rows = []
    for o in chosen:
        mine = [o, *(e for e in extra if e.candidate.index == o.candidate.index)]
        ok = [(r.seed, r.value) for r in mine if r.completed and r.value is not None
              and math.isfinite(r.value)]
        values = [v for _, v in ok]
        p = o.candidate.params
        rows.append(FinalistRow(
            trial_id=o.trial_id, phi=float(p[PHI]) if PHI in p else None,
            phases=int(p[PHASES]) if PHASES in p else None,
            eta_max=float(p.get(LR, spec.train.lr)), seeds=[s for s, _ in ok], values=values,
            n=len(values), mean=statistics.fmean(values) if values else None,
            std=statistics.stdev(values) if len(values) > 1 else None,
            failed_seeds=len(mine) - len(ok), arm=arm, candidate=o.candidate.index))
    _mark_unrobust(rows)
    order = promote({i: r.mean for i, r in enumerate(rows) if r.robust}, len(rows), spec.mode)
    rest = [i for i in promote({i: r.mean for i, r in enumerate(rows)}, len(rows), spec.mode)
            if i not in order]
    rest += [i for i in range(len(rows)) if i not in order and i not in rest]
    return [rows[i] for i in [*order, *rest]], extra


def _mark_unrobust(rows: Sequence[FinalistRow]) -> None:
    """Flag finalists that cannot win: any failed or diverged seed, or a seed spread above
    :data:`SPREAD_FACTOR` × the median spread of the other finalists. When that would leave
    none, nobody is excluded for spread (a failed seed still excludes)."""
    for r in rows:
        if r.failed_seeds:
            r.robust, r.note = False, f"{r.failed_seeds} seed(s) failed or diverged"
    spreads = {id(r): r.std for r in rows if r.robust and r.std is not None}
    flagged = []
    for r in rows:
        others = [s for key, s in spreads.items() if key != id(r)]
        if not r.robust or r.std is None or not others:
            continue
        ref = statistics.median(others)
        if r.std > SPREAD_FACTOR * ref:
            flagged.append((r, ref))
    if len(flagged) < sum(r.robust for r in rows):
        for r, ref in flagged:
            r.robust = False
            r.note = (f"seed spread {r.std:.4g} > {SPREAD_FACTOR:g} × the other finalists' "
                      f"median {ref:.4g}")


def best_outcome(spec: StudySpec, outs: Sequence[Outcome]) -> Outcome | None:
    """The best completed run of a horizon (ties: the lowest candidate index)."""
    keys = promote({o.candidate.index: o.value for o in outs}, 1, spec.mode)
    return next((o for o in outs if keys and o.candidate.index == keys[0]), None)
