"""Per-step cost of the schedules, relative to torch's ``CosineAnnealingLR``.

Run: ``python bench/schedule_overhead.py`` (a few seconds, one CPU thread). Writes
``bench/results/schedule_overhead.json`` and ``.md``. The issue's budget: one LR value must
cost at most a few microseconds in Python; a scheduler step should cost about what
``CosineAnnealingLR.step()`` costs.

What is timed (``--repeats`` runs of ``--steps`` calls each, per call; the minimum and the
median over the runs are both reported, because one number on a shared CPU is noise):
* ``Schedule.lr(i)`` for UBA (1 and 4 phases) and cosine: the closed form alone;
* ``uba_lr(i, T, ...)``: the validating one-off function (builds its curve per call);
* ``scheduler.step()`` for ``UBALR``, ``ScheduleLR(cosine)`` and ``CosineAnnealingLR`` on an
  SGD optimizer with one and with four param groups (torch's bookkeeping included).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import provenance, provenance_md, sidecar_path  # noqa: E402
from tuning.schedules import UBALR, ScheduleLR, create_schedule, uba_lr  # noqa: E402

log = logging.getLogger(__name__)


def _per_call(fn: Callable[[int], object], n: int, repeats: int) -> list[float]:
    """Mean seconds per call of ``fn(i)`` for ``i`` in ``range(n)``, one value per repeat."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        out.append((time.perf_counter() - t0) / n)
    return out


def _optimizer(groups: int) -> torch.optim.Optimizer:
    ps = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1 / (g + 1)}
          for g in range(groups)]
    return torch.optim.SGD(ps, lr=0.1)


def _step_cost(make: Callable[[torch.optim.Optimizer], object], groups: int, n: int,
               repeats: int) -> list[float]:
    """Mean seconds per ``scheduler.step()`` (no optimizer.step in the loop), per repeat."""
    out = []
    for _ in range(repeats):
        opt = _optimizer(groups)
        sched = make(opt)
        opt.step()  # silence torch's "scheduler before optimizer" warning
        t0 = time.perf_counter()
        for _ in range(n):
            sched.step()
        out.append((time.perf_counter() - t0) / n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    prov = provenance(seeds="n/a (deterministic; timing only)")
    n, r = args.steps, args.repeats

    uba1 = create_schedule("uba", n, phi=5.0, eta_max=0.1)
    uba4 = create_schedule("uba", n, phi=[5.0, 2.0, 1.0, 0.5], phases=4, eta_max=0.1)
    cos = create_schedule("cosine", n, eta_max=0.1)
    per_value = {
        "Schedule.lr uba 1 phase": _per_call(uba1.lr, n, r),
        "Schedule.lr uba 4 phases": _per_call(uba4.lr, n, r),
        "Schedule.lr cosine": _per_call(cos.lr, n, r),
        "uba_lr() one-off": _per_call(
            lambda i: uba_lr(i, n, phi=5.0, eta_max=0.1), n // 10, r),
    }
    per_step: dict[str, dict[str, list[float]]] = {}
    for groups in (1, 4):
        per_step[f"{groups} group(s)"] = {
            "CosineAnnealingLR": _step_cost(lambda o: CosineAnnealingLR(o, T_max=n), groups, n, r),
            "UBALR": _step_cost(lambda o: UBALR(o, total_steps=n, phi=5.0), groups, n, r),
            "ScheduleLR(cosine)": _step_cost(
                lambda o: ScheduleLR(o, create_schedule("cosine", n)), groups, n, r),
        }
    def stat(f: Callable[[list[float]], float]) -> dict[str, Any]:
        step = {g: {k: f(v) * 1e6 for k, v in d.items()} for g, d in per_step.items()}
        return {"per_value_us": {k: f(v) * 1e6 for k, v in per_value.items()},
                "per_step_us": step,
                "step_ratio_vs_cosine_annealing": {
                    g: {k: v / d["CosineAnnealingLR"] for k, v in d.items()}
                    for g, d in step.items()}}

    lo, med = stat(min), stat(statistics.median)
    result = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "steps": n,
        "repeats": r,
        **lo,  # the minimum over repeats (the least disturbed run)
        **{f"{k}_median": v for k, v in med.items()},
        "raw_us": {"per_value": {k: [x * 1e6 for x in v] for k, v in per_value.items()},
                   "per_step": {g: {k: [x * 1e6 for x in v] for k, v in d.items()}
                                for g, d in per_step.items()}},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "schedule_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Schedule overhead",
        "",
        provenance_md(prov),
        f"One thread; {r} runs of {n} calls each; min and median over the runs.",
        "",
        "| one LR value | µs min | µs median |",
        "|---|---|---|",
        *[f"| {k} | {v:.2f} | {med['per_value_us'][k]:.2f} |"
          for k, v in result["per_value_us"].items()],
        "",
        "| scheduler.step() | param groups | µs min | µs median | × CosineAnnealingLR (min) | "
        "× CosineAnnealingLR (median) |",
        "|---|---|---|---|---|---|",
    ]
    for g, d in result["per_step_us"].items():
        for k, v in d.items():
            ratio = result["step_ratio_vs_cosine_annealing"][g][k]
            mr = med["step_ratio_vs_cosine_annealing"][g][k]
            lines.append(f"| {k} | {g.split()[0]} | {v:.2f} | {med['per_step_us'][g][k]:.2f} | "
                         f"{ratio:.2f} | {mr:.2f} |")
    sidecar_path(args.out / "schedule_overhead.md").write_text(json.dumps(prov, indent=2) + "\n")
    (args.out / "schedule_overhead.md").write_text("\n".join(lines) + "\n")
    log.info("\n".join(lines))


if __name__ == "__main__":
    main()
