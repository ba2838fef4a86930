"""Does the best (φ, phases) of a smaller budget help the search at the full budget?

phitune runs budgets smallest first and evaluates the previous budget's best as the first point
of the next budget's search (``tuning.study.run_study``). This benchmark measures that choice:
for each search seed, phitune's TPE search at the half budget picks a best point; then at the
full budget we count the trials TPE needs to reach the paper grid's best value, with that
warm start (plus the paper default, as phitune does) and without it (paper default only).

Same deterministic, memoised objective as ``bench/search_efficiency.py`` (final validation
accuracy of one fixed training run per snapped φ and phases), so the two arms see identical
values for identical points. Writes ``bench/results/warm_start.{csv,md,png}``.

    python -m bench.warm_start            # 10 search seeds
    python -m bench.warm_start --smoke    # tiny, for the test suite
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    machine_info,
    new_figure,
    phitune_points,
    phitune_sampler,
    phitune_space,
    phitune_spec,
    provenance_md,
    write_csv,
)
from bench.search_efficiency import (
    PAPER_GRID_PHASES,
    PAPER_GRID_PHI,
    PRESETS,
    SPACES,
    MemoObjective,
    _StudyLoop,
)
from trainables.registry import get_dataset

logger = logging.getLogger(__name__)
NAME = "warm_start"


def best_at_small_budget(objective: MemoObjective, seed: int, n_trials: int,
                         steps: int) -> dict[str, Any]:
    spec = phitune_spec("mlp", "data", steps, num_trials=n_trials, seed=seed,
                        **SPACES["phitune_default"])
    loop = _StudyLoop(phitune_space(spec), phitune_sampler(spec), phitune_points(spec))
    for _ in range(n_trials):
        loop.step(lambda p: objective(p["phi"], p["phases"]))
    best = loop.study.best_trial
    return {"phi": best.params["phi"], "phases": best.params["phases"]}


def trials_to_reach(objective: MemoObjective, seed: int, warm: list[dict[str, Any]],
                    target: float, max_trials: int, steps: int) -> int | None:
    spec = phitune_spec("mlp", "data", steps, num_trials=max_trials, seed=seed,
                        **SPACES["phitune_default"])
    loop = _StudyLoop(phitune_space(spec), phitune_sampler(spec), phitune_points(spec, warm))
    for i in range(1, max_trials + 1):
        if loop.step(lambda p: objective(p["phi"], p["phases"])) >= target - 1e-12:
            return i
    return None


def run(preset: str, out_dir: Path, search_seeds: int | None = None) -> dict[str, Any]:
    p = dict(PRESETS[preset])
    seeds = search_seeds or p["search_seeds"]
    t0 = time.perf_counter()
    bundle = get_dataset(p["dataset"], **p["dataset_kwargs"])
    full = p["epochs"] * (bundle.num_train // p["batch_size"])
    half = full // 2
    base = {"model": p["model"], "model_kwargs": p["model_kwargs"], "dataset": p["dataset"],
            "optimizer": "sgd", "momentum": 0.9, "lr": p["lr"], "batch_size": p["batch_size"],
            "seed": p["train_seed"], "device": "cpu"}
    obj_half = MemoObjective({**base, "total_steps": half}, bundle)
    obj_full = MemoObjective({**base, "total_steps": full}, bundle)
    grid = [obj_full(phi, ph) for ph in PAPER_GRID_PHASES for phi in PAPER_GRID_PHI]
    target = max(grid)
    small_trials = max(4, p["max_trials"] // 3)
    rows = []
    for seed in range(seeds):
        warm = best_at_small_budget(obj_half, seed, small_trials, half)
        with_ws = trials_to_reach(obj_full, seed, [warm], target, p["max_trials"], full)
        cold = trials_to_reach(obj_full, seed, [], target, p["max_trials"], full)
        rows.append({"search_seed": seed, "half_budget_best_phi": warm["phi"],
                     "half_budget_best_phases": warm["phases"],
                     "warm_start_value_at_full": obj_full(warm["phi"], warm["phases"]),
                     "trials_with_warm_start": with_ws, "trials_without": cold})
        logger.info("seed %d: warm %s -> %s trials, cold %s", seed, warm, with_ws, cold)
    wall = time.perf_counter() - t0
    cap = p["max_trials"] + 1
    med = {k: statistics.median(r[k] if r[k] is not None else cap for r in rows)
           for k in ("trials_with_warm_start", "trials_without")}
    suffix = "" if preset == "cpu" else f"_{preset}"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / f"{NAME}{suffix}.csv", rows)
    fig, ax = new_figure(6.0, 3.4)
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["trials_with_warm_start"] or cap for r in rows], 0.4,
           label="warm start from the half budget")
    ax.bar([x + 0.2 for x in xs], [r["trials_without"] or cap for r in rows], 0.4,
           label="paper default only")
    ax.set_xlabel("search seed")
    ax.set_ylabel(f"trials to reach grid best (cap {cap})")
    ax.legend(fontsize=8)
    fig.savefig(out_dir / f"{NAME}{suffix}.png", dpi=110, bbox_inches="tight")
    info = machine_info()
    table = "".join(
        f"| {r['search_seed']} | {r['half_budget_best_phi']:.3g} / {r['half_budget_best_phases']}"
        f" | {r['warm_start_value_at_full'] * 100:.2f} | {r['trials_with_warm_start'] or '–'} | "
        f"{r['trials_without'] or '–'} |\n" for r in rows)
    (out_dir / f"{NAME}{suffix}.md").write_text(
        "# Warm start across budgets\n\n"
        + provenance_md(info, f"python -m bench.warm_start{'' if preset == 'cpu' else ' --smoke'}",
                        f"training seed {p['train_seed']}; search seeds 0..{seeds - 1}")
        + f"\nObjective as in `search_efficiency.md` ({p['model']} on {p['dataset']} "
        f"{p['dataset_kwargs']}, SGD, η_max = {p['lr']}); half budget {half} steps, full "
        f"budget {full} steps, φ ∈ [0.1, 50] (phitune's default before 0.01–50), phases 1–3. "
        f"At the half "
        f"budget phitune's TPE runs {small_trials} trials; at the full budget each arm searches "
        f"until it reaches the paper grid's best ({target * 100:.2f} %) or {p['max_trials']} "
        f"trials. Wall time {wall:.0f} s.\n\n"
        f"Median trials to reach the grid's best: **{med['trials_with_warm_start']}** with the "
        f"warm start vs **{med['trials_without']}** without (unreached counted as {cap}).\n\n"
        "| seed | half-budget best φ / phases | its accuracy at full budget (%) | trials with "
        "warm start | trials without |\n|---|---|---|---|---|\n" + table)
    return {"rows": rows, "median": med, "target": target}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--search-seeds", type=int)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.set_num_threads(1)
    out = run("smoke" if args.smoke else "cpu", Path(args.out), args.search_seeds)
    print(f"median trials: {out['median']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
