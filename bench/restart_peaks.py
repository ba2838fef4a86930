"""How many phases, and the η_max after a restart: the measurement behind the search's default.

Issue 20 leaves two design choices to measurement: how many phases the default search tries,
and whether UBA's restart variant wants a lower peak after a restart. phitune's staged design
(:mod:`tuning.proposer`) tries one phase in its first ladder iteration and leaves phases > 1
to the model-based refinement; this bench tests that choice on the quality bench's three tasks.

Method, per task at its full budget T (:data:`bench.phi_corpus.CORE_TASKS`):

* **η_max**: the one searched UBA picked at T in the committed quality bench
  (``schedule_quality_<task>.csv``), and √2× either side of it, so a multi-phase schedule is
  not judged at a peak that suits one phase only.
* **Shapes**: UBA restart variant at the search's neutral φ (:data:`tuning.proposer.NEUTRAL_PHI`),
  one phase; and 2 and 3 phases with ``peak_decay`` 1, 0.5 and 0.25 (phase k peaks at
  η_max · peak_decay^(k−1), the paper's step schedule is 0.5; TensorFlow calls it ``m_mul``).
* **Objective**: the product's tuning objective (``val_loss``) on the quality bench's tuning
  half of the validation set, seeds 0..n−1 (shared init and batch order: paired); the
  task's metric on the same half beside it. Each (shape, η_max) is scored by its seed mean,
  each shape by its best η_max (what a search over η_max would find).
* **Resumable**: one CSV row per run, appended as runs finish; ``--task`` runs one task.

Also read: the φ corpus's one- vs two-phase grid (``phi_corpus.csv``, mlp-fmnist, SGD and
AdamW at 25/50/100 %: the same η_max, every φ), the second source for the phase count.

Run from the repository root::

    python -m bench.restart_peaks                 # ~15 min on 2 cores (2 workers)
    python -m bench.restart_peaks --task mlp-fmnist
    python -m bench.restart_peaks --report        # only the markdown from the CSV
    python -m bench.restart_peaks --smoke --out /tmp/rp   # seconds, used by the tests

Writes ``bench/results/restart_peaks.{csv,md}`` (+ ``.provenance.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import multiprocessing as mp
import statistics
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.common import (
    finish_provenance,
    paired,
    provenance,
    read_csv,
    sidecar_path,
    train_final,
    write_markdown,
)
from bench.phi_corpus import CORE_TASKS, SMOKE_TASKS, TASKS, Task, load_splits
from tuning.proposer import NEUTRAL_PHI

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().with_name("results")
NAME = "restart_peaks"
OBJECTIVE = "val_loss"
PHASES = (2, 3)
PEAK_DECAYS = (1.0, 0.5, 0.25)
ETA_FACTORS = (2 ** -0.5, 1.0, 2 ** 0.5)
COLUMNS = ("task", "metric", "steps", "phases", "peak_decay", "eta_factor", "lr", "seed",
           "objective", "metric_value", "seconds")


@dataclass(frozen=True)
class Run:
    """One training run of the grid."""

    task: str
    steps: int
    phases: int
    peak_decay: float
    eta_factor: float
    lr: float
    seed: int

    def key(self) -> tuple[str, int, int, str, str, int]:
        return _key(self.task, self.steps, self.phases, self.peak_decay, self.eta_factor,
                    self.seed)


def _key(task: str, steps: int, phases: int, peak_decay: float, eta_factor: float,
         seed: int) -> tuple[str, int, int, str, str, int]:
    """A run's identity, the same whether built from a :class:`Run` or read from a CSV row
    (floats formatted, so 0.7071 read back equals 2**-0.5 planned)."""
    return (task, steps, phases, f"{peak_decay:g}", f"{eta_factor:.4f}", seed)


def shapes() -> list[tuple[int, float]]:
    """(phases, peak_decay) of the grid: one phase once, then every multi-phase pair."""
    return [(1, 1.0)] + [(k, d) for k in PHASES for d in PEAK_DECAYS]


def uba_pick_lr(task: Task, steps: int, results: Path) -> float:
    """η_max searched UBA picked at ``steps`` in the committed quality bench (the task's lr
    when that file has no such row, e.g. the smoke preset)."""
    path = results / f"schedule_quality_{task.name}.csv"
    if path.exists():
        for r in read_csv(path):
            if r["arm"] == "uba" and int(r["budget_steps"]) == steps:
                return float(r["lr"])
    return float(next(iter(task.optimizers.values())))


def plan(tasks: Mapping[str, Task], seeds: int, results: Path) -> list[Run]:
    runs = []
    for task in tasks.values():
        lr = uba_pick_lr(task, task.full_steps, results)
        for phases, decay in shapes():
            for f in ETA_FACTORS:
                runs += [Run(task.name, task.full_steps, phases, decay, f, lr * f, s)
                         for s in range(seeds)]
    return runs


_TASKS: dict[str, Task] = {}


def _init_worker(tasks: Mapping[str, Task]) -> None:
    torch.set_num_threads(1)
    _TASKS.update(tasks)


def train_run(run: Run) -> dict[str, Any]:
    """Train one run on the tuning half; its CSV row."""
    task = _TASKS[run.task]
    optimizer = next(iter(task.optimizers))
    cfg = {**task.train_config(optimizer, "cpu"), "total_steps": run.steps, "seed": run.seed,
           "lr": run.lr, "schedule": "uba", "phi": NEUTRAL_PHI, "phases": run.phases,
           "metric": OBJECTIVE, "schedule_params": {"variant": "restart",
                                                   "peak_decay": run.peak_decay}}
    m = train_final(cfg, load_splits(task, None)[0])  # the quality bench's tuning half
    return {"task": run.task, "metric": task.metric, "steps": run.steps, "phases": run.phases,
            "peak_decay": run.peak_decay, "eta_factor": round(run.eta_factor, 4),
            "lr": run.lr, "seed": run.seed, "objective": m.get(OBJECTIVE, math.nan),
            "metric_value": m.get(task.metric, math.nan), "seconds": round(m["seconds"], 3)}


def _done(path: Path) -> set[tuple[str, int, int, str, str, int]]:
    if not path.exists():
        return set()
    return {_key(r["task"], int(r["steps"]), int(r["phases"]), float(r["peak_decay"]),
                 float(r["eta_factor"]), int(r["seed"])) for r in read_csv(path)}


def run_grid(tasks: Mapping[str, Task], seeds: int, out: Path, workers: int,
             results: Path) -> int:
    """Train the runs not yet in ``out`` (appending each row as it finishes); how many."""
    done = _done(out)
    todo = [r for r in plan(tasks, seeds, results) if r.key() not in done]
    logger.info("%d runs to train (%d already in %s)", len(todo), len(done), out)
    new = not out.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(dict(tasks),)) as pool:
            for row in pool.imap_unordered(train_run, todo):
                writer.writerow(row)
                fh.flush()
    return len(todo)


# ----------------------------------------------------------------------------- report


def _cells(rows: Sequence[Mapping[str, str]]) -> dict[tuple[str, int, float], dict[float, list[float]]]:
    """(task, phases, peak_decay) -> η factor -> objective per seed (in seed order)."""
    out: dict[tuple[str, int, float], dict[float, list[float]]] = defaultdict(
        lambda: defaultdict(list))
    for r in sorted(rows, key=lambda r: int(r["seed"])):
        out[(r["task"], int(r["phases"]), float(r["peak_decay"]))][
            float(r["eta_factor"])].append(float(r["objective"]))
    return out


def _score(vals: Sequence[float]) -> float:
    """Seed mean; a diverged seed (NaN) makes the configuration lose."""
    return statistics.fmean(vals) if vals and all(math.isfinite(v) for v in vals) else math.inf


def best_eta(by_eta: Mapping[float, list[float]]) -> tuple[float, list[float]]:
    f = min(by_eta, key=lambda k: _score(by_eta[k]))
    return f, by_eta[f]


def corpus_phase_text(path: Path) -> str:
    """The φ corpus's one- vs two-phase grid: per case, the best seed mean of each phase count
    over φ (the same η_max), on the tuning split's metric."""
    if not path.exists():
        return ""
    by: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    mode: dict[str, str] = {}
    for r in read_csv(path):
        if r["final"] == "1":
            by[(r["case"], r["phases"])][r["phi"]].append(float(r["val_value"]))
            mode[r["case"]] = r["mode"]
    cases = sorted({c for c, p in by if p == "2"})
    if not cases:
        return ""
    lines = ["| corpus case | best 1 phase (φ) | best 2 phases (φ) |", "|---|---|---|"]
    one_wins = 0
    for case in cases:
        sign = 1.0 if mode[case] == "max" else -1.0
        best = {}
        for p in ("1", "2"):
            phi, vals = max(by[(case, p)].items(),
                            key=lambda kv: sign * statistics.fmean(kv[1]))
            best[p] = (statistics.fmean(vals), phi)
        one_wins += sign * best["1"][0] >= sign * best["2"][0]
        lines.append(f"| {case} | {best['1'][0]:.4f} ({best['1'][1]}) | "
                     f"{best['2'][0]:.4f} ({best['2'][1]}) |")
    return ("\n".join(lines) + f"\n\nIn the φ corpus one phase is at least as good as two in "
            f"{one_wins} of {len(cases)} cases (best φ of each, seed means of its tuning split, "
            "the corpus's fixed η_max).\n")


def report_body(rows: Sequence[Mapping[str, str]], corpus: Path) -> str:
    cells = _cells(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    lines = ["Objective: mean `val_loss` over the seeds on the tuning half (lower is better) at "
             "each shape's best η_max factor (×½√2, ×1, ×√2 of searched UBA's pick at T); "
             "paired difference to one phase over the same seeds (positive = the shape is "
             "better).\n",
             "| task | phases | peak_decay | best η factor | val_loss | vs 1 phase |",
             "|---|---|---|---|---|---|"]
    multi_wins: list[str] = []
    decay_helps = decay_groups = 0
    for task in tasks:
        f1, one = best_eta(cells[(task, 1, 1.0)])
        lines.append(f"| {task} | 1 | – | {f1:.3g} | {_fmt(one)} | – |")
        for k in PHASES:
            per_decay = {}
            for d in PEAK_DECAYS:
                if (task, k, d) not in cells:
                    continue
                f, vals = best_eta(cells[(task, k, d)])
                per_decay[d] = _score(vals)
                diff = _paired_gain(one, vals)
                lines.append(f"| {task} | {k} | {d:g} | {f:.3g} | {_fmt(vals)} | {diff} |")
                if _score(vals) < _score(one):
                    multi_wins.append(f"{task} {k} phases, peak_decay {d:g}")
            if 1.0 in per_decay and len(per_decay) > 1:
                decay_groups += 1
                decay_helps += min(v for d, v in per_decay.items() if d < 1) < per_decay[1.0]
    n_multi = sum(1 for t in tasks for k in PHASES for d in PEAK_DECAYS if (t, k, d) in cells)
    lines.append("")
    lines.append(f"A multi-phase restart schedule beats one phase (seed mean at its best η_max) "
                 f"in {len(multi_wins)} of {n_multi} (task, phases, peak_decay) shapes"
                 + (f" ({'; '.join(multi_wins)})" if multi_wins else "") + ".")
    lines.append(f"A lower peak after each restart (peak_decay < 1) beats restarting at η_max "
                 f"in {decay_helps} of {decay_groups} (task, phases) groups.")
    text = "\n".join(lines) + "\n"
    corpus_text = corpus_phase_text(corpus)
    if corpus_text:
        text += "\n## One vs two phases in the φ corpus\n\n" + corpus_text
    return text


def _fmt(vals: Sequence[float]) -> str:
    if not all(math.isfinite(v) for v in vals):
        return f"diverged on {sum(not math.isfinite(v) for v in vals)} of {len(vals)} seeds"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.fmean(vals):.4f} ± {sd:.4f}"


def _paired_gain(base: Sequence[float], vals: Sequence[float]) -> str:
    pairs = [(a, b) for a, b in zip(base, vals, strict=False)
             if math.isfinite(a) and math.isfinite(b)]
    if not pairs:
        return "n/a"
    # loss: lower is better, so base − shape > 0 = the shape better
    d = paired([a for a, _ in pairs], [b for _, b in pairs])
    return f"{d.mean_diff:+.4f} ({d.wins}/{d.n} seeds better)"


def report(out_csv: Path, info: dict[str, Any], corpus: Path) -> Path:
    rows = read_csv(out_csv)
    md = out_csv.with_suffix(".md")
    write_markdown(md, "# Phases and the peak after a restart (UBA restart variant)", info,
                   report_body(rows, corpus))
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", action="append", help="run only these tasks (repeatable)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="digits, tiny budgets (seconds)")
    ap.add_argument("--report", action="store_true", help="only rewrite the markdown")
    ap.add_argument("--out", type=Path, default=RESULTS, help="output directory")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    pool = SMOKE_TASKS if args.smoke else {n: TASKS[n] for n in CORE_TASKS}
    tasks = {n: t for n, t in pool.items() if not args.task or n in args.task}
    if args.task and not tasks:
        print(f"unknown task(s) {args.task}; allowed: {', '.join(pool)}", file=sys.stderr)
        return 2
    out_csv = args.out / f"{NAME}.csv"
    sidecar = sidecar_path(out_csv.with_suffix(".md"))
    if args.report and sidecar.exists():
        info = json.loads(sidecar.read_text())
    else:
        command = "python -m bench.restart_peaks " + " ".join(
            argv if argv is not None else sys.argv[1:])
        if args.task:  # the CSV holds what earlier runs trained for the other tasks
            command += " (other tasks' rows from earlier runs into the same CSV)"
        info = provenance(command=command,
            seeds=f"training seeds 0..{args.seeds - 1} (paired across shapes)")
        info["torch_threads"] = 1
    if not args.report:
        run_grid(tasks, 2 if args.smoke else args.seeds, out_csv, args.workers, RESULTS)
    if info.get("load_after") is None:
        info = finish_provenance(info)
    if not out_csv.exists():
        print(f"no {out_csv}: run the bench first", file=sys.stderr)
        return 2
    print(report(out_csv, info, RESULTS / "phi_corpus.csv"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
