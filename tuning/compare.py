"""Baseline comparison at one budget: the tuned UBA schedule and the paper's baselines, each
trained from scratch over the same seeds, as one Ray Tune grid experiment.

Why a grid and not a search: the question is "how does the tuned φ compare with cosine/step/...
at this budget", which needs the same seeds for every arm (a paired comparison), not another
optimisation. Baselines use the user's η_max, or the best of ``eta_max_grid`` by mean metric
(their own η_max search) when one is given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from ray import tune

from trainables.config import PAPER_DEFAULT_PHI, TrainConfig
from trainables.tune_trainable import TRIAL_KEY
from tuning.results import BaselineRow, BestSchedule, StudySink
from tuning.schedules import SCHEDULES
from tuning.search import run_configs
from tuning.specs import StudySpec

#: Names users know from the paper and other libraries, mapped onto registry names.
ALIASES: dict[str, str] = {"clr": "triangular", "cyclic": "triangular", "one_cycle": "onecycle",
                           "multistep": "step", "exp": "exponential"}
#: Pseudo-baseline: UBA at the paper's default φ (5 for SGD, 0.5 for AdamW), one phase.
UBA_DEFAULT = "uba_default"
#: Pseudo-baseline: the study's optimizer in its schedule-free form (the ``schedulefree``
#: package) at a constant LR: the peer users pick to avoid a schedule altogether. Its README
#: puts good rates 10-50x (SGD) or 1-10x (AdamW) above scheduled ones: give it its own
#: ``compare_eta_max`` grid.
SCHEDULE_FREE = "schedulefree"
#: Warmup of the schedule-free arm, a fraction of the run (its README recommends warmup).
SCHEDULE_FREE_WARMUP = 0.05
ALIASES.update({"schedule_free": SCHEDULE_FREE, "schedule-free": SCHEDULE_FREE})


def resolve_baseline(name: str) -> str:
    """Registry name of a baseline, or ValueError naming the valid ones."""
    resolved = ALIASES.get(name, name)
    if resolved in (UBA_DEFAULT, SCHEDULE_FREE) or (resolved in SCHEDULES and resolved != "uba"):
        return resolved
    valid = sorted([*(n for n in SCHEDULES if n != "uba"), *ALIASES, UBA_DEFAULT, SCHEDULE_FREE])
    raise ValueError(f"unknown baseline {name!r}; valid: {', '.join(valid)}")


def arm_config(name: str, base: TrainConfig, best: BestSchedule, lr: float) -> TrainConfig:
    """The trial config of one arm: the tuned UBA, UBA at the paper's default φ, schedule-free,
    or a baseline (with the study's η_min where the baseline takes one)."""
    if name == "uba":
        extra = {}
        if best.warmup_steps and base.total_steps:  # the tuned warmup fraction at this budget
            extra["warmup_steps"] = min(base.total_steps - 1, round(
                best.warmup_steps * base.total_steps / best.total_steps))
        return base.with_schedule("uba", phi=best.phi, phases=best.phases, variant=best.variant,
                                  eta_min=best.eta_min, lr=lr, **extra)
    if name == UBA_DEFAULT:
        return base.with_schedule("uba", phi=PAPER_DEFAULT_PHI[base.optimizer], phases=1, lr=lr)
    if name == SCHEDULE_FREE:
        sf = dataclasses.replace(base, optimizer=f"{base.optimizer}_schedulefree")
        return sf.with_schedule("constant", lr=lr, warmup_steps=max(
            0, round(SCHEDULE_FREE_WARMUP * base.total_steps)))
    return base.with_schedule(name, lr=lr)


def run_comparison(
    spec: StudySpec,
    budget_steps: int,
    best: BestSchedule,
    baselines: Sequence[str],
    seeds: int,
    trainable: Callable[[dict], None],
    sink: StudySink,
    eta_max_grid: Sequence[float] = (),
) -> tune.ResultGrid:
    """One grid experiment: (tuned UBA + each baseline) × seeds (× η_max grid for baselines)."""
    configs: list[tuple[dict[str, Any], TrainConfig]] = []
    names = ["uba", *(resolve_baseline(b) for b in baselines)]
    for name in dict.fromkeys(names):
        lrs = [best.eta_max] if name == "uba" else (list(eta_max_grid) or [spec.train.lr])
        for lr in lrs:
            for s in range(seeds):
                base = spec.train.for_budget(budget_steps, seed=spec.seed + s)
                configs.append(({"arm": name}, arm_config(name, base, best, lr)))
    # named by the tuned schedule it compares: an extended study whose best changed runs a
    # new comparison instead of restoring the old one
    tuned = repr((best.phi, best.phases, best.eta_max, best.eta_min, best.variant,
                  best.warmup_steps))
    digest = hashlib.sha256(tuned.encode()).hexdigest()[:8]
    return run_configs(spec, f"compare-{budget_steps}-{digest}", budget_steps, configs,
                       trainable, sink, "compare")


def summarize(spec: StudySpec, budget_steps: int, results: tune.ResultGrid) -> list[BaselineRow]:
    """Mean ± std of the final metric per arm (the best η_max per baseline by mean), with the
    per-seed values so callers can make paired comparisons."""
    groups: dict[tuple[str, float], dict[int, float]] = defaultdict(dict)
    failures: dict[str, list[str]] = defaultdict(list)
    for r in results:
        cfg = r.config.get(TRIAL_KEY, r.config)
        name = cfg.get("arm") or cfg["schedule"]
        if r.error is not None:
            failures[name].append(str(r.error).strip().splitlines()[-1][:200])
            continue
        m = r.metrics or {}
        value = m.get(spec.metric)
        if int(m.get("step", 0)) >= budget_steps and value is not None and math.isfinite(value):
            groups[(name, float(cfg["lr"]))][int(cfg["seed"])] = float(value)
    sign = 1 if spec.mode == "max" else -1
    best_per_arm: dict[str, BaselineRow] = {}
    for (name, lr), by_seed in sorted(groups.items()):
        values = [by_seed[s] for s in sorted(by_seed)]
        row = BaselineRow(
            budget_steps=budget_steps, schedule=name, eta_max=lr, seeds=sorted(by_seed),
            values=values, n=len(values), mean=statistics.fmean(values),
            std=statistics.stdev(values) if len(values) > 1 else 0.0)
        old = best_per_arm.get(name)
        if old is None or sign * (row.mean or 0.0) > sign * (old.mean or 0.0):
            best_per_arm[name] = row
    for name, reasons in sorted(failures.items()):
        best_per_arm.setdefault(name, BaselineRow(budget_steps=budget_steps, schedule=name, n=0,
                                                  values=[], mean=None, std=None))
        best_per_arm[name].errors = reasons
    return sorted(best_per_arm.values(),
                  key=lambda r: (r.mean is None, -sign * (r.mean or 0.0), r.schedule))


def trained_steps(results: tune.ResultGrid) -> int:
    """Optimizer steps a comparison trained (each trial's last reported step)."""
    return sum(int((r.metrics or {}).get("step", 0) or 0) for r in results)
