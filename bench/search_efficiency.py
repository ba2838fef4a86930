"""Search efficiency: phitune's Optuna TPE vs random search vs the paper's φ grid (issue #8,
item 2). Question: how many trials does each need to reach the best metric of the paper's
grid φ ∈ {0.25, 0.5, 1, 2.5, 5, 10} × phases {1, 2} (12 trials)? Goal: ≤ 1/3 of them (4).

Run from the repository root::

    python -m bench.search_efficiency           # CPU size (Fashion-MNIST 3k, MLP), ~10 min
    python -m bench.search_efficiency --smoke   # seconds (digits), used by the test suite

Method (what makes it exact and affordable):

* **One deterministic objective.** Every trial trains the same model on the same data with
  the same training seed; only φ and the phase count change. φ is snapped to the nearest
  point of a fixed log lattice (24 points per decade, ≈ 10 % apart, plus the grid's own
  values) and results are memoised by (snapped φ, phases). So every method sees the same
  numbers, repeated points cost nothing, and "reached the grid's best" is an exact
  comparison of identical runs, not of seed noise.
* **Methods**, each over ``--search-seeds`` sampler seeds:
  ``tpe_phitune`` = phitune's configuration (seeded ``TPESampler`` with
  ``n_startup_trials = min(4, n)``, the paper default φ = 5 with one phase enqueued first,
  exactly :func:`tuning.search.initial_points`); ``tpe_cold`` = the same without the warm
  start; ``random`` = Optuna's ``RandomSampler``. A search stops when it reaches the grid's
  best (≥ for accuracy) or after ``--max-trials``.
* **Two search spaces**: ``grid_span`` (φ ∈ [0.25, 10] log-uniform × phases 1..2, what the
  grid covers) and ``phitune_default`` (φ ∈ [0.1, 50] × phases 1..3: phitune's default before
  it became 0.01–50; the key keeps its name so old result files stay readable).

Superseded by :mod:`bench.search_bench` (issue #11): it counts trials, not compute, and tests
full-budget TPE only; kept for its committed results.
* The grid needs all 12 trials to know its best; that is the yardstick.

Writes ``bench/results/search_efficiency{,_evals}.csv``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch

from bench.common import (
    RESULTS_DIR,
    machine_info,
    new_figure,
    phitune_points,
    phitune_sampler,
    phitune_space,
    phitune_spec,
    provenance_md,
    train_final,
    write_csv,
)
from trainables.registry import get_dataset

logger = logging.getLogger(__name__)

NAME = "search_efficiency"
PAPER_GRID_PHI = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PAPER_GRID_PHASES = (1, 2)
METHODS = ("tpe_phitune", "tpe_cold", "random")
SPACES: dict[str, dict[str, Any]] = {
    "grid_span": dict(phi_min=0.25, phi_max=10.0, phases_min=1, phases_max=2),
    "phitune_default": dict(phi_min=0.1, phi_max=50.0, phases_min=1, phases_max=3),
}
LATTICE_PER_DECADE = 24

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(model="mlp", model_kwargs={"hidden_sizes": (128,)}, dataset="fashion_mnist",
                dataset_kwargs={"subset": 3_000, "val_subset": 3_000}, epochs=3,
                batch_size=64, lr=0.05, train_seed=0, search_seeds=10, max_trials=36),
    "smoke": dict(model="mlp", model_kwargs={"hidden_sizes": (16,)}, dataset="digits",
                  dataset_kwargs={}, epochs=1, batch_size=64, lr=0.05, train_seed=0,
                  search_seeds=2, max_trials=4),
}


def phi_lattice(lo: float = 0.05, hi: float = 100.0) -> list[float]:
    """Log lattice (``LATTICE_PER_DECADE`` per decade) plus the paper's grid values, sorted."""
    k0 = math.floor(LATTICE_PER_DECADE * math.log10(lo))
    k1 = math.ceil(LATTICE_PER_DECADE * math.log10(hi))
    pts = {round(10 ** (k / LATTICE_PER_DECADE), 10) for k in range(k0, k1 + 1)}
    return sorted(pts | set(PAPER_GRID_PHI))


def snap_phi(phi: float, lattice: list[float]) -> float:
    """Nearest lattice point in log distance (the grid's values map to themselves)."""
    i = bisect.bisect_left(lattice, phi)
    cands = lattice[max(0, i - 1): i + 1]
    return min(cands, key=lambda v: abs(math.log(v) - math.log(phi)))


class MemoObjective:
    """The deterministic objective: final validation accuracy of one fixed training run per
    (snapped φ, phases); every call is logged so the table lists each real evaluation once."""

    def __init__(self, base: dict[str, Any], bundle: Any, train_seeds: int = 1) -> None:
        self.base = base
        self.bundle = bundle
        self.seeds = [int(base["seed"]) + i for i in range(train_seeds)]
        self.lattice = phi_lattice()
        self.cache: dict[tuple[float, int], float] = {}
        self.evals: list[dict[str, Any]] = []

    def __call__(self, phi: float, phases: int) -> float:
        key = (snap_phi(float(phi), self.lattice), int(phases))
        if key not in self.cache:
            cfg = {**self.base, "schedule": "uba", "phi": key[0], "phases": key[1],
                   "schedule_params": {"eta_min": 0.0, "variant": "restart"}}
            ms = [train_final({**cfg, "seed": s}, self.bundle) for s in self.seeds]
            acc = statistics.fmean(m["val_accuracy"] for m in ms)
            self.cache[key] = acc
            self.evals.append({"phi": key[0], "phases": key[1], "val_accuracy": acc,
                               "val_loss": statistics.fmean(m["val_loss"] for m in ms),
                               "seconds": sum(m["seconds"] for m in ms)})
        return self.cache[key]


def search(method: str, space_kw: dict[str, Any], seed: int, objective: MemoObjective,
           target: float, max_trials: int, steps: int) -> dict[str, Any]:
    """One search until it reaches ``target`` (or ``max_trials``); trials counted 1-based."""
    spec = phitune_spec("mlp", "data", steps, num_trials=max_trials, seed=seed, **space_kw)
    if method == "random":
        sampler: Any = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = phitune_sampler(spec)
    enqueue = phitune_points(spec) if method == "tpe_phitune" else []
    history: list[float] = []

    def f(params: dict[str, Any]) -> float:
        v = objective(params["phi"], params["phases"])
        history.append(v)
        return v

    # run_optuna has no stop hook; run one trial at a time on a persistent study instead.
    study = _StudyLoop(phitune_space(spec), sampler, enqueue)
    reached = None
    for i in range(1, max_trials + 1):
        v = study.step(f)
        if v >= target - 1e-12:
            reached = i
            break
    return {"trials_to_reach": reached, "n_trials": len(history),
            "best": max(history) if history else math.nan, "first": history[0]}


class _StudyLoop:
    """An Optuna ask/tell study stepped one trial at a time (same loop as
    :func:`bench.common.run_optuna`, which runs a fixed number of trials)."""

    def __init__(self, space: dict[str, Any], sampler: Any, enqueue: list[dict]) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        for point in enqueue:
            self.study.enqueue_trial(dict(point))

    def step(self, objective: Callable[[dict[str, Any]], float]) -> float:
        trial = self.study.ask(dict(self.space))
        value = objective(dict(trial.params))
        self.study.tell(trial, value)
        return value


def run(preset: str, out_dir: Path, *, search_seeds: int | None = None,
        max_trials: int | None = None, train_seeds: int = 1) -> dict[str, Any]:
    """Run every search and write the files; ``train_seeds > 1`` makes the objective the mean
    over that many training seeds (a smoother landscape; files get a ``_seeds<k>`` suffix)."""
    p = dict(PRESETS[preset], train_seeds=train_seeds)
    if search_seeds is not None:
        p["search_seeds"] = search_seeds
    if max_trials is not None:
        p["max_trials"] = max_trials
    t0 = time.perf_counter()
    bundle = get_dataset(p["dataset"], **p["dataset_kwargs"])
    steps = p["epochs"] * (bundle.num_train // p["batch_size"])
    base = {"model": p["model"], "model_kwargs": p["model_kwargs"], "dataset": p["dataset"],
            "optimizer": "sgd", "momentum": 0.9, "lr": p["lr"], "batch_size": p["batch_size"],
            "total_steps": steps, "seed": p["train_seed"], "device": "cpu"}
    objective = MemoObjective(base, bundle, train_seeds)

    grid = [(phi, ph, objective(phi, ph)) for ph in PAPER_GRID_PHASES for phi in PAPER_GRID_PHI]
    grid_best = max(v for _, _, v in grid)
    grid_best_pts = [(phi, ph) for phi, ph, v in grid if v == grid_best]
    logger.info("%s: %d steps; grid best %.4f at %s", preset, steps, grid_best, grid_best_pts)

    rows: list[dict[str, Any]] = []
    for space_name, space_kw in SPACES.items():
        for method in METHODS:
            for seed in range(p["search_seeds"]):
                r = search(method, space_kw, seed, objective, grid_best, p["max_trials"], steps)
                rows.append({"space": space_name, "method": method, "search_seed": seed, **r})
                logger.info("%s %s seed %d: reached in %s (%d evals so far)", space_name,
                            method, seed, r["trials_to_reach"], len(objective.evals))
    wall = time.perf_counter() - t0
    summary = summarise(rows, p["max_trials"])
    suffix = ("" if preset == "cpu" else f"_{preset}") + (
        f"_seeds{train_seeds}" if train_seeds > 1 else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / f"{NAME}{suffix}.csv", rows)
    write_csv(out_dir / f"{NAME}{suffix}_evals.csv", objective.evals)
    plot(objective, grid, rows, p["max_trials"], out_dir / f"{NAME}{suffix}.png")
    (out_dir / f"{NAME}{suffix}.md").write_text(
        markdown(preset, p, bundle, steps, grid, grid_best, summary, objective, wall))
    return {"summary": summary, "grid_best": grid_best, "rows": rows, "wall_s": wall,
            "evals": objective.evals}


def summarise(rows: list[dict[str, Any]], max_trials: int) -> dict[tuple[str, str], dict]:
    """Per (space, method): median/mean trials to reach (unreached = censored at max+1)."""
    out = {}
    for space in SPACES:
        for method in METHODS:
            rs = [r for r in rows if r["space"] == space and r["method"] == method]
            t = [r["trials_to_reach"] for r in rs]
            censored = [x if x is not None else max_trials + 1 for x in t]
            out[(space, method)] = {
                "n": len(rs),
                "median": statistics.median(censored),
                "mean_reached": statistics.fmean([x for x in t if x is not None])
                if any(x is not None for x in t) else math.nan,
                "within_4": sum(x is not None and x <= 4 for x in t),
                "within_12": sum(x is not None and x <= 12 for x in t),
                "reached": sum(x is not None for x in t),
                "values": t,
            }
    return out


def plot(objective: MemoObjective, grid: list[tuple[float, int, float]],
         rows: list[dict[str, Any]], max_trials: int, path: Path) -> None:
    """Left: the objective landscape (every evaluated point; grid points ringed); right: share
    of search seeds that reached the grid's best within k trials."""
    fig, (ax, ax2) = new_figure(12.0, 4.4, ncols=2)
    for ph in sorted({e["phases"] for e in objective.evals}):
        pts = sorted((e["phi"], e["val_accuracy"]) for e in objective.evals if e["phases"] == ph)
        ax.plot([x for x, _ in pts], [100 * y for _, y in pts], ".-", linewidth=0.8,
                label=f"{ph} phase(s)")
    ax.scatter([g[0] for g in grid], [100 * g[2] for g in grid], s=70, facecolors="none",
               edgecolors="k", label="paper grid")
    ax.axhline(100 * max(g[2] for g in grid), color="k", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("φ")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("objective (fixed training seed(s))", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ks = list(range(1, max_trials + 1))
    styles = {"grid_span": "-", "phitune_default": "--"}
    for space in SPACES:
        for method in METHODS:
            t = [r["trials_to_reach"] for r in rows if r["space"] == space
                 and r["method"] == method]
            share = [sum(x is not None and x <= k for x in t) / len(t) for k in ks]
            ax2.step(ks, share, where="post", linestyle=styles[space],
                     label=f"{method} ({space})")
    ax2.axvline(4, color="grey", linestyle=":", linewidth=1)
    ax2.axvline(12, color="k", linestyle=":", linewidth=1)
    ax2.set_xlabel("trials")
    ax2.set_ylabel("share of search seeds at the grid's best")
    ax2.set_title("goal: ≤ 4 trials (1/3 of the 12-trial grid)", fontsize="medium")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, format="png")


def markdown(preset: str, p: dict[str, Any], bundle: Any, steps: int,
             grid: list[tuple[float, int, float]], grid_best: float,
             summary: dict[tuple[str, str], dict], objective: MemoObjective, wall: float) -> str:
    info = machine_info("cpu")
    cmd = "python -m bench.search_efficiency" + ("" if preset == "cpu" else f" --{preset}") + (
        f" --train-seeds {p['train_seeds']}" if p["train_seeds"] > 1 else "")
    n = p["search_seeds"]
    ts = p["train_seeds"]
    seeds_txt = (f"training seed {p['train_seed']} for every trial" if ts == 1 else
                 f"training seeds {p['train_seed']}..{p['train_seed'] + ts - 1} for every "
                 "trial (objective = their mean accuracy)")
    lines = [
        f"# Search efficiency ({preset})\n",
        provenance_md(info, cmd, f"{seeds_txt}; sampler seeds 0..{n - 1} per method"),
        f"Objective: final validation accuracy{' (mean over seeds)' if ts > 1 else ''} of `{p['model']}` {p['model_kwargs']} on "
        f"`{p['dataset']}` {p['dataset_kwargs'] or ''} ({bundle.num_train} train, "
        f"{bundle.num_val} validation), SGD momentum 0.9, η_max = {p['lr']}, batch "
        f"{p['batch_size']}, {steps} steps, UBA restart variant. φ snapped to a log lattice "
        f"({LATTICE_PER_DECADE}/decade + grid values), memoised: {len(objective.evals)} "
        f"distinct training runs in all. Searches stop at the grid's best or after "
        f"{p['max_trials']} trials. Wall time {wall / 60:.1f} min.\n",
        "## The paper's grid (12 trials)\n",
        "| phases \\ φ | " + " | ".join(f"{x:g}" for x in PAPER_GRID_PHI) + " |",
        "|---|" + "---|" * len(PAPER_GRID_PHI),
    ]
    for ph in PAPER_GRID_PHASES:
        cells = []
        for phi in PAPER_GRID_PHI:
            v = next(g[2] for g in grid if g[0] == phi and g[1] == ph)
            cells.append(f"**{100 * v:.2f}**" if v == grid_best else f"{100 * v:.2f}")
        lines.append(f"| {ph} | " + " | ".join(cells) + " |")
    overall = max(e["val_accuracy"] for e in objective.evals)
    best_e = max(objective.evals, key=lambda e: e["val_accuracy"])
    lines += [
        "",
        f"Grid best: {100 * grid_best:.2f} %. Best of all {len(objective.evals)} evaluated "
        f"points: {100 * overall:.2f} % (φ = {best_e['phi']:.3g}, {best_e['phases']} "
        "phase(s)).\n",
        f"## Trials to reach the grid's best ({n} search seeds each; goal ≤ 4)\n",
        "| space | method | median trials | reached ≤ 4 | reached ≤ 12 | reached at all "
        f"(≤ {p['max_trials']}) | per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for (space, method), s in summary.items():
        med = s["median"]
        med_s = f"> {p['max_trials']}" if med > p["max_trials"] else f"{med:g}"
        per_seed = ", ".join("–" if x is None else str(x) for x in s["values"])
        lines.append(f"| {space} | {method} | {med_s} | {s['within_4']}/{s['n']} | "
                     f"{s['within_12']}/{s['n']} | {s['reached']}/{s['n']} | {per_seed} |")
    lines += ["", "`–` = not reached within the trial cap. `tpe_phitune` evaluates φ = 5, one "
              "phase (the paper default) first; when that point is itself the grid's best, "
              "trial 1 reaches it by construction, which is why `tpe_cold` is listed too.\n",
              f"Files: `{NAME}*.csv` (one row per search), `{NAME}*_evals.csv` (every distinct "
              "training run), `.png` (objective landscape; share of seeds at the grid's best "
              "vs trials).\n"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny size (seconds)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--search-seeds", type=int)
    parser.add_argument("--max-trials", type=int)
    parser.add_argument("--train-seeds", type=int, default=1,
                        help="objective = mean accuracy over this many training seeds")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    res = run("smoke" if args.smoke else "cpu", args.out, search_seeds=args.search_seeds,
              max_trials=args.max_trials, train_seeds=args.train_seeds)
    logger.info("done in %.1f s; wrote %s", res["wall_s"], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
