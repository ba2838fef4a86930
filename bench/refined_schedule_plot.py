"""A refined schedule over the gradient norms it came from (issue 21's plot).

Refinement (Defazio, Cutkosky, Mehta, Mishchenko, 2023) reads the per-update gradient norms
of one run and returns a schedule for the same budget. This trains the paper's source run — a
linear-decay run — on two of the bench's tasks (an MLP on Fashion-MNIST with SGD: ℓ2 norms;
a character transformer on Shakespeare with AdamW: ℓ1 norms), records its norms the way every
phitune trial does (:mod:`trainables.grad_norms`), and plots the raw norms, the median-smoothed
norms the formula uses, and the refined schedule (``create_schedule("refined", ...)``) next to
the linear decay it refines. The numbers that describe each refined shape (where it peaks,
how much of the budget it spends above half its peak) are computed from the curve.

    python -m bench.refined_schedule_plot            # ~1 min on 2 CPUs
    python -m bench.refined_schedule_plot --smoke    # digits, seconds (the test suite)

Writes ``bench/results/refined_schedule.{csv,md,png}`` (+ provenance).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch

from bench.common import RESULTS_DIR, new_figure, provenance, write_csv, write_markdown
from bench.phi_corpus import SMOKE_TASKS, TASKS, Task
from trainables.grad_norms import GRAD_NORMS, GradNorms
from trainables.loop import run_training
from tuning.schedules import create_schedule
from tuning.schedules._refined import DEFAULT_WINDOW_FRAC, median_smooth

logger = logging.getLogger(__name__)

NAME = "refined_schedule"
CPU_TASKS = ("mlp-fmnist", "charlm-shakespeare")


def source_run(task: Task) -> tuple[GradNorms, float]:
    """The task's linear-decay run at its reference lr (seed 0): its recorded norms and lr."""
    optimizer = next(iter(task.optimizers))
    cfg = {**task.train_config(optimizer, "cpu"), "schedule": "linear", "phi": None,
           "phases": None, "total_steps": task.full_steps, "seed": 0, "checkpoint_every": -1}
    cfg["eval_every"] = task.full_steps
    metrics = run_training(cfg, lambda m, s: None)
    norms = GradNorms.from_metrics(metrics)
    if norms is None:
        raise RuntimeError(f"{task.name}: the run reported no {GRAD_NORMS}")
    return norms, float(cfg["lr"])


def describe(curve: np.ndarray) -> dict[str, float]:
    """Where the refined curve peaks and how much of the run it holds above half its peak."""
    peak = int(np.argmax(curve))
    return {"peak_at": (peak + 1) / len(curve),
            "above_half": float(np.mean(curve >= 0.5 * curve.max()))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="digits, a few seconds")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    info = provenance(command="python -m bench.refined_schedule_plot " + " ".join(
        argv if argv is not None else sys.argv[1:]), seeds="training seed 0")
    tasks = list(SMOKE_TASKS.values()) if args.smoke else [TASKS[n] for n in CPU_TASKS]
    suffix = "_smoke" if args.smoke else ""
    rows, summary = [], []
    fig, axes = new_figure(5.0 * len(tasks), 6.4, ncols=len(tasks))
    axes = [axes] if len(tasks) == 1 else list(axes)
    for ax, task in zip(axes, tasks, strict=True):
        norms, lr = source_run(task)
        g = np.asarray(norms.per_step(), dtype=np.float64)
        width = max(1, round(DEFAULT_WINDOW_FRAC * len(g)))
        width += 1 - width % 2  # odd, as the schedule makes it
        smooth = median_smooth(g, width)
        params = norms.schedule_params()
        refined = np.asarray(create_schedule("refined", norms.total_steps, eta_max=lr,
                                             **params).values())
        linear = np.asarray(create_schedule("linear", norms.total_steps, eta_max=lr).values())
        for t in range(len(g)):
            rows.append({"task": task.name, "step": t + 1, "norm": norms.norm,
                         "grad_norm": g[t], "smoothed": smooth[t], "refined_lr": refined[t],
                         "linear_lr": linear[t]})
        d = describe(refined)
        summary.append((task, norms, lr, d, g))
        steps = np.arange(1, len(g) + 1)
        ax.plot(steps, g / g.max(), color="0.7", linewidth=0.6, label=f"{norms.norm} grad norm")
        ax.plot(steps, smooth / g.max(), color="C0", label=f"median-smoothed ({width} steps)")
        ax.set_ylabel("norm / max norm")
        twin = ax.twinx()
        twin.plot(steps, refined, color="C3", label=f"refined ({params['optimizer']})")
        twin.plot(steps, linear, color="C2", linestyle="--", label="linear (source)")
        twin.set_ylabel("learning rate")
        ax.set_xlabel("update")
        ax.set_title(f"{task.name}: refined from a linear run", fontsize="medium")
        lines = ax.get_lines() + twin.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize="x-small", loc="upper right")
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / f"{NAME}{suffix}.png", format="png")
    write_csv(args.out / f"{NAME}{suffix}.csv", rows)
    body = ["The source run is linear decay at the task's reference lr (seed 0, full budget); "
            "its per-update gradient norms are those every phitune trial records. Refined: "
            "median filter 10 % of the run wide, w = Ĝ⁻² (SGD) or Ĝ⁻¹ (Adam), η_t ∝ w_t·Σ_{p>t} "
            "w_p, peak = the source lr.\n",
            "| task | optimizer (norm) | steps | first / last smoothed norm | refined peaks at | "
            "refined ≥ ½ peak for |", "|---|---|---|---|---|---|"]
    for task, norms, _lr, d, g in summary:
        w = max(1, round(DEFAULT_WINDOW_FRAC * len(g)))
        sm = median_smooth(g, w + 1 - w % 2)
        body.append(f"| {task.name} | {next(iter(task.optimizers))} ({norms.norm}) | "
                    f"{norms.total_steps} | {sm[0] / sm[-1]:.2f}× | {d['peak_at']:.0%} of the "
                    f"run | {d['above_half']:.0%} of the run |")
    body.append("")
    for task, _norms, _lr, d, _g in summary:
        shape = (f"a warmup: the refined lr rises to its peak at {d['peak_at']:.0%} of the run"
                 if d["peak_at"] > 0.02 else "no warmup (it starts at its peak)")
        body.append(f"- {task.name}: {shape}; it stays above half its peak for "
                    f"{d['above_half']:.0%} of the run (linear decay: 50 %).")
    write_markdown(args.out / f"{NAME}{suffix}.md",
                   "# A refined schedule over the gradient norms it came from\n", info,
                   "\n".join(body) + "\n")
    logger.info("wrote %s", args.out)
    return 0 if all(math.isfinite(r["refined_lr"]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
