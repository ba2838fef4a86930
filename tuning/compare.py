"""Baseline comparison at one budget: the tuned UBA schedule and the paper's baselines, each
trained from scratch over the same seeds, as one Ray Tune grid experiment.

Why a grid and not a search: the question is "how does the tuned φ compare with cosine/step/...
at this budget", which needs the same seeds for every arm (a paired comparison), not another
optimisation. Baselines use the user's η_max, or the best of ``eta_max_grid`` by mean metric
(their own η_max search) when one is given.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from ray import tune

from tuning.results import BestSchedule, StudySink
from tuning.schedules import SCHEDULES
from tuning.search import SinkCallback
from tuning.specs import PAPER_DEFAULT_PHI, StudySpec

#: Names users know from the paper and other libraries, mapped onto registry names.
ALIASES: dict[str, str] = {"clr": "triangular", "cyclic": "triangular", "one_cycle": "onecycle",
                           "multistep": "step", "exp": "exponential"}
#: Pseudo-baseline: UBA at the paper's default φ (5 for SGD, 0.5 for AdamW), one phase.
UBA_DEFAULT = "uba_default"


def resolve_baseline(name: str) -> str:
    """Registry name of a baseline, or ValueError naming the valid ones."""
    resolved = ALIASES.get(name, name)
    if resolved == UBA_DEFAULT or (resolved in SCHEDULES and resolved != "uba"):
        return resolved
    valid = sorted([*(n for n in SCHEDULES if n != "uba"), *ALIASES, UBA_DEFAULT])
    raise ValueError(f"unknown baseline {name!r}; valid: {', '.join(valid)}")


def _arm(name: str, spec: StudySpec, best: BestSchedule) -> dict[str, Any]:
    """Trial-config overrides of one arm (schedule name, its params, top-level φ for UBA)."""
    if name == "uba":
        return {"schedule": "uba", "phi": best.phi, "phases": best.phases,
                "schedule_params": {"eta_min": best.eta_min, "variant": best.variant}}
    if name == UBA_DEFAULT:
        return {"schedule": "uba", "phi": PAPER_DEFAULT_PHI[spec.train.optimizer], "phases": 1,
                "schedule_params": {"eta_min": spec.train.eta_min, "variant": "restart"},
                "arm": UBA_DEFAULT}
    params = {"eta_min": spec.train.eta_min} if "eta_min" in SCHEDULES[name].params else {}
    return {"schedule": name, "schedule_params": params}


def build_comparison(
    spec: StudySpec,
    budget_steps: int,
    best: BestSchedule,
    baselines: Sequence[str],
    seeds: int,
    trainable: Callable[[dict], None],
    sink: StudySink,
    eta_max_grid: Sequence[float] = (),
) -> tune.Tuner:
    """A grid Tuner: (tuned UBA + each baseline) × seeds (× η_max grid for baselines)."""
    base = spec.train.trial_config(budget_steps, spec.seed)
    configs: list[dict[str, Any]] = []
    names = ["uba", *(resolve_baseline(b) for b in baselines)]
    for name in dict.fromkeys(names):
        lrs = [best.eta_max] if name == "uba" else (list(eta_max_grid) or [spec.train.lr])
        for lr in lrs:
            for s in range(seeds):
                configs.append({**_arm(name, spec, best), "lr": lr, "seed": spec.seed + s})
    base["arm_config"] = tune.grid_search(configs)
    wrapped = tune.with_resources(_flatten_arm(trainable), spec.resources.as_ray())
    return tune.Tuner(
        wrapped,
        param_space=base,
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent_trials),
        run_config=tune.RunConfig(
            name=f"compare-{budget_steps}",
            storage_path=spec.storage_path,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=[SinkCallback(sink, budget_steps, kind="compare")],
            verbose=0,
        ),
    )


def _flatten_arm(trainable: Callable[[dict], None]) -> Callable[[dict], None]:
    """The grid varies one ``arm_config`` dict; the trainable reads flat keys."""

    def run(config: dict) -> None:
        arm = config.get("arm_config", {})
        trainable({**{k: v for k, v in config.items() if k != "arm_config"}, **arm})

    run.__name__ = getattr(trainable, "__name__", "trainable")
    return run


def summarize(spec: StudySpec, budget_steps: int, results: tune.ResultGrid) -> list[dict]:
    """Mean ± std of the final metric per arm (the best η_max per baseline by mean), with the
    per-seed values so callers can make paired comparisons."""
    groups: dict[tuple[str, float], dict[int, float]] = defaultdict(dict)
    failures: dict[str, list[str]] = defaultdict(list)
    for r in results:
        cfg = r.config.get("arm_config", r.config)
        name = cfg.get("arm") or cfg["schedule"]
        if r.error is not None:
            failures[name].append(str(r.error).strip().splitlines()[-1][:200])
            continue
        m = r.metrics or {}
        value = m.get(spec.metric)
        if int(m.get("step", 0)) >= budget_steps and value is not None and math.isfinite(value):
            groups[(name, float(cfg["lr"]))][int(cfg["seed"])] = float(value)
    sign = 1 if spec.mode == "max" else -1
    best_per_arm: dict[str, dict] = {}
    for (name, lr), by_seed in groups.items():
        values = [by_seed[s] for s in sorted(by_seed)]
        row = {
            "budget_steps": budget_steps, "schedule": name, "eta_max": lr,
            "seeds": sorted(by_seed), "values": values, "n": len(values),
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
        if name not in best_per_arm or sign * row["mean"] > sign * best_per_arm[name]["mean"]:
            best_per_arm[name] = row
    for name, reasons in failures.items():
        best_per_arm.setdefault(name, {"budget_steps": budget_steps, "schedule": name,
                                       "n": 0, "values": [], "mean": None, "std": None})
        best_per_arm[name]["errors"] = reasons
    return sorted(best_per_arm.values(),
                  key=lambda r: (r["mean"] is None, -sign * (r["mean"] or 0.0)))
