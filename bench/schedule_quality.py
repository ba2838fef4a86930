"""Schedule quality on real data: tuned UBA vs the paper's baselines and UBA at the paper's
default φ, at 25 / 50 / 100 % of a full budget, over several seeds (issue #8, item 1).

Run from the repository root::

    python -m bench.schedule_quality            # CPU size (Fashion-MNIST 10k, MLP), ~10 min
    python -m bench.schedule_quality --smoke    # seconds (digits), used by the test suite
    python -m bench.schedule_quality --preset gpu   # ResNet-18, full Fashion-MNIST, CUDA

Protocol (what makes the comparison fair, and what does not):

* Every arm uses the **same η_max** (``--lr``), optimizer (SGD, momentum 0.9), model, data,
  batch size and number of steps; baselines use the registry's default shape parameters
  (step: ×0.1 at 50 % and 75 %; CLR = one triangular cycle; OneCycle: torch defaults;
  REX β = 1), as in the paper's Table 1 family.
* Budgets are 25 / 50 / 100 % of the full step count, each **trained from scratch** (the UBA
  curve depends on T; paper §4.1).
* **Tuned UBA**: per budget, a small Optuna TPE study with phitune's configuration (its search
  space: φ log-uniform over ``tuning.specs.SearchSpace``'s default range (0.01–50 now; the
  committed results were made with the earlier [0.1, 50]) × phases 1..3, restart variant, seeded TPE, paper default
  φ = 5 enqueued first, the previous budget's best enqueued as warm start, as
  ``tuning.study`` does) directly on :func:`trainables.loop.run_training` (no Ray, no ASHA:
  every tuning trial runs its whole budget). Tuning trains on the training subset minus a
  held-out part and scores on that held-out part with a separate seed; the arms are then
  compared on the **test set**, on seeds never used for tuning. Only UBA gets tuning trials;
  the baselines get none (the question is what phitune's tuning buys over fixed schedules).
* Each arm × seed pair shares init and batch order (seed = ``run_training``'s ``seed``), so
  the per-seed differences are paired (:func:`bench.common.paired`).

Writes ``bench/results/schedule_quality{,_tuning}.csv``, ``.md`` and ``.png``
(``_smoke``/``_gpu`` suffixes for the other presets).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from bench.common import (
    RESULTS_DIR,
    holdout_split,
    machine_info,
    mean_std,
    new_figure,
    paired,
    phitune_points,
    phitune_sampler,
    phitune_space,
    phitune_spec,
    provenance_md,
    run_optuna,
    train_final,
    write_csv,
)
from trainables.registry import get_dataset

logger = logging.getLogger(__name__)

NAME = "schedule_quality"
#: Arms in table order; "uba_tuned" and "uba_default" are UBA, the rest registry baselines.
ARMS = ("uba_tuned", "uba_default", "cosine", "step", "linear", "rex", "onecycle", "triangular")
LABELS = {"uba_tuned": "UBA tuned", "uba_default": "UBA φ=5 (paper default)",
          "triangular": "CLR (triangular)", "onecycle": "OneCycle", "step": "step",
          "cosine": "cosine", "linear": "linear", "rex": "REX"}
TUNE_SEED = 1000  # training seed of the tuning trials (never an evaluation seed)

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(model="mlp", model_kwargs={}, dataset="fashion_mnist",
                dataset_kwargs={"subset": 10_000}, holdout=2_000, full_epochs=8,
                batch_size=128, lr=0.05, weight_decay=0.0, seeds=5, tune_trials=10,
                budgets=(0.25, 0.5, 1.0), device="cpu"),
    "smoke": dict(model="mlp", model_kwargs={"hidden_sizes": (32,)}, dataset="digits",
                  dataset_kwargs={}, holdout=300, full_epochs=2, batch_size=64, lr=0.05,
                  weight_decay=0.0, seeds=2, tune_trials=3, budgets=(0.25, 0.5, 1.0),
                  device="cpu"),
    # Issue #8's GPU configuration: ResNet-18 (CIFAR stem) on the largest real image set
    # available offline (full Fashion-MNIST; CIFAR-10 is not packaged here).
    "gpu": dict(model="resnet18", model_kwargs={"stem": "cifar"}, dataset="fashion_mnist",
                dataset_kwargs={}, holdout=5_000, full_epochs=10, batch_size=256, lr=0.1,
                weight_decay=5e-4, seeds=3, tune_trials=12, budgets=(0.25, 0.5, 1.0),
                device="cuda"),
}


def arm_config(arm: str, best: dict[str, Any] | None) -> dict[str, Any]:
    """Trial-config overrides of one arm (all arms: η_min = 0, same η_max)."""
    if arm == "uba_tuned":
        assert best is not None
        return {"schedule": "uba", "phi": best["phi"], "phases": best["phases"],
                "schedule_params": {"eta_min": 0.0, "variant": "restart"}}
    if arm == "uba_default":
        return {"schedule": "uba", "phi": 5.0, "phases": 1,
                "schedule_params": {"eta_min": 0.0, "variant": "restart"}}
    params = {"eta_min": 0.0} if arm in ("cosine", "linear", "rex", "triangular") else {}
    return {"schedule": arm, "schedule_params": params}


def run(preset: str, out_dir: Path, *, seeds: int | None = None, tune_trials: int | None = None,
        full_epochs: int | None = None, lr: float | None = None,
        lr_grid: tuple[float, ...] | None = None) -> dict[str, Any]:
    """Run the benchmark and write its files; returns the summary (also used by the test).

    A non-default ``lr`` (η_max of every arm) adds ``_lr<value>`` to the file names, so an
    η_max sensitivity run sits next to the main result instead of replacing it.

    ``lr_grid`` tunes η_max for *every* arm on the held-out split (files ``_tunedlr``): each
    baseline (and UBA at the paper default) takes the best η_max of the grid; phitune's study
    searches η_max log-uniformly over the grid's range together with φ and phases.
    """
    p = dict(PRESETS[preset])
    lr_suffix = ""
    if lr is not None and lr != p["lr"]:
        p["lr"] = lr
        lr_suffix = f"_lr{lr:g}"
    if lr_grid:
        lr_suffix += "_tunedlr"
    if seeds is not None:
        p["seeds"] = seeds
    if tune_trials is not None:
        p["tune_trials"] = tune_trials
    if full_epochs is not None:
        p["full_epochs"] = full_epochs
    t_start = time.perf_counter()
    bundle = get_dataset(p["dataset"], **p["dataset_kwargs"])
    tune_bundle = holdout_split(bundle, p["holdout"])
    steps_per_epoch = bundle.num_train // p["batch_size"]
    full_steps = p["full_epochs"] * steps_per_epoch
    budgets = [max(1, round(f * full_steps)) for f in p["budgets"]]
    base = {"model": p["model"], "model_kwargs": p["model_kwargs"], "dataset": p["dataset"],
            "optimizer": "sgd", "momentum": 0.9, "lr": p["lr"],
            "weight_decay": p["weight_decay"], "batch_size": p["batch_size"],
            "device": p["device"]}
    logger.info("%s: %d train / %d test, full budget %d steps, budgets %s", preset,
                bundle.num_train, bundle.num_val, full_steps, budgets)

    rows: list[dict[str, Any]] = []
    tune_rows: list[dict[str, Any]] = []
    best_by_budget: dict[int, dict[str, Any]] = {}
    warm: list[dict[str, Any]] = []
    for frac, steps in zip(p["budgets"], budgets, strict=True):
        spec = phitune_spec(p["model"], p["dataset"], steps, lr=p["lr"],
                            num_trials=p["tune_trials"], seed=0,
                            eta_max_range=(min(lr_grid), max(lr_grid)) if lr_grid else None)

        def objective(params: dict[str, Any], steps: int = steps) -> float:
            cfg = {**base, "total_steps": steps, "seed": TUNE_SEED, "schedule": "uba",
                   "phi": params["phi"], "phases": params["phases"],
                   "lr": params.get("lr", base["lr"]),
                   "schedule_params": {"eta_min": 0.0, "variant": "restart"}}
            return train_final(cfg, tune_bundle)["val_accuracy"]

        trials = run_optuna(objective, phitune_space(spec), phitune_sampler(spec),
                            p["tune_trials"], enqueue=phitune_points(spec, warm))
        finite = [(prm, v) for prm, v in trials if math.isfinite(v)]
        best_params, best_val = max(finite, key=lambda t: t[1])
        best = {"phi": float(best_params["phi"]), "phases": int(best_params["phases"]),
                "lr": float(best_params.get("lr", base["lr"])), "holdout_accuracy": best_val}
        best_by_budget[steps] = best
        warm = [{k: best[k] for k in ("phi", "phases", "lr")}]
        for i, (prm, v) in enumerate(trials):
            tune_rows.append({"budget_fraction": frac, "budget_steps": steps,
                              "arm": "uba_tuned", "trial": i, "phi": prm["phi"],
                              "phases": prm["phases"], "lr": prm.get("lr", base["lr"]),
                              "holdout_val_accuracy": v})
        arm_lr = {arm: base["lr"] for arm in ARMS} | {"uba_tuned": best["lr"]}
        for arm in ARMS[1:] if lr_grid else ():
            scores = {}
            for i, lr_i in enumerate(lr_grid or ()):
                cfg = {**base, **arm_config(arm, best), "lr": lr_i, "total_steps": steps,
                       "seed": TUNE_SEED}
                scores[lr_i] = train_final(cfg, tune_bundle)["val_accuracy"]
                tune_rows.append({"budget_fraction": frac, "budget_steps": steps, "arm": arm,
                                  "trial": i, "lr": lr_i, "holdout_val_accuracy": scores[lr_i]})
            arm_lr[arm] = max(scores, key=lambda k: scores[k] if math.isfinite(scores[k])
                              else -1.0)
        best["arm_lr"] = arm_lr
        logger.info("budget %d: tuned phi=%.3g phases=%d (holdout acc %.4f)", steps,
                    best["phi"], best["phases"], best_val)

        for arm in ARMS:
            for seed in range(p["seeds"]):
                cfg = {**base, **arm_config(arm, best), "lr": arm_lr[arm],
                       "total_steps": steps, "seed": seed}
                m = train_final(cfg, bundle)
                rows.append({"budget_fraction": frac, "budget_steps": steps, "arm": arm,
                             "seed": seed, "phi": cfg.get("phi", ""),
                             "phases": cfg.get("phases", ""), "lr": arm_lr[arm],
                             "test_accuracy": m["val_accuracy"], "test_loss": m["val_loss"],
                             "train_loss": m.get("train_loss", math.nan),
                             "seconds": m["seconds"]})
    wall = time.perf_counter() - t_start
    summary = summarise(rows, budgets)
    suffix = ("" if preset == "cpu" else f"_{preset}") + lr_suffix
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / f"{NAME}{suffix}.csv", rows)
    write_csv(out_dir / f"{NAME}{suffix}_tuning.csv", tune_rows)
    plot(rows, budgets, best_by_budget, out_dir / f"{NAME}{suffix}.png", base["lr"])
    extra = (f" --lr {p['lr']:g}" if lr is not None and lr != PRESETS[preset]["lr"] else "") + (
        " --lr-grid " + ",".join(f"{x:g}" for x in lr_grid) if lr_grid else "")
    md = markdown(preset, p, bundle, full_steps, budgets, best_by_budget, summary, wall,
                  extra_args=extra, lr_grid=lr_grid)
    (out_dir / f"{NAME}{suffix}.md").write_text(md)
    return {"summary": summary, "best": best_by_budget, "rows": rows, "tune_rows": tune_rows,
            "wall_s": wall}


def summarise(rows: list[dict[str, Any]], budgets: list[int]) -> dict[int, dict[str, Any]]:
    """Per budget: mean ± std of each arm, and tuned UBA paired against every other arm."""
    acc: dict[tuple[int, str], dict[int, float]] = defaultdict(dict)
    for r in rows:
        acc[(r["budget_steps"], r["arm"])][r["seed"]] = r["test_accuracy"]
    out: dict[int, dict[str, Any]] = {}
    for steps in budgets:
        per_arm = {arm: [acc[(steps, arm)][s] for s in sorted(acc[(steps, arm)])]
                   for arm in ARMS}
        stats = {arm: mean_std(v) for arm, v in per_arm.items()}
        ranked = sorted(ARMS, key=lambda a: -stats[a][0])
        out[steps] = {
            "mean_std": stats,
            "paired_vs_tuned": {arm: paired(per_arm["uba_tuned"], per_arm[arm])
                                for arm in ARMS if arm != "uba_tuned"},
            "rank": ranked,
        }
    return out


def plot(rows: list[dict[str, Any]], budgets: list[int], best: dict[int, dict[str, Any]],
         path: Path, lr: float) -> None:
    """Left: test accuracy (mean ± std over seeds) per arm and budget; right: the LR curves
    of the full budget (tuned UBA in bold)."""
    from tuning.schedules import create_schedule

    fig, (ax, ax2) = new_figure(12.0, 4.4, ncols=2)
    width = 0.8 / len(budgets)
    for j, steps in enumerate(budgets):
        means, stds = [], []
        for arm in ARMS:
            vals = [r["test_accuracy"] for r in rows
                    if r["budget_steps"] == steps and r["arm"] == arm]
            m, s = mean_std(vals)
            means.append(100 * m)
            stds.append(100 * s)
        xs = [i + (j - (len(budgets) - 1) / 2) * width for i in range(len(ARMS))]
        ax.errorbar(xs, means, yerr=stds, fmt="o", capsize=3, label=f"{steps} steps")
    ax.set_xticks(range(len(ARMS)))
    ax.set_xticklabels([LABELS[a] for a in ARMS], rotation=35, ha="right", fontsize="small")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    steps = budgets[-1]
    for arm in ARMS:
        cfg = arm_config(arm, best[steps])
        params = {**cfg["schedule_params"], "eta_max": best[steps].get("arm_lr", {}).get(arm, lr)}
        if cfg["schedule"] == "uba":
            params.update(phi=cfg["phi"], phases=cfg["phases"])
        values = create_schedule(cfg["schedule"], steps, **params).values()
        ax2.plot(range(steps), values, label=LABELS[arm],
                 linewidth=2.6 if arm == "uba_tuned" else 1.2)
    ax2.set_xlabel("step")
    ax2.set_ylabel("learning rate")
    ax2.set_title(f"schedules at the full budget ({steps} steps)", fontsize="medium")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, format="png")


def markdown(preset: str, p: dict[str, Any], bundle: Any, full_steps: int, budgets: list[int],
             best: dict[int, dict[str, Any]], summary: dict[int, dict[str, Any]],
             wall: float, extra_args: str = "",
             lr_grid: tuple[float, ...] | None = None) -> str:
    info = machine_info(p["device"])
    lr_text = (f"η_max = {p['lr']} for every arm" if not lr_grid else
               f"η_max tuned for every arm on the held-out split (baselines and UBA φ=5: best "
               f"of {list(lr_grid)}; tuned UBA: searched log-uniformly in "
               f"[{min(lr_grid)}, {max(lr_grid)}] with φ and phases)")
    cmd = "python -m bench.schedule_quality" + (
        "" if preset == "cpu" else f" --preset {preset}") + extra_args
    seeds = (f"evaluation seeds 0..{p['seeds'] - 1} (init + batch order, shared by all arms); "
             f"tuning seed {TUNE_SEED}, TPE sampler seed 0")
    lines = [
        f"# Schedule quality ({preset})\n",
        provenance_md(info, cmd, seeds),
        f"Setup: `{p['model']}` {p['model_kwargs'] or ''} on `{p['dataset']}` "
        f"{p['dataset_kwargs'] or ''} ({bundle.num_train} train, {bundle.num_val} test), SGD "
        f"momentum 0.9, {lr_text}, η_min = 0, weight decay "
        f"{p['weight_decay']}, batch {p['batch_size']}; full budget {p['full_epochs']} epochs "
        f"= {full_steps} steps; budgets {budgets} steps (25/50/100 %), each from scratch. "
        f"Tuned UBA: {p['tune_trials']} Optuna TPE trials per budget with phitune's search "
        f"configuration, trained on {bundle.num_train - p['holdout']} training examples and "
        f"scored on {p['holdout']} held-out training examples (the test set is not used for "
        f"tuning). Wall time {wall / 60:.1f} min.\n",
        "## Test accuracy, mean ± std over seeds (%)\n",
        "| arm | " + " | ".join(f"{b} steps" for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    for arm in ARMS:
        cells = []
        for b in budgets:
            m, s = summary[b]["mean_std"][arm]
            bold = summary[b]["rank"][0] == arm
            cell = f"{100 * m:.2f} ± {100 * s:.2f}"
            cells.append(f"**{cell}**" if bold else cell)
        lines.append(f"| {LABELS[arm]} | " + " | ".join(cells) + " |")
    lines += ["", "Tuned (φ, phases) per budget: " + ", ".join(
        f"{b}: φ={best[b]['phi']:.3g}, {best[b]['phases']} phase(s) (held-out acc "
        f"{100 * best[b]['holdout_accuracy']:.2f} %)" for b in budgets) + "."
        + _edge_note(best, budgets) + "\n",
        *(_lr_table(best, budgets) if lr_grid else []),
        "## Paired per seed: tuned UBA − arm (accuracy points; wins/ties/losses of tuned UBA; "
        "exact sign-flip p)\n",
        "| vs | " + " | ".join(f"{b} steps" for b in budgets) + " |",
        "|---|" + "---|" * len(budgets)]
    for arm in ARMS[1:]:
        lines.append(f"| {LABELS[arm]} | " + " | ".join(
            summary[b]["paired_vs_tuned"][arm].fmt() for b in budgets) + " |")
    n = summary[budgets[0]]["paired_vs_tuned"]["cosine"].n
    lines += ["", f"With {n} seeds the smallest possible two-sided p is 2/2^{n} = "
              f"{2 / 2 ** n:.3g}: 'p = {2 / 2 ** n:.3g}' means every seed agreed.\n"]
    lines += ["Rank by mean test accuracy: " + "; ".join(
        f"{b} steps: " + " > ".join(LABELS[a] for a in summary[b]["rank"][:4]) + " > …"
        for b in budgets) + ".\n",
        f"Files: `{NAME}*.csv` (one row per arm × budget × seed), `{NAME}*_tuning.csv` "
        "(every tuning trial), `.png` (accuracy per arm; LR curves at the full budget).\n"]
    return "\n".join(lines)


def _lr_table(best: dict[int, dict[str, Any]], budgets: list[int]) -> list[str]:
    """η_max each arm used per budget (chosen on the held-out split)."""
    out = ["η_max chosen on the held-out split:\n",
           "| arm | " + " | ".join(f"{b} steps" for b in budgets) + " |",
           "|---|" + "---|" * len(budgets)]
    for arm in ARMS:
        out.append(f"| {LABELS[arm]} | " + " | ".join(
            f"{best[b]['arm_lr'][arm]:.3g}" for b in budgets) + " |")
    return [*out, ""]


def _edge_note(best: dict[int, dict[str, Any]], budgets: list[int]) -> str:
    """Say so when a tuned φ sits near the edge of the search range (SearchSpace's default):
    the optimum may lie outside it."""
    from tuning.specs import SearchSpace

    lo, hi = SearchSpace().phi_min, SearchSpace().phi_max
    edge = [b for b in budgets if best[b]["phi"] < lo * 1.25 or best[b]["phi"] > hi / 1.25]
    if not edge:
        return ""
    return (f" Note: the tuned φ at {edge} steps is within 25 % of the search range's edge "
            f"(φ ∈ [{lo:g}, {hi:g}]); the best φ may lie beyond it (φ → 0 is a constant LR).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--smoke", action="store_true", help="= --preset smoke (seconds)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--tune-trials", type=int)
    parser.add_argument("--full-epochs", type=int)
    parser.add_argument("--lr", type=float, help="η_max of every arm (default: the preset's)")
    parser.add_argument("--lr-grid", type=lambda v: tuple(float(x) for x in v.split(",")),
                        help="tune η_max of every arm on the held-out split, e.g. "
                             "0.025,0.05,0.1,0.2 (files get a _tunedlr suffix)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    preset = "smoke" if args.smoke else args.preset
    res = run(preset, args.out, seeds=args.seeds, tune_trials=args.tune_trials,
              full_epochs=args.full_epochs, lr=args.lr, lr_grid=args.lr_grid)
    logger.info("done in %.1f s; wrote %s", res["wall_s"], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
