"""Schedule-aware search evidence (issue #11, "Evidence"): rank fidelity of ASHA rungs vs
horizon-ladder rungs, and compute to target of six search methods, on a tabular benchmark.

Run from the repository root (``make bench-search``)::

    python -m bench.search_bench                      # reads bench/results/phi_corpus.csv
    python -m bench.search_bench --corpus X.csv --out DIR --search-seeds 3   # smaller

What it is: a **tabular (lookup) simulation on real training results**. The dense grid corpus
(``bench/results/phi_corpus.csv``, written by ``bench/phi_corpus.py``) holds, per task, the
validation metric of every (φ, phases) grid point, trained from scratch at the horizons 25 /
50 / 100 % of the full budget with several training seeds, evaluated at several steps of each
run. A search method here never trains: when it evaluates a configuration at a horizon, it
looks up the run of one training seed drawn at random (seeded) for that configuration and
horizon; an ASHA trial reads the intermediate values of one full-horizon run. So every method
pays for the same real runs, and the comparison repeats cheaply over many search seeds.

What a lookup does not capture: wall-clock time and concurrency (trials run one after another
here; Ray runs them in parallel, which changes ASHA's asynchronous decisions but not the
synchronous ladder's), configurations between grid points (samplers propose continuous φ that
is snapped to the nearest grid φ in log distance; phases are integers), training seeds beyond
those in the corpus (re-evaluating a point draws another of its few seeds), failures, restore
and the cost of starting trials.

Metrics:

* **Rank fidelity** per task: Spearman correlation between the final full-horizon metric and
  (a) ASHA's rung values = the metric of the same full-horizon run at T/4 and T/2 (within-run
  early stopping sees these), (b) horizon-ladder rungs = the final metric of complete
  schedules trained to T/4 and T/2. Computed over configurations (seed means) and over runs
  (same training seed paired). Next to it: seed noise (pooled std over seeds of the final
  metric) and the spread between the best and worst configuration.
* **Compute to target**: optimizer steps, in units of one full-budget run, until the incumbent
  the product would return (the best value among runs that trained the *full* horizon, as
  :func:`tuning.search.best_of` picks) is a configuration whose seed-mean metric is within one
  seed standard deviation (pooled) of the dense grid's best seed-mean; median over search
  seeds; a search that does not get there within ``--max-units`` counts as not reached.
  **Final regret** = seed-mean gap of the incumbent to the grid's best after 12 units (the
  paper grid's compute).

Methods (real Optuna samplers through ask/tell; φ from ``FloatDistribution(log=True)`` over
the corpus range snapped to the nearest corpus φ, phases from ``IntDistribution``):

* ``grid12``: the paper's 12-point grid φ ∈ {0.25, 0.5, 1, 2.5, 5, 10} × phases {1, 2}
  (snapped to corpus points), in ``optuna.samplers.GridSampler`` order (seeded), full budget;
  a grid returns its best only after all 12 points, so it reaches the target at 12 or never.
* ``random``, ``tpe``: ``RandomSampler`` / ``TPESampler(n_startup_trials=4)``, full budget.
* ``tpe_asha``: TPE + Ray's own ``ASHAScheduler`` (grace T/4, reduction factor 2, as
  ``tuning.search.build_tuner`` configured it), driven with the run's reports; the truncated
  last value of a stopped trial is told to Optuna as COMPLETE, as Ray's ``OptunaSearch`` did
  (issue #11, point 3).
* ``ladder_tpe``, ``ladder_gp``: phitune's engine on lookups. The ladder is the one
  :meth:`tuning.specs.StudySpec.ladders` plans (``tuning.ladder.plan_ladder``, the corpus
  horizons 25/50/100 % as budget fractions, η and candidates per iteration from the options),
  candidates come from :func:`tuning.search.propose` (iteration 0 starts with the paper's
  default φ from :func:`tuning.search.initial_points`; later iterations model the highest rung
  with enough COMPLETE values, :func:`tuning.search.model_trials`), promotion is
  :func:`tuning.ladder.promote`; iterations repeat until the compute cap. The top rung's
  results count when the whole rung has run (synchronous rungs).
* ``ladder_tpe_fin``: ``ladder_tpe`` with the product's noise-aware final pick (2 finalists
  at the top rung, each re-trained with 2 extra seeds, the best mean wins), which costs 4
  extra full runs per ladder.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import math
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, new_figure, provenance, read_csv, write_csv, write_markdown

logger = logging.getLogger(__name__)

NAME = "search_bench"
CORPUS = RESULTS_DIR / "phi_corpus.csv"
PAPER_GRID_PHI = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PAPER_GRID_PHASES = (1, 2)
METHODS = ("grid12", "random", "tpe", "tpe_asha", "ladder_tpe", "ladder_gp", "ladder_tpe_fin")
REGRET_AT_UNITS = 12.0  # the paper grid's compute
GOAL_UNITS = 4.0
GOAL_SPEARMAN = 0.8
#: the issue's three tasks where schedules matter (with each optimizer the corpus has)
MAIN_CASES = ("mlp-fmnist/sgd", "mlp-fmnist/adamw", "cnn-fmnist/sgd", "cnn-fmnist/adamw",
              "charlm-shakespeare/adamw")

Config = tuple[float, int]  # (phi, phases)


# ----------------------------------------------------------------------------- corpus


def _frac_key(f: float) -> float:
    return round(float(f), 4)


@dataclass
class TaskCorpus:
    """One case of the corpus as lookup tables (val metric per run and eval step)."""

    case: str
    task: str
    mode: str
    metric: str
    full_steps: int
    optimizer: str = "sgd"
    #: (config, horizon fraction) -> seed -> {step: val}
    curves: dict[tuple[Config, float], dict[int, dict[int, float]]] = field(default_factory=dict)
    #: (config, horizon fraction) -> seed -> final val
    finals: dict[tuple[Config, float], dict[int, float]] = field(default_factory=dict)

    @property
    def fractions(self) -> list[float]:
        return sorted({f for _, f in self.finals})

    @property
    def configs(self) -> list[Config]:
        """Configurations with a final value at the full horizon."""
        return sorted(c for c, f in self.finals if f == 1.0)

    @property
    def phis(self) -> list[float]:
        return sorted({c[0] for c in self.configs})

    @property
    def phases(self) -> list[int]:
        return sorted({c[1] for c in self.configs})

    def sign(self) -> float:
        """+1 when larger is better."""
        return 1.0 if self.mode == "max" else -1.0

    def mean_final(self, c: Config, frac: float = 1.0) -> float:
        return statistics.fmean(self.finals[(c, frac)].values())

    def seed_std(self) -> float:
        """Pooled standard deviation over seeds of the full-horizon final metric."""
        var = [statistics.variance(v.values()) for (c, f), v in self.finals.items()
               if f == 1.0 and len(v) > 1 and all(math.isfinite(x) for x in v.values())]
        return math.sqrt(statistics.fmean(var)) if var else 0.0

    def best_mean(self) -> tuple[Config, float]:
        best = max(self.configs, key=lambda c: self.sign() * self.mean_final(c))
        return best, self.mean_final(best)

    def regret(self, c: Config | None) -> float:
        """Seed-mean gap to the grid's best (≥ 0, in metric units); inf without incumbent."""
        if c is None:
            return math.inf
        return max(0.0, self.sign() * (self.best_mean()[1] - self.mean_final(c)))

    def within_target(self) -> int:
        """How many configurations are within one seed std of the best (the target's size:
        a random first trial hits it with probability within_target / len(configs))."""
        tol = self.seed_std()
        return sum(self.regret(c) <= tol + 1e-12 for c in self.configs)

    def snap(self, phi: float, phases: int) -> Config:
        """Nearest corpus φ in log distance, nearest phase count (among configs)."""
        phis = self.phis
        i = bisect.bisect_left(phis, phi)
        cands = phis[max(0, i - 1): i + 1]
        p = min(cands, key=lambda v: abs(math.log(v) - math.log(phi)))
        ph = min(self.phases, key=lambda k: abs(k - phases))
        if (p, ph) in self.finals or (p, ph) in {c for c in self.configs}:
            return (p, ph)
        return min(self.configs, key=lambda c: (abs(math.log(c[0]) - math.log(p)),
                                                abs(c[1] - ph)))


def case_name(row: dict[str, str]) -> str:
    """A benchmark case = one task with one optimizer (its three horizons together).

    The corpus names its cases per horizon (``mlp-fmnist/sgd/T100``); the search bench needs
    all horizons of one task and optimizer, so it groups them.
    """
    return f"{row['task']}/{row['optimizer']}"


def load_corpus(path: Path, min_seeds: int = 1) -> dict[str, TaskCorpus]:
    """Read the corpus CSV into one :class:`TaskCorpus` per (task, optimizer).

    A diverged run (non-finite value) is kept as the worst value (never promoted, never the
    incumbent). Configurations with fewer than ``min_seeds`` full-horizon seeds are dropped,
    so a corpus that is still being written yields only its complete part.
    """
    out: dict[str, TaskCorpus] = {}
    for r in read_csv(path):
        case = case_name(r)
        tc = out.get(case)
        if tc is None:
            tc = out[case] = TaskCorpus(case=case, task=r["task"], mode=r["mode"],
                                        metric=r["metric"], full_steps=int(r["full_steps"]),
                                        optimizer=r["optimizer"])
        elif int(r["full_steps"]) != tc.full_steps:
            raise ValueError(f"{path}: case {case} has full_steps {r['full_steps']} and "
                             f"{tc.full_steps}")
        c: Config = (float(r["phi"]), int(r["phases"]))
        frac = _frac_key(float(r["horizon_fraction"]))
        seed, step = int(r["seed"]), int(r["step"])
        try:
            val = float(r["val_value"])
        except ValueError:
            val = math.nan
        if not math.isfinite(val):
            val = -math.inf if tc.mode == "max" else math.inf
        tc.curves.setdefault((c, frac), {}).setdefault(seed, {})[step] = val
        if str(r["final"]).strip() in ("1", "True", "true"):
            tc.finals.setdefault((c, frac), {})[seed] = val
    for tc in out.values():
        short = {c for (c, f), v in tc.finals.items() if f == 1.0 and len(v) < min_seeds}
        for key in [k for k in tc.finals if k[0] in short]:
            del tc.finals[key]
    return {k: v for k, v in out.items() if v.configs}


# ----------------------------------------------------------------------------- statistics


def _ranks(xs: Sequence[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when undefined."""
    if len(a) != len(b) or len(a) < 3:
        return math.nan
    ra, rb = _ranks(list(a)), _ranks(list(b))
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    den = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return num / den if den > 0 else math.nan


def _clip(v: float) -> float:
    """Map ±inf (diverged) to a large finite value so ranks stay defined."""
    return max(min(v, 1e30), -1e30)


def _value_at(curve: dict[int, float], step: int) -> float | None:
    """The value reported at the last eval step <= ``step`` (what a rung at ``step`` sees)."""
    steps = [s for s in curve if s <= step]
    return curve[max(steps)] if steps else None


def fidelity_rows(tc: TaskCorpus) -> list[dict[str, Any]]:
    """Spearman vs the final full-horizon metric for ASHA rungs and ladder rungs."""
    full = {c: tc.finals[(c, 1.0)] for c in tc.configs}
    rows: list[dict[str, Any]] = []
    for frac in (0.25, 0.5):
        rung_step = round(frac * tc.full_steps)
        # (a) ASHA: same full-horizon run at the rung step
        xs_c, ys_c, xs_r, ys_r = [], [], [], []
        for c in tc.configs:
            curves = tc.curves.get((c, 1.0), {})
            vals = {s: _value_at(curves[s], rung_step) for s in curves}
            vals = {s: v for s, v in vals.items() if v is not None and s in full[c]}
            if not vals:
                continue
            xs_c.append(_clip(statistics.fmean(vals.values())))
            ys_c.append(_clip(statistics.fmean(full[c][s] for s in vals)))
            for s, v in vals.items():
                xs_r.append(_clip(v))
                ys_r.append(_clip(full[c][s]))
        rows.append(_fid_row(tc, "asha_rung", frac, xs_c, ys_c, xs_r, ys_r))
        # (b) ladder: complete schedule at the shorter horizon
        xs_c, ys_c, xs_r, ys_r = [], [], [], []
        for c in tc.configs:
            short = tc.finals.get((c, _frac_key(frac)))
            if not short:
                continue
            xs_c.append(_clip(statistics.fmean(short.values())))
            ys_c.append(_clip(statistics.fmean(full[c].values())))
            for s, v in short.items():
                if s in full[c]:
                    xs_r.append(_clip(v))
                    ys_r.append(_clip(full[c][s]))
        rows.append(_fid_row(tc, "ladder_rung", frac, xs_c, ys_c, xs_r, ys_r))
    return rows


def _fid_row(tc: TaskCorpus, kind: str, frac: float, xs_c: list[float], ys_c: list[float],
             xs_r: list[float], ys_r: list[float]) -> dict[str, Any]:
    means = [m for m in (tc.mean_final(c) for c in tc.configs) if math.isfinite(m)]
    return {"case": tc.case, "task": tc.task, "metric": tc.metric, "mode": tc.mode,
            "fidelity": kind, "fraction": frac, "n_configs": len(xs_c), "n_runs": len(xs_r),
            "spearman_configs": spearman(xs_c, ys_c), "spearman_runs": spearman(xs_r, ys_r),
            "seed_std": tc.seed_std(), "best_worst_spread": max(means) - min(means)}


# ----------------------------------------------------------------------------- simulation


class Oracle:
    """Looks up a seeded random training seed's run; counts compute in full-run units."""

    def __init__(self, tc: TaskCorpus, seed: int) -> None:
        self.tc = tc
        self.rng = random.Random(seed)
        self.spent = 0.0
        self.last_seed = -1

    def final(self, c: Config, frac: float, exclude: set[int] | frozenset[int] = frozenset()
              ) -> float:
        """A random training seed's final value (not one of ``exclude`` while others exist)."""
        seeds = sorted(self.tc.finals[(c, _frac_key(frac))])
        pool = [s for s in seeds if s not in exclude] or seeds
        s = self.rng.choice(pool)
        self.last_seed = s
        self.spent += frac
        return self.tc.finals[(c, _frac_key(frac))][s]

    def curve(self, c: Config) -> list[tuple[int, float]]:
        """A full-horizon run's reports (step, value), ascending; compute is charged by the
        caller for the steps actually trained."""
        curves = self.tc.curves[(c, 1.0)]
        s = self.rng.choice(sorted(s for s in curves if s in self.tc.finals[(c, 1.0)]))
        return sorted(curves[s].items())


@dataclass
class Trace:
    """(compute spent so far, incumbent config) after every full-horizon result."""

    points: list[tuple[float, Config]] = field(default_factory=list)
    spent: float = 0.0

    def units_to_target(self, tc: TaskCorpus, tol: float) -> float:
        for units, c in self.points:
            if tc.regret(c) <= tol + 1e-12:
                return units
        return math.inf

    def incumbent_at(self, units: float) -> Config | None:
        inc = None
        for u, c in self.points:
            if u <= units + 1e-9:
                inc = c
        return inc


class Incumbent:
    """The best observed full-horizon value so far (the product's pick)."""

    def __init__(self, tc: TaskCorpus) -> None:
        self.sign = tc.sign()
        self.best: tuple[float, Config] | None = None

    def see(self, c: Config, value: float) -> Config | None:
        if math.isfinite(value) and (self.best is None or self.sign * value > self.best[0]):
            self.best = (self.sign * value, c)
        return self.best[1] if self.best else None


def _space(tc: TaskCorpus) -> dict[str, Any]:
    import optuna

    phis, phases = tc.phis, tc.phases
    space: dict[str, Any] = {"phi": optuna.distributions.FloatDistribution(
        phis[0], phis[-1], log=True) if phis[0] < phis[-1] else
        optuna.distributions.CategoricalDistribution([phis[0]])}
    space["phases"] = (optuna.distributions.IntDistribution(phases[0], phases[-1])
                       if phases[0] < phases[-1] else
                       optuna.distributions.CategoricalDistribution([phases[0]]))
    return space


def make_sampler(name: str, seed: int) -> Any:
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=4)
    raise ValueError(f"unknown sampler {name!r}; valid: random, tpe, gp")


def _study(sampler: Any, tc: TaskCorpus) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize" if tc.mode == "max" else "minimize",
                               sampler=sampler)


def _tell(study: Any, trial: Any, value: float) -> None:
    import optuna

    if math.isfinite(value):
        study.tell(trial, value)
    else:
        study.tell(trial, None, state=optuna.trial.TrialState.FAIL)


def run_full_budget(tc: TaskCorpus, sampler_name: str, seed: int, max_units: float) -> Trace:
    """Every trial trains the full horizon (random, TPE)."""
    oracle, inc, trace = Oracle(tc, seed), Incumbent(tc), Trace()
    study, space = _study(make_sampler(sampler_name, seed), tc), _space(tc)
    while oracle.spent + 1.0 <= max_units + 1e-9:
        trial = study.ask(space)
        c = tc.snap(trial.params["phi"], trial.params["phases"])
        value = oracle.final(c, 1.0)
        _tell(study, trial, value)
        trace.points.append((oracle.spent, inc.see(c, value)))
    trace.spent = oracle.spent
    return trace


def grid_points(tc: TaskCorpus) -> list[Config]:
    return sorted({tc.snap(p, k) for p in PAPER_GRID_PHI for k in PAPER_GRID_PHASES})


def run_grid(tc: TaskCorpus, seed: int, max_units: float) -> Trace:
    """The paper's grid through ``optuna.samplers.GridSampler`` (seeded order), full budget."""
    import optuna

    pts = grid_points(tc)
    search_space = {"idx": list(range(len(pts)))}
    study = _study(optuna.samplers.GridSampler(search_space, seed=seed), tc)
    oracle, inc, trace = Oracle(tc, seed), Incumbent(tc), Trace()

    def objective(trial: Any) -> float:  # study.optimize: GridSampler stops the study itself
        c = pts[int(trial.suggest_categorical("idx", search_space["idx"]))]
        value = oracle.final(c, 1.0)
        inc.see(c, value)
        return value if math.isfinite(value) else float("nan")

    if max_units + 1e-9 >= len(pts):  # a grid knows its best only after its last point
        study.optimize(objective, n_trials=len(pts))
        trace.points.append((oracle.spent, inc.best[1] if inc.best else None))  # type: ignore
    trace.spent = oracle.spent
    return trace


class _Trial:
    """What Ray's ASHA needs of a trial: an id."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def run_tpe_asha(tc: TaskCorpus, seed: int, max_units: float) -> Trace:
    """TPE + Ray's ASHAScheduler (grace T/4, reduction factor 2), trials one after another."""
    import numpy as np
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    np.random.seed(seed)  # ASHA draws the bracket with np.random (one bracket: no effect)
    full = tc.full_steps
    asha = ASHAScheduler(time_attr="step", metric="v", mode=tc.mode, max_t=full,
                         grace_period=max(1, full // 4), reduction_factor=2)
    oracle, inc, trace = Oracle(tc, seed), Incumbent(tc), Trace()
    study, space = _study(make_sampler("tpe", seed), tc), _space(tc)
    spent = 0.0
    k = 0
    while spent + 1.0 <= max_units + 1e-9:
        trial = study.ask(space)
        c = tc.snap(trial.params["phi"], trial.params["phases"])
        rt = _Trial(f"t{k}")
        k += 1
        asha.on_trial_add(None, rt)
        last_step, last_value = 0, math.nan
        for step, value in oracle.curve(c):
            last_step, last_value = step, value
            action = asha.on_trial_result(None, rt, {"step": step, "v": _clip(value)})
            if action == TrialScheduler.STOP:
                break
        spent += last_step / full
        if last_step >= full:
            asha.on_trial_complete(None, rt, {"step": step, "v": _clip(value)})
            trace.points.append((spent, inc.see(c, last_value)))
        # Ray's OptunaSearch told Optuna the last value as COMPLETE, truncated or not
        _tell(study, trial, last_value)
    trace.spent = spent
    return trace


def case_spec(tc: TaskCorpus, sampler: str, seed: int, candidates: int, eta: int,
              finalists: int, finalist_seeds: int) -> Any:
    """The :class:`tuning.specs.StudySpec` a user would submit for this case: the corpus's φ
    and phase range, the given sampler and ladder, ``candidates`` trials per iteration."""
    from tuning.specs import LadderSpec, SearchSpace, StudySpec, TrainConfig

    return StudySpec(
        study_id=f"bench-{tc.case}", seed=seed, total_steps=tc.full_steps,
        train=TrainConfig(model="bench", dataset="bench", optimizer=tc.optimizer,  # type: ignore
                        metric=tc.metric, lr=0.1),
        search=SearchSpace(phi_min=tc.phis[0], phi_max=tc.phis[-1], phases_min=tc.phases[0],
                           phases_max=tc.phases[-1], sampler=sampler),  # type: ignore
        budget_fractions=tuple(f for f in tc.fractions if f <= 1.0), num_trials=candidates,
        ladder=LadderSpec(eta=eta, iterations=1), finalists=finalists,
        finalist_seeds=finalist_seeds)


def run_ladder(tc: TaskCorpus, sampler_name: str, seed: int, max_units: float,
               candidates: int, eta: int, finalists: int = 0, finalist_seeds: int = 0
               ) -> Trace:
    """Successive ladder iterations as phitune's engine runs them, on lookups.

    The plan is :meth:`tuning.specs.StudySpec.ladders` (:func:`tuning.ladder.plan_ladder` with
    the corpus horizons as budget fractions); candidates come from
    :func:`tuning.search.propose` (iteration 0 starts with :func:`tuning.search.initial_points`,
    the paper's default φ), modelled on :func:`tuning.search.model_trials` (BOHB's rule: the
    highest rung with enough COMPLETE values); promotion is :func:`tuning.ladder.promote`.
    With ``finalists`` the best full-budget candidates get ``finalist_seeds`` extra training
    seeds (distinct from their first one) and the best mean wins, as the engine picks.
    """
    import optuna

    from tuning.ladder import promote
    from tuning.proposer import initial_points, model_trials, optuna_space, propose

    spec = case_spec(tc, sampler_name, seed, candidates, eta, finalists, finalist_seeds)
    (ladder,) = spec.ladders()
    horizons = [_frac_key(r.fraction) for r in ladder.rungs]
    missing = [f for f in horizons if f not in tc.fractions]
    if missing:
        raise ValueError(f"ladder horizons {missing} are not in the corpus ({tc.fractions})")
    space = optuna_space(spec)
    rung_studies = {r.steps: _study(optuna.samplers.RandomSampler(seed=0), tc)
                    for r in ladder.rungs}
    oracle, trace = Oracle(tc, seed), Trace()
    n_fin = min(spec.num_finalists, ladder.top.candidates) if finalist_seeds > 0 else 0
    ladder_cost = sum(r.candidates * r.fraction for r in ladder.rungs) + n_fin * finalist_seeds
    runs: dict[Config, list[float]] = {}  # full-horizon values of each candidate (+ finalists)
    inc = Incumbent(tc)
    it = 0
    while oracle.spent + ladder_cost <= max_units + 1e-9:
        params = propose(spec, it, ladder.rungs[0].candidates,
                         model=model_trials(rung_studies, it),
                         first=initial_points(spec) if it == 0 else ())
        current = {i: tc.snap(p["phi"], p["phases"]) for i, p in enumerate(params)}
        for rung in ladder.rungs:
            results: dict[int, float] = {}
            seeds_used: dict[int, int] = {}
            for i, c in current.items():
                results[i] = oracle.final(c, rung.fraction)
                seeds_used[i] = oracle.last_seed
                ok = math.isfinite(results[i])
                rung_studies[rung.steps].add_trial(optuna.trial.create_trial(
                    params=params[i], distributions=space, value=results[i] if ok else None,
                    state=(optuna.trial.TrialState.COMPLETE if ok
                           else optuna.trial.TrialState.FAIL), user_attrs={"iteration": it}))
            if rung.promote == 0:
                if n_fin == 0:
                    for i, value in results.items():
                        trace.points.append((oracle.spent, inc.see(current[i], value)))
                    break
                for i in promote(results, n_fin, tc.mode):  # type: ignore[arg-type]
                    extra = [oracle.final(current[i], 1.0, exclude={seeds_used[i]})
                             for _ in range(finalist_seeds)]
                    runs.setdefault(current[i], []).extend([results[i], *extra])
                best = max(runs, key=lambda c: tc.sign() * statistics.fmean(runs[c]))
                trace.points.append((oracle.spent, best))
                break
            keep = promote(results, rung.promote, tc.mode)  # type: ignore[arg-type]
            current = {i: current[i] for i in keep}
        it += 1
    trace.spent = oracle.spent
    return trace


def run_method(tc: TaskCorpus, method: str, seed: int, max_units: float,
               candidates: int, eta: int) -> Trace:
    runners: dict[str, Callable[[], Trace]] = {
        "grid12": lambda: run_grid(tc, seed, max_units),
        "random": lambda: run_full_budget(tc, "random", seed, max_units),
        "tpe": lambda: run_full_budget(tc, "tpe", seed, max_units),
        "tpe_asha": lambda: run_tpe_asha(tc, seed, max_units),
        "ladder_tpe": lambda: run_ladder(tc, "tpe", seed, max_units, candidates, eta),
        "ladder_gp": lambda: run_ladder(tc, "gp", seed, max_units, candidates, eta),
        "ladder_tpe_fin": lambda: run_ladder(tc, "tpe", seed, max_units, candidates, eta,
                                             finalists=2, finalist_seeds=2),
    }
    if method not in runners:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(runners)}")
    return runners[method]()


def compute_rows(tc: TaskCorpus, methods: Sequence[str], search_seeds: int, max_units: float,
                 candidates: int, eta: int) -> list[dict[str, Any]]:
    """One row per (method, search seed): units to target, regret at 12 units and at the end."""
    tol = tc.seed_std()
    rows = []
    for m in methods:
        t0 = time.perf_counter()
        for s in range(search_seeds):
            tr = run_method(tc, m, s, max_units, candidates, eta)
            inc12 = tr.incumbent_at(REGRET_AT_UNITS)
            final = tr.points[-1][1] if tr.points else None
            u = tr.units_to_target(tc, tol)
            rows.append({"case": tc.case, "task": tc.task, "method": m, "search_seed": s,
                         "units_to_target": u if math.isfinite(u) else "",
                         "regret_at_12": tc.regret(inc12), "incumbent_at_12":
                         "" if inc12 is None else f"{inc12[0]:g}/{inc12[1]}",
                         "units_spent": round(tr.spent, 4), "regret_final": tc.regret(final),
                         "target_tol": tol})
        logger.info("%s %s: %d search seeds in %.0f s", tc.case, m, search_seeds,
                    time.perf_counter() - t0)
    return rows


def summarize(rows: list[dict[str, Any]], max_units: float) -> list[dict[str, Any]]:
    """Per (case, method): median units to target (unreached = inf), reached k/n, regrets."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["case"], r["method"])].append(r)
    out = []
    for (case, m), rs in groups.items():
        units = sorted(float(r["units_to_target"]) if r["units_to_target"] != "" else math.inf
                       for r in rs)
        reached = sum(math.isfinite(u) for u in units)
        med = statistics.median(units) if units else math.inf
        out.append({"case": case, "task": rs[0]["task"], "method": m, "n": len(rs),
                    "reached": reached, "median_units": med,
                    "min_units": units[0] if units else math.inf,
                    "median_regret_12": statistics.median(float(r["regret_at_12"]) for r in rs),
                    "median_regret_final": statistics.median(float(r["regret_final"])
                                                             for r in rs),
                    "max_units": max_units})
    return out


# ----------------------------------------------------------------------------- report


def fmt_units(u: float, cap: float) -> str:
    return f"> {cap:g}" if not math.isfinite(u) else f"{u:.2f}"


def markdown(corpora: dict[str, TaskCorpus], fid: list[dict[str, Any]],
             summary: list[dict[str, Any]], args: argparse.Namespace, wall: float,
             corpus_path: Path) -> str:
    lines = [
        "This is a **tabular (lookup) simulation on real training results**: the search "
        f"methods never train, they look up runs of the dense grid corpus (`{corpus_path.name}`"
        ") for a seeded random training seed. It does not capture wall-clock time, "
        "concurrency (trials run one after another; Ray's asynchronous ASHA decides "
        "differently under parallel trials, the synchronous ladder does not), φ between grid "
        "points (sampled φ is snapped to the nearest corpus φ in log distance), more training "
        "seeds than the corpus holds, failures and trial start-up costs. Method details: "
        "`bench/search_bench.py` docstring.\n",
        f"Options: {args.search_seeds} search seeds per method, compute cap {args.max_units:g} "
        f"full-run units, ladder η = {args.eta} with {args.candidates} candidates per ladder "
        f"(plan from `tuning.ladder.plan_ladder`), target = within one pooled seed std of the "
        f"grid's best seed mean. Wall time {wall:.0f} s.\n",
        "## Corpus per case\n",
        "| case | task | metric | full steps | configs (φ × phases) | seeds | horizons | "
        "grid best (seed mean) | seed std | best − worst config | configs within target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tc in corpora.values():
        best, mu = tc.best_mean()
        n_seeds = max(len(tc.finals[(c, 1.0)]) for c in tc.configs)
        means = [m for m in (tc.mean_final(c) for c in tc.configs) if math.isfinite(m)]
        lines.append(
            f"| {tc.case} | {tc.task} | {tc.metric} ({tc.mode}) | {tc.full_steps} | "
            f"{len(tc.configs)} ({len(tc.phis)} × {len(tc.phases)}) | {n_seeds} | "
            f"{', '.join(f'{f:g}' for f in tc.fractions)} | {mu:.4f} at φ={best[0]:g}, "
            f"phases={best[1]} | {tc.seed_std():.4f} | {max(means) - min(means):.4f} | "
            f"{tc.within_target()} of {len(tc.configs)} |")
    lines += ["", "## Rank fidelity: Spearman vs the final full-horizon metric\n",
              "ASHA rung = the same full-horizon run's value at T/4 or T/2 (what within-run "
              "early stopping sees); ladder rung = the final value of complete schedules "
              "trained from scratch to T/4 or T/2. `configs` = over configurations (seed "
              "means), `runs` = over runs paired by training seed.\n",
              "| case | ASHA T/4 | ASHA T/2 | ladder T/4 | ladder T/2 | n configs | "
              f"ladder rungs ≥ {GOAL_SPEARMAN} |",
              "|---|---|---|---|---|---|---|"]
    for case in dict.fromkeys(r["case"] for r in fid):
        f = {(r["fidelity"], r["fraction"]): r for r in fid if r["case"] == case}

        def cell(kind: str, frac: float, f: dict = f) -> str:
            r = f.get((kind, frac))
            if r is None or not math.isfinite(r["spearman_configs"]):
                return "–"
            return f"{r['spearman_configs']:+.2f} (runs {r['spearman_runs']:+.2f})"

        lad = [f[("ladder_rung", fr)]["spearman_configs"] for fr in (0.25, 0.5)
               if ("ladder_rung", fr) in f and math.isfinite(f[("ladder_rung", fr)]
                                                             ["spearman_configs"])]
        ok = "yes" if lad and min(lad) >= GOAL_SPEARMAN else ("no" if lad else "–")
        n = f.get(("ladder_rung", 0.25), f.get(("asha_rung", 0.25), {})).get("n_configs", 0)
        lines.append(f"| {case} | {cell('asha_rung', 0.25)} | {cell('asha_rung', 0.5)} | "
                     f"{cell('ladder_rung', 0.25)} | {cell('ladder_rung', 0.5)} | {n} | {ok} |")
    lines += ["", "## Compute to target (full-run units, median over search seeds)\n",
              f"`reached` = search seeds that got within one seed std of the grid's best within "
              f"{args.max_units:g} units; regret = seed-mean gap of the incumbent to the grid's "
              f"best after {REGRET_AT_UNITS:g} units (the paper grid's compute), median.\n",
              "| case | method | median units | min units | reached | median regret @12 |",
              "|---|---|---|---|---|---|"]
    for s in sorted(summary, key=lambda r: (r["case"], METHODS.index(r["method"]))):
        lines.append(f"| {s['case']} | {s['method']} | "
                     f"{fmt_units(s['median_units'], s['max_units'])} | "
                     f"{fmt_units(s['min_units'], s['max_units'])} | {s['reached']}/{s['n']} | "
                     f"{s['median_regret_12']:.4f} |")
    lines += ["", "## Goal (issue #11)\n", goal_text(corpora, fid, summary)]
    return "\n".join(lines) + "\n"


def goal_verdict(cases: Iterable[str], fid: list[dict[str, Any]],
                 summary: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per case: ladder's best median units (of ladder_tpe / ladder_gp), grid's, min ladder
    Spearman, and whether the goal holds (≤ 4 units = 1/3 of the paper's 12-point grid;
    Spearman ≥ 0.8 at every ladder rung)."""
    out = {}
    for case in cases:
        s = {r["method"]: r for r in summary if r["case"] == case}
        lad = [s[m]["median_units"] for m in ("ladder_tpe", "ladder_gp") if m in s]
        grid = s["grid12"]["median_units"] if "grid12" in s else math.inf
        rho = [r["spearman_configs"] for r in fid if r["case"] == case
               and r["fidelity"] == "ladder_rung" and math.isfinite(r["spearman_configs"])]
        best = min(lad) if lad else math.inf
        out[case] = {"ladder_units": best, "grid_units": grid,
                     "min_ladder_spearman": min(rho) if rho else math.nan,
                     "compute_ok": best <= GOAL_UNITS,
                     "spearman_ok": bool(rho) and min(rho) >= GOAL_SPEARMAN}
    return out


def goal_text(cases: Iterable[str], fid: list[dict[str, Any]],
              summary: list[dict[str, Any]]) -> str:
    v = goal_verdict(cases, fid, summary)
    parts = []
    for case, g in v.items():
        cap = summary[0]["max_units"] if summary else math.inf
        parts.append(
            f"- {case}: ladder (best of TPE/GP) median {fmt_units(g['ladder_units'], cap)} "
            f"units to target vs grid {fmt_units(g['grid_units'], cap)} → compute goal "
            f"(≤ {GOAL_UNITS:g} units = 1/3 of the paper's 12-point grid) "
            f"**{'met' if g['compute_ok'] else 'not met'}**; lowest ladder-rung Spearman "
            f"{g['min_ladder_spearman']:+.2f} → fidelity goal (≥ {GOAL_SPEARMAN}) "
            f"**{'met' if g['spearman_ok'] else 'not met'}**.")
    n_ok = sum(g["compute_ok"] and g["spearman_ok"] for g in v.values())
    parts.append(f"\nBoth goals met on {n_ok} of {len(v)} case(s).")
    return "\n".join(parts)


def plot(path: Path, summary: list[dict[str, Any]], max_units: float) -> None:
    cases = sorted({r["case"] for r in summary})
    fig, axes = new_figure(3.4 * max(1, len(cases)), 3.2, ncols=max(1, len(cases)))
    axes = axes if len(cases) > 1 else [axes]
    for ax, case in zip(axes, cases, strict=True):
        s = {r["method"]: r for r in summary if r["case"] == case}
        ms = [m for m in METHODS if m in s]
        vals = [min(s[m]["median_units"], max_units * 1.05) for m in ms]
        ax.bar(range(len(ms)), vals, color=["C7" if m == "grid12" else "C0" for m in ms])
        ax.axhline(GOAL_UNITS, color="C3", lw=1, ls="--", label=f"goal {GOAL_UNITS:g}")
        ax.set_xticks(range(len(ms)), ms, rotation=45, ha="right", fontsize=7)
        ax.set_title(case, fontsize=8)
        ax.set_ylabel("median units to target", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")


def run(corpus_path: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    prov = provenance(command=args.command, seeds=(
        f"search seeds 0..{args.search_seeds - 1} per method (sampler seed = search seed, "
        "oracle seed draws with random.Random(search seed)); training seeds: the corpus's"))
    everything = load_corpus(corpus_path, min_seeds=args.min_seeds)
    wanted = args.cases if args.cases is not None else MAIN_CASES
    corpora = {k: v for k, v in everything.items() if not wanted or k in wanted}
    if not corpora:
        raise SystemExit(f"no complete case of {wanted} in {corpus_path}")
    # rank fidelity is cheap: every case of the corpus; the search simulation: the main tasks
    fid = [r for tc in everything.values() for r in fidelity_rows(tc)]
    rows = [r for tc in corpora.values() for r in compute_rows(
        tc, args.methods, args.search_seeds, args.max_units, args.candidates, args.eta)]
    summary = summarize(rows, args.max_units)
    name = args.name
    write_csv(out / f"{name}_fidelity.csv", fid)
    write_csv(out / f"{name}_compute.csv", rows)
    write_csv(out / f"{name}_summary.csv", summary)
    plot(out / f"{name}.png", summary, args.max_units)
    body = markdown(corpora, fid, summary, args, time.perf_counter() - t0, corpus_path)
    write_markdown(out / f"{name}.md", "# Schedule-aware search: rank fidelity and compute to "
                   "target (tabular simulation)", prov, body)
    return {"fidelity": fid, "rows": rows, "summary": summary,
            "verdict": goal_verdict(corpora, fid, summary)}


def read_results(out: Path, name: str = NAME) -> tuple[list[dict[str, Any]],
                                                        list[dict[str, Any]]]:
    """The fidelity and summary tables of a run, typed back (for the README renderer)."""
    def num(v: str) -> Any:
        try:
            return int(v)
        except ValueError:
            pass
        try:
            return float(v)
        except ValueError:
            return v

    fid = [{k: num(v) for k, v in r.items()} for r in read_csv(out / f"{name}_fidelity.csv")]
    summary = [{k: num(v) for k, v in r.items()} for r in read_csv(out / f"{name}_summary.csv")]
    for r in fid:  # case names are strings even when they look numeric
        r["case"] = str(r["case"])
    for r in summary:
        r["case"] = str(r["case"])
    return fid, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    ap.add_argument("--name", default=NAME)
    ap.add_argument("--search-seeds", type=int, default=20)
    ap.add_argument("--max-units", type=float, default=36.0)
    ap.add_argument("--candidates", type=int, default=8,
                    help="candidates at the lowest rung of each ladder")
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--cases", nargs="*", default=None,
                    help="cases for the search simulation (default: the issue's three tasks; "
                    "an empty list = every case); rank fidelity always covers every case")
    ap.add_argument("--min-seeds", type=int, default=3,
                    help="drop configurations with fewer full-horizon seeds (partial corpus)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (GPSampler fits its GP with torch)")
    args = ap.parse_args(argv)
    import sys

    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    torch.set_num_threads(args.threads)

    args.command = "python -m bench.search_bench " + " ".join(
        argv if argv is not None else sys.argv[1:])
    run(args.corpus, args.out, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
