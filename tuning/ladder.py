"""The horizon ladder: successive halving over *horizons*, not over steps of one run.

Why a ladder of horizons (design.md, "Search design"): a UBA schedule is a function of its
budget T, so a run's intermediate metric ranks schedules backwards (measured on the demo task:
Spearman(acc at T/4, final) = −0.68; high φ decays early and looks good early, the
short-horizon bias of Wu et al., ICLR 2018). A *complete* schedule trained from scratch on a
shorter horizon T' ranks φ like the full one (Spearman +0.89 at T/4, +0.86 at T/2). So each
rung of the ladder trains every candidate's whole schedule compressed to the rung's horizon,
and the best 1/η of a rung move up to the next, longer horizon; the top rung is the full
budget. Hyperband-style brackets (several ladders that start at different rungs) hedge
against rank changes between horizons.

This module is pure planning and bookkeeping (no Ray, no Optuna, no torch): which horizons,
how many candidates per rung, who is promoted, and how much compute that is. The search engine
(:mod:`tuning.search`) runs each rung as one Ray Tune experiment; benchmarks use the same plan.

Conventions: horizons are integer optimizer steps; compute is counted in optimizer steps and
reported in units of one full-budget run (:func:`compute_units`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from trainables.grad_norms import GradNorms

K = TypeVar("K", bound=Hashable)

#: Defaults of the ladder (what a spec that says nothing gets). η = 3 with a smallest horizon
#: of 25 % gives two rungs (T/3, T); with η = 2 the ladder is the paper's 25/50/100 %.
DEFAULT_ETA = 3
DEFAULT_MIN_FRACTION = 0.25


@dataclass(frozen=True)
class Rung:
    """One horizon of the ladder.

    ``candidates`` complete schedules are trained from scratch for ``steps`` optimizer steps;
    the best ``promote`` of them move up to the next rung (0 at the top rung). ``requested``
    says a user budget fraction coincides with this rung, so its best is a per-budget result
    of the study (no second search for that budget).
    """

    index: int
    steps: int
    fraction: float
    candidates: int
    promote: int
    requested: bool
    eval_every: int

    @property
    def compute_steps(self) -> int:
        """Optimizer steps this rung trains when every candidate runs to its horizon."""
        return self.candidates * self.steps


@dataclass(frozen=True)
class Ladder:
    """A planned ladder (one Hyperband bracket): rungs ordered by horizon, smallest first."""

    total_steps: int
    eta: int
    rungs: tuple[Rung, ...]

    @property
    def planned_steps(self) -> int:
        """Optimizer steps of the whole ladder when no candidate diverges."""
        return sum(r.compute_steps for r in self.rungs)

    @property
    def planned_units(self) -> float:
        """:attr:`planned_steps` in units of one full-budget run."""
        return compute_units(self.planned_steps, self.total_steps)

    @property
    def top(self) -> Rung:
        return self.rungs[-1]

    def rung_at(self, steps: int) -> Rung | None:
        """The rung with horizon ``steps``, if any."""
        return next((r for r in self.rungs if r.steps == steps), None)


@dataclass(frozen=True)
class Candidate:
    """One point of a search, numbered in proposal order (the tie-break of promotion).

    ``arm`` is what it trains (``uba`` or a compare arm tuned by the same ladder); ``stage``
    the design stage that proposed it (``sweep``, ``shape``, ``model``; see
    :mod:`tuning.proposer`)."""

    index: int
    params: dict[str, Any]
    iteration: int = 0
    stage: str = "model"
    arm: str = "uba"


@dataclass
class Outcome:
    """What one run of a candidate at one horizon produced."""

    candidate: Candidate
    steps: int  # the horizon it was meant to train
    seed: int
    trained_steps: int
    value: float | None  # the metric at ``steps`` when it got there, else None
    last_value: float | None
    status: str  # terminated | stopped_early | error
    trial_id: str = ""
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == "terminated" and self.value is not None

    @property
    def grad_norms(self) -> GradNorms | None:
        """The run's per-update gradient norms from its final report (None when it has none,
        e.g. it failed): ``create_schedule("refined", steps, eta_max=lr,
        **outcome.grad_norms.schedule_params())`` is its refinement (Defazio et al. 2023)."""
        from trainables.grad_norms import GradNorms  # torch: not needed to read the plan

        return GradNorms.from_metrics(self.metrics)


def compute_units(steps_trained: int | float, total_steps: int) -> float:
    """Compute in units of one full-budget run: ``steps_trained / total_steps``.

    Optimizer steps are the currency because every rung trains a different horizon: 8
    candidates at T/4 cost as much as 2 full runs, whatever the wall-clock time was.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if steps_trained < 0:
        raise ValueError(f"steps_trained must be >= 0, got {steps_trained}")
    return float(steps_trained) / total_steps


def _check_common(total_steps: int, num_trials: int, eta: int, eval_every: int) -> None:
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if num_trials < 1:
        raise ValueError(f"num_trials must be >= 1, got {num_trials}")
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise ValueError(f"eta must be an integer >= 2 (keep the best 1/eta per rung), got {eta!r}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")


def _internal_horizons(total_steps: int, eta: int, lowest: int, rungs: int | None) -> list[int]:
    """Geometric horizons T, T/η, T/η², ... down to ``lowest`` steps (or exactly ``rungs``)."""
    out = [total_steps]
    k = 1
    while rungs is None or len(out) < rungs:
        steps = round(total_steps / eta**k)
        if rungs is None and steps < lowest:
            break
        out.append(steps)
        k += 1
    return sorted(set(out))


def _counts(first: int, n_rungs: int, eta: int, min_top: int) -> list[int]:
    """Candidates per rung: ``first`` at the bottom, then ⌊n/η⌋ (at least min(min_top, n))."""
    counts, n = [], first
    for _ in range(n_rungs):
        counts.append(n)
        n = max(1, min(n, max(n // eta, min_top)))
    return counts


def plan_ladder(
    total_steps: int,
    num_trials: int,
    *,
    eta: int = DEFAULT_ETA,
    min_fraction: float | None = None,
    rungs: int | None = None,
    eval_every: int = 1,
    budget_fractions: Sequence[float] = (1.0,),
    min_top: int = 1,
) -> Ladder:
    """Plan the horizon ladder of a study.

    * Internal rungs are the horizons ``T, T/η, T/η², ...`` down to ``min_fraction · T``;
      ``rungs`` fixes their number instead. ``min_fraction=None`` means
      :data:`DEFAULT_MIN_FRACTION` *as a soft limit*: the ladder then also stops where a rung
      would be shorter than one eval interval or where the trials cannot fill it (fewer than
      η^(rungs−1) candidates). Explicit ``min_fraction`` or ``rungs`` are checked strictly and
      a ladder that does not fit raises ValueError naming the field.
    * User budget fractions (the paper's 25/50/100 %) are merged in: each requested horizon
      becomes a rung, and an internal rung within a factor √η of a requested one is dropped
      (they coincide as fidelities), so a study asking for 25/50/100 % with η = 2 or 3 trains
      exactly the paper's three horizons and reports each budget's best from the same ladder.
    * ``num_trials`` candidates start at the lowest rung; each rung keeps ``⌊n/η⌋`` (at least
      ``min(min_top, n)``, at least 1) for the next. ``min_top`` is the number of full-budget
      candidates the caller wants, e.g. the noise-aware finalists.
    """
    _check_common(total_steps, num_trials, eta, eval_every)
    if min_top < 1:
        raise ValueError(f"min_top must be >= 1, got {min_top}")
    for f in budget_fractions:
        if not 0 < f <= 1:
            raise ValueError(f"budget_fractions: {f} is outside (0, 1]")
    if not budget_fractions:
        raise ValueError("budget_fractions must not be empty")
    if rungs is not None and (isinstance(rungs, bool) or rungs < 1):
        raise ValueError(f"rungs must be >= 1, got {rungs!r}")
    strict_fraction = min_fraction is not None
    frac = DEFAULT_MIN_FRACTION if min_fraction is None else float(min_fraction)
    if not 0 < frac <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    interval = min(eval_every, total_steps)
    lowest = max(1, math.ceil(frac * total_steps - 1e-9))
    if strict_fraction and lowest < interval:
        raise ValueError(
            f"min_fraction={frac:g} gives a rung of {lowest} steps, under one eval interval "
            f"({interval} steps): raise min_fraction or lower eval_every"
        )

    if rungs is not None:
        horizons = _internal_horizons(total_steps, eta, lowest, rungs)
        if len(horizons) < rungs or horizons[0] < 1:
            raise ValueError(
                f"rungs={rungs} does not fit total_steps={total_steps} with eta={eta}: "
                "horizons would repeat or round to zero steps"
            )
        if horizons[0] < interval:
            raise ValueError(
                f"rungs={rungs}: the lowest rung would be {horizons[0]} steps, under one eval "
                f"interval ({interval} steps)"
            )
        if strict_fraction and horizons[0] < lowest:
            raise ValueError(
                f"rungs={rungs}: the lowest rung would be {horizons[0]} steps, below "
                f"min_fraction={frac:g} ({lowest} steps)"
            )
        if num_trials < eta ** (rungs - 1):
            raise ValueError(
                f"rungs={rungs} is more rungs than num_trials={num_trials} allows with eta={eta}: "
                f"needs at least {eta ** (rungs - 1)} trials to promote one per rung"
            )
    else:
        horizons = _internal_horizons(total_steps, eta, max(lowest, interval), None)
        # soft default: drop the lowest rungs the trial budget cannot fill
        while len(horizons) > 1 and num_trials < eta ** (len(horizons) - 1):
            horizons = horizons[1:]

    requested = sorted({max(1, round(f * total_steps)) for f in budget_fractions})
    spacing = math.sqrt(eta)
    kept = [h for h in horizons if h == total_steps or not any(
        max(h, q) / min(h, q) < spacing for q in requested)]
    all_h = sorted(set(kept) | set(requested))

    counts = _counts(num_trials, len(all_h), eta, min_top)
    out = []
    for i, (h, c) in enumerate(zip(all_h, counts, strict=True)):
        out.append(Rung(index=i, steps=h, fraction=h / total_steps, candidates=c,
                        promote=counts[i + 1] if i + 1 < len(counts) else 0,
                        requested=h in requested, eval_every=min(interval, h)))
    return Ladder(total_steps=total_steps, eta=eta, rungs=tuple(out))


def plan_brackets(
    total_steps: int,
    num_trials: int,
    brackets: int,
    *,
    eta: int = DEFAULT_ETA,
    min_fraction: float | None = None,
    rungs: int | None = None,
    eval_every: int = 1,
    budget_fractions: Sequence[float] = (1.0,),
    min_top: int = 1,
) -> list[Ladder]:
    """Hyperband over horizons: bracket 0 is :func:`plan_ladder`; bracket ``b`` starts at its
    rung ``b`` with fewer candidates, Hyperband's ``n ∝ η^s / (s + 1)`` for a bracket with
    ``s`` promotions, so the most exploratory bracket gets ``num_trials`` and the bracket that
    only trains the full budget gets the fewest. ``brackets`` larger than the number of rungs
    raises ValueError naming it.
    """
    if isinstance(brackets, bool) or brackets < 1:
        raise ValueError(f"brackets must be >= 1, got {brackets!r}")
    full = plan_ladder(total_steps, num_trials, eta=eta, min_fraction=min_fraction, rungs=rungs,
                       eval_every=eval_every, budget_fractions=budget_fractions, min_top=min_top)
    n_rungs = len(full.rungs)
    if brackets > n_rungs:
        raise ValueError(
            f"brackets={brackets} is more than the ladder's {n_rungs} rung(s) "
            f"(total_steps={total_steps}, eta={eta})"
        )
    s_max = n_rungs - 1
    out = [full]
    for b in range(1, brackets):
        s = s_max - b
        n = max(min_top, math.ceil(num_trials * (eta**s / (s + 1)) / (eta**s_max / (s_max + 1))))
        sub = full.rungs[b:]
        counts = _counts(n, len(sub), eta, min_top)
        out.append(Ladder(total_steps=total_steps, eta=eta, rungs=tuple(
            Rung(index=r.index, steps=r.steps, fraction=r.fraction, candidates=c,
                 promote=counts[i + 1] if i + 1 < len(counts) else 0, requested=r.requested,
                 eval_every=r.eval_every)
            for i, (r, c) in enumerate(zip(sub, counts, strict=True)))))
    return out


def promote(results: Mapping[K, float | None], n: int, mode: Literal["max", "min"]) -> list[K]:
    """The best ``n`` keys of ``results`` (metric per candidate), best first.

    Deterministic: ties are broken by the key's sort order (keys must be sortable, e.g. trial
    indices or ids), never by dict or arrival order, so concurrency cannot change who moves up.
    Missing, NaN and infinite values (diverged or failed runs) are never promoted; fewer than
    ``n`` keys come back when fewer are valid.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    sign = -1.0 if mode == "max" else 1.0
    valid = [(sign * float(v), k) for k, v in results.items()
             if v is not None and math.isfinite(float(v))]
    valid.sort(key=lambda item: (item[0], item[1]))
    return [k for _, k in valid[:n]]


def promote_hedged(results: Mapping[K, float | None], lrs: Mapping[K, float], n: int,
                   mode: Literal["max", "min"]) -> list[K]:
    """:func:`promote`, hedged against the horizon shift of η_max: when ``n`` >= 2 and the best
    ``n`` all have an η_max at or above the best one's, the last slot goes to the best valid
    key with a *lower* η_max instead (if any).

    Why: the best η_max falls as the horizon grows (Bjorck et al., ICLR 2025), so a short rung
    overrates high rates; the longer rung then decides between the rung's winner and its best
    lower-rate rival. Deterministic like :func:`promote`.
    """
    top = promote(results, n, mode)
    if n < 2 or len(top) < 2:
        return top
    best_lr = lrs[top[0]]
    if any(lrs[k] < best_lr for k in top[1:]):
        return top
    lower = [k for k in promote(results, len(results), mode) if lrs[k] < best_lr]
    return [*top[:-1], lower[0]] if lower else top


def spent_units(steps: Iterable[int], total_steps: int) -> float:
    """Compute of a list of runs' trained steps (a run stopped early counts what it trained)."""
    return compute_units(sum(int(s) for s in steps), total_steps)
