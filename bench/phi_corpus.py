"""The φ corpus: dense UBA grids on real tasks, tuned on one held-out split, scored on another.

Every case (task × optimizer × horizon) trains the whole grid φ × phases × seeds with the real
trainables (:func:`trainables.loop.run_training`, no Ray) and writes one row per (run,
evaluation step) to ``bench/results/phi_corpus.csv``. It is the data that the φ recommendation
(:mod:`bench.phi_suggestions`) is fitted and validated on, and that the search bench
(issue 11, rank fidelity of horizons and rungs) reads.

Run from the repository root::

    python -m bench.phi_corpus                 # the corpus: 2 CPU workers (~1.5 h here)
    python -m bench.phi_corpus --device cuda --workers 12   # ~4 min on one H100 (as shipped)
    python -m bench.phi_corpus --probe         # one run per task: seconds per run
    python -m bench.phi_corpus --smoke --out /tmp/c.csv   # seconds, used by the tests

Method (design.md, "UBA math conventions" and "Search design"):

* **Horizons.** Each task has a full budget T; the horizons T/4, T/2 and T are each a complete
  UBA schedule trained from scratch (the paper's 25/50/100 % budgets), and each is a case.
* **Two held-out splits.** :func:`trainables.datasets.split_validation` cuts the dataset's
  validation set into a tuning split (``val_value``: pick φ on it) and a disjoint evaluation
  split (``test_value``: score the pick on it), so a tuned φ is not scored on the noise it
  was selected on. For Fashion-MNIST these are two halves of the official 10k test set.
* **Rows.** Evaluation every T/8 steps of the *full* budget (so the full run has values at
  its T/4 and T/2 rungs); ``final`` = 1 on the row with ``step == horizon_steps``; ``wall_s``
  is the run's elapsed wall time at that row. A diverged run has one final row with NaN.
* **Resumable.** Rows are appended as runs finish; runs already in the CSV (final row
  present) are skipped, so an interrupted corpus is usable and can be continued.
* **Curvature features.** Per (task, optimizer) one job measures
  :func:`tuning.phi_from_curvature.schedule_features` for every horizon (initialisation once,
  warm-up per horizon, Adam's preconditioned Hessian) into ``phi_features.json``.
* **CPU budget.** At most 2 worker processes on a CPU (the dev machine is shared), one torch
  thread each; with ``--device cuda`` any number of workers share the GPU.
* **Size.** 19 (task, optimizer) pairs x 3 horizons = 57 cases, 10 phi (x 2 phases on the
  demo MLP) x 3 seeds = 1 890 runs; the three issue-11 tasks are :data:`CORE_TASKS`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import multiprocessing as mp
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().with_name("results")
CSV_PATH = RESULTS / "phi_corpus.csv"
FEATURES_NAME = "phi_features.json"  # next to the CSV
COLUMNS = ("case", "task", "model", "dataset", "optimizer", "eta_max", "batch_size",
           "full_steps", "horizon_steps", "horizon_fraction", "phi", "phases", "variant",
           "seed", "step", "metric", "mode", "val_value", "test_value", "final", "wall_s")
#: log-spaced 0.01..30 plus the paper defaults 0.5 (AdamW) and 5 (SGD), measured exactly.
PHI_GRID = (0.01, 0.03, 0.1, 0.3, 0.5, 1.0, 3.0, 5.0, 10.0, 30.0)
HORIZONS = (0.25, 0.5, 1.0)
VARIANT = "restart"


@dataclass(frozen=True)
class Task:
    """A model on a dataset with a full budget; optimizers map to their η_max."""

    name: str
    model: str
    dataset: str
    full_steps: int
    batch_size: int
    metric: str
    optimizers: Mapping[str, float]
    phases: tuple[int, ...] = (1,)
    model_kwargs: Mapping[str, Any] | None = None
    dataset_kwargs: Mapping[str, Any] | None = None
    seeds: int = 3

    def train_config(self, optimizer: str, device: str = "cpu") -> dict[str, Any]:
        """The trial config without schedule, budget and seed (a TrainConfig's constant part)."""
        return {"model": self.model, "model_kwargs": dict(self.model_kwargs or {}),
                "dataset": self.dataset, "dataset_kwargs": dict(self.dataset_kwargs or {}),
                "optimizer": optimizer, "lr": self.optimizers[optimizer], "momentum": 0.9,
                "weight_decay": 0.0, "batch_size": self.batch_size, "metric": self.metric,
                "device": device, "schedule": "uba"}


_FM = {"subset": 10_000}
_LM = {"block_size": 64, "max_chars": 1_000_000, "val_fraction": 0.05}
TASKS: dict[str, Task] = {t.name: t for t in (
    # the demo task (design.md "Search design"): MLP, Fashion-MNIST 10k, SGD eta_max 0.1, T=400
    Task("mlp-fmnist", "mlp", "fashion_mnist", 400, 128, "val_accuracy",
         {"sgd": 0.1, "adamw": 3e-3}, phases=(1, 2), dataset_kwargs=_FM),
    # the registry's small CNN (width 8, T=320 to fit the CPU budget), same data
    Task("cnn-fmnist", "cnn", "fashion_mnist", 320, 128, "val_accuracy",
         {"sgd": 0.1, "adamw": 3e-3}, model_kwargs={"width": 8}, dataset_kwargs=_FM),
    # char-level transformer on Shakespeare (first 1M characters), validation loss
    Task("charlm-shakespeare", "transformer_lm", "shakespeare_char", 400, 32, "val_loss",
         {"adamw": 3e-3}, model_kwargs={"n_layer": 2, "n_head": 2, "d_model": 64},
         dataset_kwargs=_LM),
    # more cases for the recommendation model (issue 13: model x dataset x optimizer x budget
    # x eta_max): other eta_max, a smaller batch, another dataset
    Task("mlp-fmnist-lr-hi", "mlp", "fashion_mnist", 400, 128, "val_accuracy",
         {"sgd": 0.3, "adamw": 1e-2}, dataset_kwargs=_FM),
    Task("mlp-fmnist-lr-lo", "mlp", "fashion_mnist", 400, 128, "val_accuracy",
         {"sgd": 0.03, "adamw": 1e-3}, dataset_kwargs=_FM),
    Task("mlp-fmnist-b32", "mlp", "fashion_mnist", 400, 32, "val_accuracy",
         {"sgd": 0.05, "adamw": 1e-3}, dataset_kwargs=_FM),
    Task("cnn-fmnist-lr-hi", "cnn", "fashion_mnist", 320, 128, "val_accuracy",
         {"sgd": 0.3, "adamw": 1e-2}, model_kwargs={"width": 8}, dataset_kwargs=_FM),
    Task("mlp-mnist5k", "mlp", "mnist5k", 400, 128, "val_accuracy",
         {"sgd": 0.1, "adamw": 3e-3}),
    Task("cnn-mnist5k", "cnn", "mnist5k", 320, 64, "val_accuracy",
         {"sgd": 0.1, "adamw": 3e-3}, model_kwargs={"width": 8}),
    Task("charlm-shakespeare-lr-hi", "transformer_lm", "shakespeare_char", 400, 32, "val_loss",
         {"adamw": 1e-2}, model_kwargs={"n_layer": 2, "n_head": 2, "d_model": 64},
         dataset_kwargs=_LM),
    Task("charlm-shakespeare-lr-lo", "transformer_lm", "shakespeare_char", 400, 32, "val_loss",
         {"adamw": 1e-3}, model_kwargs={"n_layer": 2, "n_head": 2, "d_model": 64},
         dataset_kwargs=_LM),
)}
#: The three tasks issue 11's search bench reads (the others only feed the phi model).
CORE_TASKS = ("mlp-fmnist", "cnn-fmnist", "charlm-shakespeare")
SMOKE_TASKS: dict[str, Task] = {t.name: t for t in (
    Task("mlp-digits", "mlp", "digits", 32, 64, "val_accuracy", {"sgd": 0.05},
         phases=(1, 2), model_kwargs={"hidden_sizes": (16,)}, seeds=1),
)}
SMOKE_GRID = (0.1, 1.0, 10.0)


@dataclass(frozen=True)
class Run:
    """One training run of the corpus (a grid point of a case)."""

    task: str
    optimizer: str
    horizon_fraction: float
    phi: float
    phases: int
    seed: int

    def case(self, task: Task) -> str:
        return f"{task.name}/{self.optimizer}/T{self.horizon_steps(task)}"

    def horizon_steps(self, task: Task) -> int:
        return round(task.full_steps * self.horizon_fraction)

    def key(self, task: Task) -> tuple[str, str, str, str]:
        return (self.case(task), f"{self.phi:g}", str(self.phases), str(self.seed))


def plan(tasks: Mapping[str, Task], grid: tuple[float, ...]) -> list[Run]:
    """All runs, seed-major (a partial corpus has every case at its first seeds), cheap first."""
    runs = []
    for seed in range(max(t.seeds for t in tasks.values())):
        for t in tasks.values():
            if seed >= t.seeds:
                continue
            for opt in t.optimizers:
                for h in HORIZONS:
                    for phases in t.phases:
                        runs += [Run(t.name, opt, h, phi, phases, seed) for phi in grid]
    return runs


# ---------------------------------------------------------------------------- workers

_TASKS: dict[str, Task] = {}
_BUNDLES: dict[str, tuple[Any, Any]] = {}
_DEVICE = ["cpu"]


def _init_worker(tasks: Mapping[str, Task], device: str = "cpu") -> None:
    torch.set_num_threads(1)
    _TASKS.clear()
    _TASKS.update(tasks)
    _DEVICE[0] = device


def load_splits(task: Task, data_dir: str | None) -> tuple[Any, Any]:
    """(tuning bundle, evaluation bundle) of a task; the evaluation one pre-normalised."""
    from trainables.datasets import split_validation
    from trainables.registry import get_dataset

    if task.name not in _BUNDLES:
        _BUNDLES.clear()  # one task's data per process
        bundle = get_dataset(task.dataset, data_dir=data_dir, **dict(task.dataset_kwargs or {}))
        tune, ev = split_validation(bundle, 0.5, seed=0)
        if ev.preprocess is not None and ev.augment is None:
            ev = replace(ev, val_x=ev.preprocess(ev.val_x), preprocess=None)
        ev = replace(ev, val_x=ev.val_x.to(_DEVICE[0]), val_y=ev.val_y.to(_DEVICE[0]))
        _BUNDLES[task.name] = (tune, ev)
    return _BUNDLES[task.name]


def train_run(run: Run, data_dir: str | None = None) -> list[dict[str, Any]]:
    """Train one run; the rows it contributes (one per evaluation step)."""
    from trainables.errors import DivergedError
    from trainables.loop import TrainConfig, evaluate, run_training
    from trainables.registry import build_model

    task = _TASKS[run.task]
    tune, ev = load_splits(task, data_dir)
    horizon = run.horizon_steps(task)
    device = torch.device(_DEVICE[0])
    config = {**task.train_config(run.optimizer, _DEVICE[0]), "total_steps": horizon, "seed": run.seed,
              "phi": run.phi, "phases": run.phases, "eval_every": max(1, task.full_steps // 8),
              "checkpoint_every": 0, "schedule_params": {"variant": VARIANT}}
    cfg = TrainConfig.from_mapping(config)
    model = build_model(task.model, tune, **dict(task.model_kwargs or {})).to(device)
    base = {"case": run.case(task), "task": task.name, "model": task.model,
            "dataset": task.dataset, "optimizer": run.optimizer,
            "eta_max": task.optimizers[run.optimizer], "batch_size": task.batch_size,
            "full_steps": task.full_steps, "horizon_steps": horizon,
            "horizon_fraction": run.horizon_fraction, "phi": run.phi, "phases": run.phases,
            "variant": VARIANT, "seed": run.seed, "metric": task.metric,
            "mode": "max" if task.metric.endswith("accuracy") else "min"}
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def report(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        assert state is not None  # checkpoint_every=0: a snapshot at every eval point
        model.load_state_dict(state["model"])
        test = evaluate(model, model, ev, cfg, device)
        step = int(metrics["step"])
        rows.append({**base, "step": step, "val_value": metrics[task.metric],
                     "test_value": test[task.metric], "final": int(step == horizon),
                     "wall_s": round(time.perf_counter() - t0, 3)})

    try:
        run_training(config, report, bundle=tune)
    except DivergedError as exc:
        logger.warning("%s phi=%g phases=%d seed=%d diverged: %s", base["case"], run.phi,
                       run.phases, run.seed, exc)
        rows = [r for r in rows if r["step"] < horizon]
        rows.append({**base, "step": horizon, "val_value": math.nan, "test_value": math.nan,
                     "final": 1, "wall_s": round(time.perf_counter() - t0, 3)})
    return rows


def case_features(task_name: str, optimizer: str, data_dir: str | None) -> dict[str, Any]:
    """Curvature features of every horizon of (task, optimizer): ``{case: {...}}``.

    :func:`tuning.phi_from_curvature.schedule_features` with the default :class:`FeatureSpec`
    (what the recommendation measures); the initialisation features do not depend on the
    horizon, so they are measured once and shared (their cost is counted once, on T/4).
    """
    from tuning.phi_from_curvature import FeatureSpec, WarmupDivergedError, schedule_features

    task = _TASKS[task_name]
    tune, _ = load_splits(task, data_dir)
    train = task_train_spec(task, optimizer, data_dir)
    out: dict[str, Any] = {}
    init: dict[str, float] = {}
    for h in HORIZONS:
        run = Run(task.name, optimizer, h, 0.0, 1, 0)
        steps = run.horizon_steps(task)
        spec = FeatureSpec(at_init=not init)
        try:
            res = schedule_features(train, steps, spec, bundle=tune)
        except WarmupDivergedError as exc:
            out[run.case(task)] = {"error": str(exc)}
            continue
        feats = {**init, **res["features"]}
        if not init:
            init = {k: v for k, v in feats.items() if k.startswith("init_") or k == "loss_init"}
        elif "loss_init" in feats:
            feats["warm_loss_ratio"] = feats["loss_warm"] / feats["loss_init"]
        out[run.case(task)] = {
            "task": task.name, "optimizer": optimizer, "horizon_steps": steps,
            "warmup_steps": res["warmup_steps"], "features": feats, "cost_s": res["cost_s"],
            "lambda_max_spread": {k: r["lambda_max_spread"] for k, r in res["reports"].items()},
            "hvp_count": {k: r["cost"]["hvp_count"] for k, r in res["reports"].items()},
        }
    return out


def task_train_spec(task: Task, optimizer: str, data_dir: str | None) -> Any:
    """The :class:`trainables.config.TrainConfig` of a task (what a study of it would carry)."""
    from tuning.specs import TrainConfig

    return TrainConfig(model=task.model, dataset=task.dataset, optimizer=optimizer,  # type: ignore[arg-type]
                     lr=task.optimizers[optimizer], batch_size=task.batch_size,
                     metric=task.metric, model_kwargs=dict(task.model_kwargs or {}),  # type: ignore[arg-type]
                     dataset_kwargs=dict(task.dataset_kwargs or {}), data_dir=data_dir or "",
                     device=_DEVICE[0])


def _job(args: tuple[Any, str | None]) -> tuple[str, Any]:
    job, data_dir = args
    if isinstance(job, Run):
        return "run", train_run(job, data_dir)
    return "features", case_features(job[0], job[1], data_dir)


# ------------------------------------------------------------------------------- csv


def done_keys(path: Path) -> set[tuple[str, str, str, str]]:
    """Runs already complete in ``path`` (their final row is there)."""
    if not path.exists():
        return set()
    with path.open(newline="") as fh:
        return {(r["case"], f"{float(r['phi']):g}", r["phases"], r["seed"])
                for r in csv.DictReader(fh) if r.get("final") == "1"}


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def run_corpus(tasks: Mapping[str, Task], grid: tuple[float, ...], out: Path,
               workers: int, data_dir: str | None, features: bool = True,
               device: str = "cpu") -> int:
    """Train every run not yet in ``out`` and append its rows; measure the curvature features
    of cases not yet in ``phi_features.json`` next to it. Returns the jobs done."""
    out.parent.mkdir(parents=True, exist_ok=True)
    feat_path = out.with_name(FEATURES_NAME)
    feats: dict[str, Any] = json.loads(feat_path.read_text()) if feat_path.exists() else {}
    done = done_keys(out)
    jobs: list[Any] = []
    if features:
        for t in tasks.values():
            for opt in t.optimizers:
                cases = [Run(t.name, opt, h, 0.0, 1, 0).case(t) for h in HORIZONS]
                if not all(c in feats for c in cases):
                    jobs.append((t.name, opt))
    todo = [r for r in plan(tasks, grid) if r.key(tasks[r.task]) not in done]
    logger.info("%d runs planned, %d already in %s, %d to train; %d feature jobs",
                len(plan(tasks, grid)), len(done), out, len(todo), len(jobs))
    jobs += todo
    if not jobs:
        return 0
    new_file = not out.exists() or out.stat().st_size == 0
    t0 = time.perf_counter()
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        if new_file:
            writer.writeheader()

        def write(kind: str, result: Any, i: int) -> None:
            if kind == "features":
                feats.update(result)
                feat_path.write_text(json.dumps(feats, indent=1, sort_keys=True, default=float))
                logger.info("[%d/%d %.0fs] features of %s", i, len(jobs),
                            time.perf_counter() - t0, sorted(result))
                return
            writer.writerows({k: _fmt(r[k]) for k in COLUMNS} for r in result)
            fh.flush()
            last = result[-1]
            logger.info("[%d/%d %.0fs] %s phi=%g phases=%d seed=%d -> %s=%.4f (%.1fs)", i,
                        len(jobs), time.perf_counter() - t0, last["case"], last["phi"],
                        last["phases"], last["seed"], last["metric"], last["test_value"],
                        last["wall_s"])

        if workers <= 1:
            _init_worker(tasks, device)
            for i, job in enumerate(jobs, 1):
                write(*_job((job, data_dir)), i)
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker,
                          initargs=(dict(tasks), device)) as pool:
                for i, (kind, result) in enumerate(pool.imap_unordered(
                        _job, [(j, data_dir) for j in jobs], chunksize=1), 1):
                    write(kind, result, i)
    _write_provenance(out, device, workers, len(todo), len(done), time.perf_counter() - t0)
    return len(jobs)


def _write_provenance(out: Path, device: str, workers: int, trained: int, resumed: int,
                      elapsed: float) -> None:
    """``phi_corpus.provenance.json``: how the rows were produced (last session; a resumed
    corpus says how many runs were already there)."""
    from bench.common import finish_provenance, provenance

    info = finish_provenance(provenance(device=device,
                                        seeds="training seeds 0..2 per grid point; split seed 0"))
    info.update(workers=workers, runs_trained=trained, runs_already_present=resumed,
                elapsed_s={"this session": round(elapsed, 1)})
    out.with_name(out.stem + ".provenance.json").write_text(json.dumps(info, indent=2) + "\n")


def probe(tasks: Mapping[str, Task], data_dir: str | None) -> None:
    """Seconds of one full-horizon run per task and optimizer (to size the corpus)."""
    _init_worker(tasks)
    total = 0.0
    for t in tasks.values():
        for opt in t.optimizers:
            t0 = time.perf_counter()
            rows = train_run(Run(t.name, opt, 1.0, 1.0, 1, 0), data_dir)
            sec = time.perf_counter() - t0
            n_configs = len(PHI_GRID) * len(t.phases) * t.seeds * sum(HORIZONS)
            total += sec * n_configs
            print(f"{t.name}/{opt}: {sec:.1f}s per full run (train {rows[-1]['wall_s']}s), "
                  f"final {t.metric}={rows[-1]['val_value']:.4f}/{rows[-1]['test_value']:.4f}; "
                  f"case set ≈ {sec * n_configs / 60:.1f} process-min")
    print(f"corpus ≈ {total / 60:.1f} process-minutes")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=CSV_PATH)
    ap.add_argument("--workers", type=int, default=2,
                    help="worker processes (at most 2 on cpu: the dev machine is shared)")
    ap.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (several workers share it)")
    ap.add_argument("--data-dir", default=os.environ.get("PHITUNE_DATASET_DIR",
                                                         ".phitune/data"))
    ap.add_argument("--tasks", default="", help="comma-separated subset of task names")
    ap.add_argument("--probe", action="store_true", help="time one run per task and exit")
    ap.add_argument("--smoke", action="store_true", help="tiny digits corpus (tests)")
    ap.add_argument("--no-features", action="store_true", help="skip the curvature features")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tasks = SMOKE_TASKS if args.smoke else TASKS
    if args.tasks:
        tasks = {k: v for k, v in tasks.items() if k in args.tasks.split(",")}
    grid = SMOKE_GRID if args.smoke else PHI_GRID
    if args.probe:
        probe(tasks, args.data_dir)
        return
    workers = max(1, args.workers if args.device.startswith("cuda") else min(args.workers, 2))
    n = run_corpus(tasks, grid, args.out, workers, args.data_dir,
                   features=not args.no_features, device=args.device)
    logger.info("did %d jobs into %s", n, args.out)


if __name__ == "__main__":
    main()
