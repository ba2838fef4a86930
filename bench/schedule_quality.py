"""Schedule quality on three tasks against the peers users pick instead (issue #14, item 3).

Run from the repository root::

    python -m bench.schedule_quality --jobs 2     # the committed CPU run (~1 h on 2 cores)
    python -m bench.schedule_quality --smoke      # seconds (digits), used by the test suite
    python -m bench.schedule_quality --preset gpu # ResNet-18 on Fashion-MNIST, CUDA

The question: a user has a model, a dataset and a fixed iteration budget, and some compute to
tune with. Does phitune's searched UBA schedule beat what they would otherwise do — a standard
schedule with its η_max tuned, or a schedule-free optimizer with its lr tuned — at the **same
tuning compute**?

Protocol (what makes the comparison fair):

* **Tasks** are the search bench's three cases (:data:`bench.phi_corpus.CORE_TASKS`): an MLP
  and a small CNN on Fashion-MNIST 10k with SGD (momentum 0.9), and a character-level
  transformer on Shakespeare with AdamW; η_max around the task's reference lr.
* **Arms**: searched UBA (φ, phases and η_max), the baselines cosine, linear, step, REX and
  WSD (η_max only), and schedule-free SGD / AdamW (the ``schedulefree`` package; lr only,
  warmup 5 % inside the optimizer as its README recommends). Every arm's η_max range is 16×
  wide: [¼, 4]× the task's lr for scheduled arms, [2.5, 40]× (SGD) or [½, 8]× (AdamW) for
  schedule-free, where its README puts good rates (10–50× and 1–10× a scheduled rate).
* **Equal tuning compute, the product's own search**: every arm is tuned by phitune's
  search code itself — :func:`tuning.search.search_ladder` and the robust
  :func:`tuning.search.pick_finalists` on the study phitune would run (:func:`study_spec`: 8
  candidates, η = 3, complete schedules at T/3, the best 2 at T, 2 finalists re-trained with
  2 more seeds), with an in-process :class:`InProcessExecutor` instead of Ray so all arms
  share one harness. Searched UBA gets the product's default design (η_max sweep at a
  REX-like φ, then the family's shapes at the best η_max, :mod:`tuning.proposer`; the
  fitted φ model's recommendation is left out because its corpus contains these tasks); a
  peer's 8 candidates are the same log-cell centres of its lr range
  (:func:`tuning.proposer.lr_grid`). The compute per arm is counted and reported.
* **η_max rank fidelity**: the cosine arm's lowest-rung lr grid is also trained to the full
  budget (search seed; not counted as tuning), giving the fidelity table.
* **Budgets** 25 / 50 / 100 % of the task's full budget, each tuned and trained from scratch.
* **Disjoint data**: the validation set is split once (:func:`trainables.datasets.split_validation`)
  into a tuning half and an evaluation half. Tuning minimises ``val_loss`` on the tuning half
  (loss is the low-noise objective; the finalists' seed spread is reported as the selection
  noise). The chosen configuration of every arm is then trained with evaluation seeds
  0..n-1 (shared init and batch order across arms: paired) and scored on the evaluation half.

Writes per task ``schedule_quality_<task>.csv`` (one row per budget × arm × eval seed) and
``schedule_quality_<task>_tuning.csv`` (every tuning run), then ``schedule_quality.md`` and
``.png`` from all task files (``--report`` redoes only that step). Smoke/GPU presets add a
suffix.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.common import (
    RESULTS_DIR,
    mean_std,
    new_figure,
    paired,
    provenance,
    read_csv,
    train_final,
    write_csv,
    write_markdown,
)
from bench.phi_corpus import CORE_TASKS, SMOKE_TASKS, TASKS, Task
from trainables.autolrs import MIN_TAU_PRIME, AutoLRSSettings, AutoLRSSettingsError, plan_stages
from trainables.config import TrainConfig, metric_mode
from trainables.datasets import split_validation
from trainables.errors import DivergedError
from trainables.grad_norms import GRAD_NORMS
from trainables.registry import get_dataset
from tuning.arms import REFINED_ARMS
from tuning.arms import arm_config as product_arm_config
from tuning.executor import candidate_config
from tuning.ladder import Candidate, Outcome, compute_units
from tuning.search import best_outcome, pick_finalists, search_ladder
from tuning.specs import LadderSpec, SearchSpace, StudySpec

logger = logging.getLogger(__name__)

NAME = "schedule_quality"
ARMS = ("uba", "cosine", "linear", "step", "rex", "wsd", "schedulefree")
#: The data-driven schedulers (issue 21), run after the ladder-tuned arms: AutoLRS chooses its
#: lr while it trains (no ladder; its search is what each run trained beyond T), the refined
#: arms are Defazio et al.'s refinement of the linear and the UBA pick's full-budget run.
DATA_DRIVEN = ("autolrs", "refined-linear", "refined-uba")
ALL_ARMS = ARMS + DATA_DRIVEN
#: The peers UBA's family contains (φ = 2 is cosine, φ ≈ 0.8 REX, φ = 0 with phases a step or a
#: constant-then-drop): issue 20's goal is searched UBA at least as good as the best of them.
FAMILY = ("cosine", "linear", "step", "rex", "wsd")
#: Peers whose pick comes from the ladder (they have a tuning objective and selection noise).
LADDER_PEERS = ARMS[1:]
#: Peers searched UBA is compared against (every arm a user might pick instead of it;
#: refined-uba is phitune's own next step on UBA's pick, not a peer).
PEERS = tuple(a for a in ALL_ARMS if a not in ("uba", "refined-uba"))
LABELS = {"uba": "UBA searched (φ, phases, η_max)", "cosine": "cosine", "linear": "linear",
          "step": "step", "rex": "REX", "wsd": "WSD", "schedulefree": "schedule-free",
          "autolrs": "AutoLRS (lr chosen per stage)",
          "refined-linear": "refined from linear (η_max tuned)",
          "refined-uba": "refined from UBA's pick (η_max tuned)"}
TUNE_SEED = 1000  # training seed of the search runs (never an evaluation seed)
OBJECTIVE = "val_loss"


@dataclass(frozen=True)
class Preset:
    """How big a run is: which tasks, how many candidates/finalists/eval seeds, budgets."""

    tasks: dict[str, Task]
    candidates: int = 8
    eta: int = 3
    finalists: int = 2
    finalist_seeds: int = 2
    eval_seeds: int = 5
    budgets: tuple[float, ...] = (0.25, 0.5, 1.0)
    device: str = "cpu"


_GPU_TASK = Task("resnet18-fmnist", "resnet18", "fashion_mnist", 2340, 256, "val_accuracy",
                 {"sgd": 0.1}, model_kwargs={"stem": "cifar"})
PRESETS: dict[str, Preset] = {
    "cpu": Preset({name: TASKS[name] for name in CORE_TASKS}),
    "smoke": Preset(dict(SMOKE_TASKS), candidates=3, finalists=1, finalist_seeds=1,
                    eval_seeds=2),
    # issue #14 item 5: ResNet-18 on full Fashion-MNIST (10 epochs), when a GPU is lent
    "gpu": Preset({_GPU_TASK.name: _GPU_TASK}, eval_seeds=3, device="cuda"),
}


def _suffix(preset: str) -> str:
    return "" if preset == "cpu" else f"_{preset}"


# ------------------------------------------------------------------------------- arms


def arm_optimizer(arm: str, task: Task) -> str:
    base = next(iter(task.optimizers))
    return f"{base}_schedulefree" if arm == "schedulefree" else base


def template(task: Task, device: str) -> TrainConfig:
    """The task's trial-config template (no budget) with the tuning objective as metric."""
    raw = {**task.train_config(next(iter(task.optimizers)), device), "metric": OBJECTIVE,
           "checkpoint_every": -1}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in raw.items() if k in known})


def study_spec(task: Task, steps: int, p: Preset) -> StudySpec:
    """The study phitune would run for this task and budget (its defaults: η_max searched in
    [¼, 4]× the task's lr, the restart variant), on the bench's candidate count and ladder."""
    return StudySpec(study_id=f"quality-{task.name}-{steps}", train=template(task, p.device),
                     total_steps=steps, num_trials=p.candidates, ladder=LadderSpec(eta=p.eta),
                     finalists=p.finalists, finalist_seeds=p.finalist_seeds, seed=TUNE_SEED,
                     search=SearchSpace(variant="restart"))


class InProcessExecutor:
    """The :class:`tuning.search.Executor` of the bench: each run trained in this process on
    the tuning half, recorded as a row of the tuning CSV."""

    def __init__(self, spec: StudySpec, bundle: Any, arm: str) -> None:
        self.spec, self.bundle, self.arm = spec, bundle, arm
        self.rows: list[dict[str, Any]] = []

    def run(self, name: str, steps: int, runs: Sequence[tuple[Candidate, int]],
            kind: str = "search") -> list[Outcome]:
        outs = []
        for c, seed in runs:
            cfg = candidate_config(self.spec, c, steps, seed).to_dict()
            cfg["checkpoint_every"] = -1
            m = train_final(cfg, self.bundle, keep=(GRAD_NORMS,))
            value = m.get(OBJECTIVE, math.nan)
            ok = math.isfinite(value)
            outs.append(Outcome(candidate=c, steps=steps, seed=seed,
                                trained_steps=steps, value=value if ok else None,
                                last_value=value if ok else None,
                                status="terminated" if ok else "error",
                                trial_id=f"{name}-{c.index}-{seed}",
                                error=None if ok else "diverged",
                                metrics={k: m[k] for k in (GRAD_NORMS,) if k in m}))
            self.rows.append({"arm": self.arm, "budget_steps": self.spec.total_steps,
                              "kind": kind, "experiment": name, "stage": c.stage,
                              "horizon": steps, "candidate": c.index, "seed": seed,
                              **{k: c.params.get(k, "") for k in ("phi", "phases", "lr")},
                              "objective": value, "seconds": m["seconds"]})
        return outs


def arm_config(arm: str, task: Task, params: dict[str, Any], steps: int, seed: int,
               device: str) -> dict[str, Any]:
    """The trial config of one arm's pick at ``steps`` updates (flat dict), by the product's
    :func:`tuning.arms.arm_config`, scored on the task's reported metric."""
    base = dataclasses.replace(template(task, device), metric=task.metric).for_budget(
        steps, seed=seed)
    extra = {"variant": "restart", "eta_min": 0.0} if arm == "uba" else {}
    cfg = product_arm_config(arm, base, {**params, **extra}).to_dict()
    cfg["checkpoint_every"] = -1
    return cfg


# ----------------------------------------------------------------------------- tuning


@dataclass
class Tuned:
    """One arm's search at one budget: the pick, its selection noise and its compute."""

    params: dict[str, Any]
    objective_mean: float
    objective_std: float
    n_seeds: int
    units: float
    runs: list[dict[str, Any]]


def _tuned(spec: StudySpec, ex: InProcessExecutor, full: Sequence[Outcome],
           finalists: Sequence[Any]) -> Tuned:
    """An arm's pick from its full-budget runs and finalists, as the study picks it (the
    robust winning finalist, else the best run), with its selection noise and compute."""
    if finalists and finalists[0].robust and finalists[0].mean is not None:
        f = finalists[0]
        params = next(o.candidate.params for o in full if o.candidate.index == f.candidate)
        vals = f.values
    else:
        best = best_outcome(spec, full)
        params = best.candidate.params if best else {"lr": spec.train.lr, "phi": 2.0,
                                                     "phases": 1}
        vals = [best.value] if best and best.value is not None else [math.nan]
    m, sd = mean_std(vals)
    trained = sum(r["horizon"] for r in ex.rows)
    return Tuned(params=dict(params), objective_mean=m, objective_std=sd, n_seeds=len(vals),
                 units=compute_units(trained, spec.total_steps), runs=ex.rows)


def tune(arm: str, task: Task, steps: int, tune_bundle: Any, p: Preset) -> Tuned:
    """phitune's own search for one arm (:func:`tuning.search.search_ladder` and the robust
    :func:`tuning.search.pick_finalists`), run in-process on the tuning half."""
    spec = study_spec(task, steps, p)
    ex = InProcessExecutor(spec, tune_bundle, arm)
    outcomes = search_ladder(spec, ex, arm)
    finalists, _ = pick_finalists(spec, outcomes.get(steps, []), ex, arm)
    return _tuned(spec, ex, outcomes.get(steps, []), finalists)


def tune_refined_arm(arm: str, task: Task, steps: int, source_params: dict[str, Any],
                     tune_bundle: Any, p: Preset) -> Tuned | None:
    """The product's refinement step for one refined arm (:func:`tuning.refine.tune_refined`):
    the source arm's pick trained at the full budget on the tuning half (search seed, as the
    study's own source run is), its recorded gradient norms refined, the refined schedule's
    base lr tuned by the same ladder. The source run is counted in this arm's compute (the
    source arm's own tuning is not: the ``tuning compute`` column states both apart)."""
    from tuning.refine import RefineSource, tune_refined

    spec = study_spec(task, steps, p)
    src_arm = REFINED_ARMS[arm]
    ex = InProcessExecutor(spec, tune_bundle, arm)
    cand = Candidate(0, dict(source_params), 0, "source", src_arm)
    (run,) = ex.run(f"{arm}-source-{steps}", steps, [(cand, TUNE_SEED)])
    norms = run.grad_norms if run.completed else None
    if norms is None:
        logger.warning("%s %d steps %s: source run has no norms (%s)", task.name, steps, arm,
                       run.error or run.status)
        return None
    src = RefineSource(arm=arm, source_arm=src_arm, trial_id=run.trial_id,
                       eta_max=float(source_params["lr"]), norms=norms, counted_in=arm)
    tuning = tune_refined(spec, {arm: src}, ex)[arm]
    tuned = _tuned(spec, ex, tuning.outcomes.get(steps, []), tuning.finalists)
    tuned.params = {**tuned.params, **src.arm_params()}
    return tuned


def fidelity_rows(task: Task, steps: int, tuned_runs: Sequence[dict[str, Any]],
                  tune_bundle: Any, p: Preset) -> list[dict[str, Any]]:
    """η_max rank fidelity of the lowest rung: every cosine candidate of the lowest rung also
    trained at the full budget (search seed), next to its rung value. Not counted as tuning
    compute: it is the measurement of how well the short rung ranks η_max."""
    low = min(r["horizon"] for r in tuned_runs)
    rung = [r for r in tuned_runs if r["horizon"] == low and r["kind"] == "search"]
    out = []
    for r in rung:
        cfg = arm_config("cosine", task, {"lr": float(r["lr"])}, steps, TUNE_SEED, p.device)
        cfg["metric"] = OBJECTIVE
        m = train_final(cfg, tune_bundle)
        out.append({"task": task.name, "budget_steps": steps, "arm": "cosine",
                    "rung_steps": low, "lr": r["lr"], "rung_objective": r["objective"],
                    "full_objective": m.get(OBJECTIVE, math.nan)})
    return out


# --------------------------------------------------------------------------- one task


def autolrs_settings(steps: int) -> AutoLRSSettings | None:
    """AutoLRS's settings at a budget: the defaults (τ₀ = T/16, τ′₀ = T/64, k = 4) where the
    candidate windows reach :data:`~trainables.autolrs.MIN_TAU_PRIME` steps, else τ′₀ raised to
    that and τ₀ = 4·τ′₀ (the same k·τ′ = τ balance of search and training); None where even
    that does not fit the budget (the arm has no row there)."""
    d = AutoLRSSettings()
    if round(d.tau_prime_fraction * steps) < MIN_TAU_PRIME:
        prime = MIN_TAU_PRIME / steps
        if d.candidates * prime > 1:
            return None
        d = dataclasses.replace(d, tau_prime_fraction=prime, tau_fraction=d.candidates * prime)
    try:
        plan_stages(steps, d)
    except AutoLRSSettingsError:
        return None
    return d


def eval_autolrs(task: Task, steps: int, seed: int, bundle: Any, device: str,
                 settings: AutoLRSSettings) -> dict[str, Any]:
    """One AutoLRS run on the evaluation half: its last metrics, the search steps it trained
    beyond the budget, and the lr each stage chose."""
    from trainables.autolrs import run_autolrs

    base = dataclasses.replace(template(task, device), metric=task.metric).for_budget(
        steps, seed=seed)
    cfg = product_arm_config("autolrs", base, {"lr": base.lr,
                                               "autolrs": settings}).to_dict()
    cfg["checkpoint_every"] = -1
    t0 = time.perf_counter()
    try:
        m = run_autolrs(cfg, lambda metrics, state: None, bundle=bundle)
    except DivergedError as exc:
        logger.warning("autolrs diverged: %s", exc)
        m = {"val_loss": math.nan, task.metric: math.nan, "trained_steps_total": math.nan,
             "autolrs_stages": []}
    return {"metrics": m, "seconds": time.perf_counter() - t0,
            "search_steps": float(m.get("trained_steps_total", math.nan)) - steps,
            "stage_lrs": " ".join(f"{st['lr']:.4g}" for st in m.get("autolrs_stages", []))}


def _task_files(out_dir: Path, preset: str, task: str) -> dict[str, Path]:
    stem = f"{NAME}{_suffix(preset)}_{task}"
    return {"eval": out_dir / f"{stem}.csv", "tuning": out_dir / f"{stem}_tuning.csv",
            "fidelity": out_dir / f"{stem}_fidelity.csv"}


def _kept_rows(path: Path, arms: Sequence[str], steps: set[int]) -> list[dict[str, Any]]:
    """The rows of an earlier run of this task that this run does not redo (other arms, or
    other budgets)."""
    if not path.exists():
        return []
    return [r for r in read_csv(path)
            if r.get("arm") not in arms or int(r["budget_steps"]) not in steps]


def _picks_from_rows(rows: Sequence[dict[str, Any]], steps: int) -> dict[str, dict[str, Any]]:
    """Each arm's pick at a budget as its evaluation rows record it (``phi``, ``phases``,
    ``lr``): what a refined arm refines when its source arm is not re-run."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if int(r["budget_steps"]) != steps or r["arm"] in out:
            continue
        params: dict[str, Any] = {"lr": float(r["lr"])}
        if r.get("phi") not in (None, ""):
            params.update(phi=float(r["phi"]), phases=int(float(r["phases"])))
        out[r["arm"]] = params
    return out


def merge_runs(preset: str, sources: Sequence[Path], out_dir: Path) -> list[str]:
    """Merge scratch runs (``--out DIR`` of a task's arms or budgets, run in parallel
    processes so no two write one CSV) into ``out_dir``: per task file, the source's rows
    replace the rows of the same (budget, arm) and every other row is kept; each source's
    provenance sidecar is copied to ``<name>_runs/<task>-<arms>.provenance.json`` for the
    report to cite. Returns what was merged, one line per task file."""
    merged: list[str] = []
    runs_dir = out_dir / f"{NAME}{_suffix(preset)}_runs"
    for src in sources:
        for task in PRESETS[preset].tasks:
            theirs_files = _task_files(src, preset, task)
            if not theirs_files["eval"].exists():
                continue
            keys: set[tuple[int, str]] = {(int(r["budget_steps"]), r["arm"])
                                          for r in read_csv(theirs_files["eval"])}
            for kind, theirs in theirs_files.items():
                if not theirs.exists():
                    continue
                mine = _task_files(out_dir, preset, task)[kind]
                new = read_csv(theirs)
                kept = [r for r in (read_csv(mine) if mine.exists() else [])
                        if (int(r["budget_steps"]), r["arm"]) not in keys]
                write_csv(mine, kept + new)
                merged.append(f"{mine.name}: {len(new)} rows from {src} "
                              f"({', '.join(f'{a} {b}' for b, a in sorted(keys))})")
            sidecar = src / f"{NAME}{_suffix(preset)}_{task}.provenance.json"
            if not sidecar.exists():
                sidecar = src / f"{NAME}{_suffix(preset)}.provenance.json"
            if sidecar.exists():
                runs_dir.mkdir(exist_ok=True)
                arms = ("all-arms" if {a for _, a in keys} >= set(ALL_ARMS)
                        else "-".join(sorted({a for _, a in keys})))
                budgets = "-".join(str(b) for b in sorted({b for b, _ in keys}))
                (runs_dir / f"{task}-{arms}-{budgets}.provenance.json").write_text(
                    sidecar.read_text())
    return merged


def run_task(preset: str, task_name: str, out_dir: Path, threads: int = 1,
             arms: Sequence[str] = ALL_ARMS, budgets: Sequence[float] | None = None) -> Path:
    """Tune every arm in ``arms`` at every budget, train the picks on the evaluation seeds,
    write CSVs. Rows of other arms already in the task's CSVs are kept (``--arm`` adds or
    redoes arms of a task without re-running the rest), and so are rows of other budgets
    (``--budget``). The CSVs are rewritten after every budget, so a run cut off keeps the
    budgets it finished."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = PRESETS[preset]
    task = p.tasks[task_name]
    t0 = time.perf_counter()
    bundle = get_dataset(task.dataset, **(task.dataset_kwargs or {}))
    tune_b, eval_b = split_validation(bundle, 0.5, seed=0)
    metric = task.metric  # the task's reported metric (accuracy, or loss for the LM)
    files = _task_files(out_dir, preset, task.name)
    todo = [f for f in p.budgets if budgets is None or f in budgets]
    redo = {max(1, round(f * task.full_steps)) for f in todo}
    rows = _kept_rows(files["eval"], arms, redo)
    tune_rows = _kept_rows(files["tuning"], arms, redo)
    fid_rows = _kept_rows(files["fidelity"], ["cosine"] if "cosine" in arms else [], redo)
    for frac in todo:
        steps = max(1, round(frac * task.full_steps))
        picks = _picks_from_rows(rows, steps)  # sources of the refined arms, if kept
        for arm in [a for a in ALL_ARMS if a in arms]:
            if arm in REFINED_ARMS:
                source = picks.get(REFINED_ARMS[arm])
                tuned = None if source is None else tune_refined_arm(arm, task, steps, source,
                                                                     tune_b, p)
                if tuned is None:
                    logger.warning("%s %d steps %s: no source pick, no rows", task.name,
                                   steps, arm)
                    continue
            elif arm == "autolrs":
                settings = autolrs_settings(steps)
                if settings is None:
                    logger.info("%s %d steps: AutoLRS's stages do not fit, no rows", task.name,
                                steps)
                    continue
                for seed in range(p.eval_seeds):
                    r = eval_autolrs(task, steps, seed, eval_b, p.device, settings)
                    m = r["metrics"]
                    rows.append({
                        "task": task.name, "metric": metric, "budget_fraction": frac,
                        "budget_steps": steps, "arm": arm, "seed": seed,
                        "optimizer": arm_optimizer(arm, task), "phi": "", "phases": "",
                        "lr": template(task, p.device).lr,
                        "test_value": m.get(metric, math.nan),
                        "test_loss": m.get("val_loss", math.nan),
                        "tuning_objective_mean": math.nan, "tuning_objective_std": math.nan,
                        "tuning_objective_seeds": 0,
                        "tuning_units": r["search_steps"] / steps,
                        "seconds": r["seconds"], "stage_lrs": r["stage_lrs"]})
                    logger.info("%s %d steps autolrs seed %d: %s=%.4f, stage lrs %s",
                                task.name, steps, seed, metric, m.get(metric, math.nan),
                                r["stage_lrs"])
                continue
            else:
                tuned = tune(arm, task, steps, tune_b, p)
                picks[arm] = tuned.params
            for r in tuned.runs:
                tune_rows.append({"task": task.name, "budget_fraction": frac, **r})
            if arm == "cosine":
                fid_rows.extend(fidelity_rows(task, steps, tuned.runs, tune_b, p))
            logger.info("%s %d steps %s: %s objective %.4f ± %.4f (%.2f units)", task.name,
                        steps, arm, tuned.params, tuned.objective_mean, tuned.objective_std,
                        tuned.units)
            for seed in range(p.eval_seeds):
                m = train_final(arm_config(arm, task, tuned.params, steps, seed, p.device),
                                eval_b)
                rows.append({
                    "task": task.name, "metric": metric, "budget_fraction": frac,
                    "budget_steps": steps, "arm": arm, "seed": seed,
                    "optimizer": arm_optimizer(arm, task),
                    **{k: tuned.params.get(k, "") for k in ("phi", "phases", "lr")},
                    "test_value": m.get(metric, math.nan),
                    "test_loss": m.get("val_loss", math.nan),
                    "tuning_objective_mean": tuned.objective_mean,
                    "tuning_objective_std": tuned.objective_std,
                    "tuning_objective_seeds": tuned.n_seeds,
                    "tuning_units": tuned.units, "seconds": m["seconds"]})
        write_csv(files["eval"], rows)  # after every budget: a cut-off run keeps what it did
        write_csv(files["tuning"], tune_rows)
        write_csv(files["fidelity"], fid_rows)
    logger.info("%s (%s) done in %.1f min", task.name, ", ".join(arms),
                (time.perf_counter() - t0) / 60)
    return files["eval"]


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Cell:
    """One task × budget: per-arm values over eval seeds and UBA paired against the best peer."""

    task: str
    metric: str
    steps: int
    fraction: float
    values: dict[str, list[float]]
    units: dict[str, float]
    noise: dict[str, tuple[float, float]]

    @property
    def mode(self) -> str:
        return metric_mode(self.metric)

    @property
    def arms(self) -> list[str]:
        """The arms this cell has rows for, in :data:`ALL_ARMS` order (a task run before an
        arm was added lacks it until ``--arm`` adds it)."""
        return [a for a in ALL_ARMS if a in self.values]

    def finite(self, arm: str) -> list[float]:
        """The arm's values of the seeds that did not diverge (a diverged run is NaN)."""
        return [v for v in self.values[arm] if math.isfinite(v)]

    def diverged(self, arm: str) -> int:
        return len(self.values[arm]) - len(self.finite(arm))

    def mean(self, arm: str) -> float:
        vals = self.finite(arm)
        return statistics.fmean(vals) if vals else math.nan

    def signed_pairs(self, a: str, b: str) -> Any:
        """Paired ``a − b`` over the seeds where both finished, signed so that positive means
        ``a`` is better (the seeds where one diverged are counted apart, by :meth:`diverged`)."""
        sign = 1.0 if self.mode == "max" else -1.0
        both = [(x, y) for x, y in zip(self.values[a], self.values[b], strict=True)
                if math.isfinite(x) and math.isfinite(y)]
        return paired([sign * x for x, _ in both], [sign * y for _, y in both])

    def best_peer(self, among: Sequence[str] = PEERS) -> str:
        sign = 1.0 if self.mode == "max" else -1.0
        return max([a for a in among if a in self.values],
                   key=lambda a: sign * self.mean(a) if math.isfinite(self.mean(a))
                   else -math.inf)

    def uba_vs(self, arm: str) -> Any:
        """Paired UBA − arm, signed so that positive means UBA is better."""
        return self.signed_pairs("uba", arm)


def load_cells(out_dir: Path, preset: str = "cpu") -> list[Cell]:
    """Every task × budget cell from the committed per-task CSVs (in task order)."""
    cells = []
    for name in PRESETS[preset].tasks:
        path = out_dir / f"{NAME}{_suffix(preset)}_{name}.csv"
        if not path.exists():
            continue
        rows = read_csv(path)
        by: dict[int, list[dict[str, str]]] = defaultdict(list)
        for r in rows:
            by[int(r["budget_steps"])].append(r)
        for steps, rs in sorted(by.items()):
            values: dict[str, list[float]] = defaultdict(list)
            run_units: dict[str, list[float]] = defaultdict(list)
            noise = {}
            for r in sorted(rs, key=lambda r: (r["arm"], int(r["seed"]))):
                values[r["arm"]].append(float(r["test_value"]))
                run_units[r["arm"]].append(float(r["tuning_units"]))
                noise[r["arm"]] = (float(r["tuning_objective_mean"]),
                                   float(r["tuning_objective_std"]))
            # one number per arm (AutoLRS's differs per run: the mean of the runs that finished)
            units = {a: statistics.fmean([u for u in us if math.isfinite(u)] or [math.nan])
                     for a, us in run_units.items()}
            cells.append(Cell(task=name, metric=rs[0]["metric"], steps=steps,
                              fraction=float(rs[0]["budget_fraction"]), values=dict(values),
                              units=units, noise=noise))
    return cells


def metric_label(metric: str) -> str:
    """What the reported number is: the task's metric on the evaluation half (a test set)."""
    return {"val_accuracy": "test accuracy", "val_loss": "test loss",
            "val_perplexity": "test perplexity"}.get(metric, metric)


def _scale(metric: str) -> tuple[float, str]:
    return (100.0, " pt") if metric.endswith("accuracy") else (1.0, "")


def goal_verdict(cells: Sequence[Cell]) -> tuple[list[str], list[str]]:
    """Tasks where searched UBA's paired mean is ahead of the best peer at every budget, and
    the tasks where it is not (issue #14's goal: at least two of three)."""
    tasks = list(dict.fromkeys(c.task for c in cells))
    ahead = [t for t in tasks
             if all(c.uba_vs(c.best_peer()).mean_diff > 0 for c in cells if c.task == t)]
    return ahead, [t for t in tasks if t not in ahead]


def verdict_text(cells: Sequence[Cell]) -> str:
    """The sentence that says whether the goal is met, computed from the cells."""
    ahead, behind = goal_verdict(cells)
    n = len(ahead) + len(behind)
    need = min(2, n)
    met = len(ahead) >= need
    lines = [f"Goal (searched UBA ahead of the best peer, paired mean over the evaluation "
             f"seeds, at every budget on at least {need} of {n} tasks): "
             f"**{'met' if met else 'not met'}** — ahead at every budget on "
             f"{len(ahead)} of {n} ({', '.join(ahead) or 'none'})."]
    scheduled = FAMILY
    ahead_sched = [c for c in cells if c.uba_vs(c.best_peer(scheduled)).mean_diff >= 0]
    lines.append(
        f"Against the best *scheduled* peer its family contains ({', '.join(LABELS[a] for a in FAMILY)}"
        f"), searched UBA's paired mean is at least as good in {len(ahead_sched)} of {len(cells)} task × budget cells"
        + (" (" + ", ".join(f"{c.task} {c.steps}" for c in ahead_sched) + ")."
           if ahead_sched else "."))
    trailing = [c for c in cells if c not in ahead_sched]
    if trailing:
        lines.append(scheduled_deficits_text(trailing))
    for c in cells:
        if c.task in behind:
            peer = c.best_peer()
            d = c.uba_vs(peer)
            s, unit = _scale(c.metric)
            if d.mean_diff <= 0:
                lines.append(f"- {c.task}, {c.steps} steps: UBA trails {LABELS[peer]} by "
                             f"{s * -d.mean_diff:.3g}{unit} {metric_label(c.metric)} (wins/ties/losses "
                             f"{d.wins}/{d.ties}/{d.losses}, p={d.p_value:.3g}).")
    return "\n".join(lines)


def scheduled_deficits_text(cells: Sequence[Cell]) -> str:
    """Where searched UBA trails the best scheduled peer: each deficit against the standard
    error of its paired difference (std/√n over the evaluation seeds), so a reader sees which
    misses the seeds can resolve and which they cannot."""
    parts, within = [], 0
    for c in cells:
        peer = c.best_peer(FAMILY)
        d = c.uba_vs(peer)
        se = d.std_diff / math.sqrt(d.n) if d.n > 1 else math.inf
        s, unit = _scale(c.metric)
        within += -d.mean_diff < se
        ratio = -d.mean_diff / se if se > 0 else math.inf
        parts.append(f"{c.task} {c.steps}: {s * d.mean_diff:+.3g}{unit} vs {LABELS[peer]}, "
                     + (f"{ratio:.1f} SE" if ratio < 100 else "≫ 1 SE"))
    return (f"Where it trails ({len(cells)} cells), the deficit is smaller than one standard "
            f"error of the paired difference in {within} of {len(cells)} ("
            + "; ".join(parts) + ").")


def fidelity_text(out_dir: Path, preset: str) -> str:
    """The η_max rank-fidelity table: per task and budget, how the lowest rung's values of
    the cosine arm's lr grid rank against the same lrs trained to the full budget (Spearman),
    and where each horizon's best lr lies (the horizon shift the hedged promotion covers)."""
    from scipy.stats import spearmanr

    lines = ["## η_max rank fidelity of the lowest rung (cosine arm's lr grid, search seed)\n",
             "| task | budget | rung | n | Spearman(rung, full) | best lr at rung | best lr at "
             "full budget |", "|---|---|---|---|---|---|---|"]
    found = False
    for name in PRESETS[preset].tasks:
        path = out_dir / f"{NAME}{_suffix(preset)}_{name}_fidelity.csv"
        if not path.exists():
            continue
        rows = read_csv(path)
        for steps in sorted({int(r["budget_steps"]) for r in rows}):
            rs = [r for r in rows if int(r["budget_steps"]) == steps
                  and math.isfinite(float(r["rung_objective"]))
                  and math.isfinite(float(r["full_objective"]))]
            if len(rs) < 3:
                continue
            found = True
            a = [float(r["rung_objective"]) for r in rs]
            b = [float(r["full_objective"]) for r in rs]
            rho = spearmanr(a, b).statistic
            lr_a = float(min(rs, key=lambda r: float(r["rung_objective"]))["lr"])
            lr_b = float(min(rs, key=lambda r: float(r["full_objective"]))["lr"])
            lines.append(f"| {name} | {steps} | {rs[0]['rung_steps']} | {len(rs)} | {rho:+.2f} "
                         f"| {lr_a:.4g} | {lr_b:.4g} |")
    if not found:
        return ""
    return "\n".join(lines) + "\n"


def same_test_text(cells: Sequence[Cell]) -> str:
    """The goal's test applied to every scheduled arm, computed from the cells: per cell, each
    arm's paired mean minus the best *other* scheduled arm's (UBA against the five family
    peers; a peer against the other four and UBA), and in how many cells each arm is at least
    as good. It tells a search that loses from a test that no arm passes: the best of several
    arms, each tuned on a noisy objective, is ahead of any one of them in expectation, so an
    arm equal to the best peer still trails that maximum in about half of the cells."""
    scheduled = ("uba", *FAMILY)
    cs = [c for c in cells if all(a in c.values for a in scheduled)]
    if not cs:
        return ""
    head = " | ".join(f"{c.task} {c.steps}" for c in cs)
    lines = ["## The same test for every scheduled arm\n",
             "Per cell: the arm's paired mean minus that of the best *other* scheduled arm of "
             "the cell (cosine, linear, step, REX, WSD, searched UBA), in the cell's unit (pt "
             "of test accuracy, nats/char of test loss); ≥ 0 passes.\n",
             f"| arm | {head} | cells passed |", "|---|" + "---|" * len(cs) + "---|"]
    passed: dict[str, int] = {}
    for arm in scheduled:
        txt = []
        for c in cs:
            others = [a for a in scheduled if a != arm]
            d = c.signed_pairs(arm, c.best_peer(others)).mean_diff
            s, _ = _scale(c.metric)
            passed[arm] = passed.get(arm, 0) + (d >= 0)
            txt.append(f"{s * d:+.2f}" if s != 1 else f"{d:+.3f}")
        lines.append(f"| {LABELS[arm]} | " + " | ".join(txt) + f" | {passed[arm]} of {len(cs)} |")
    top = max(passed.values())
    best = [LABELS[a] for a in scheduled if passed[a] == top]
    lines.append("")
    if top < len(cs):
        lines.append(f"No scheduled arm, fixed shape or searched, passes in every cell: the most "
                     f"is {top} of {len(cs)} ({', '.join(best)}); searched UBA passes in "
                     f"{passed['uba']}.")
    else:
        lines.append(f"{', '.join(best)} pass(es) in every cell; searched UBA in "
                     f"{passed['uba']} of {len(cs)}.")
    lines.append(schedulefree_ceiling_text(cs, scheduled))
    return "\n".join(lines) + "\n"


def schedulefree_ceiling_text(cells: Sequence[Cell], scheduled: Sequence[str]) -> str:
    """Whether any schedule could have won where schedule-free did: per cell, schedule-free's
    paired mean against the best of the six tuned scheduled arms of the cell (the best any
    schedule tried here reached, searched or fixed-shape).
    Schedule-free evaluates an average of its iterates, which no learning-rate schedule of
    the last iterate is; where it is ahead of that maximum, the goal "ahead of every peer" asks
    for more than a schedule gives on this task."""
    cs = [c for c in cells if "schedulefree" in c.values]
    if not cs:
        return ""
    ahead, parts = [], []
    for c in cs:
        top = c.best_peer(scheduled)
        d = c.signed_pairs("schedulefree", top)
        s, unit = _scale(c.metric)
        if d.mean_diff > 0:
            ahead.append(c)
            parts.append(f"{c.task} {c.steps}: {s * d.mean_diff:+.3g}{unit} over {LABELS[top]} "
                         f"({d.wins}/{d.ties}/{d.losses})")
    tasks = list(dict.fromkeys(c.task for c in cs))
    every = [t for t in tasks if all(c in ahead for c in cs if c.task == t)]
    return (f"\nSchedule-free (an average of iterates, not a schedule) is ahead of the best of "
            f"all six tuned scheduled arms, searched UBA included, in {len(ahead)} of {len(cs)} "
            f"cells" + (" (" + "; ".join(parts) + ")" if parts else "")
            + f"; at every budget on {len(every)} of {len(tasks)} tasks"
            + (f" ({', '.join(every)})" if every else "") + ".")


def runs_text(out_dir: Path, preset: str) -> str:
    """The runs whose rows the per-task CSVs hold (``--merge`` keeps each one's provenance),
    oldest first: a later run of the same task, arms and budgets replaced the earlier rows."""
    runs = []
    for path in sorted((out_dir / f"{NAME}{_suffix(preset)}_runs").glob("*.provenance.json")):
        info = json.loads(path.read_text())
        runs.append((info.get("date_utc", ""), path.name, info))
    if not runs:
        return ""
    lines = ["## Runs merged into these files (oldest first)\n",
             "| run | command | commit | date | load before (1/5/15 min) | note |",
             "|---|---|---|---|---|---|"]
    for date, name, info in sorted(runs, key=lambda r: (r[0], r[1])):
        dirty = " (dirty)" if info.get("git_dirty") else ""
        load = " / ".join(str(x) for x in info.get("load_before", []))
        lines.append(f"| {name.removesuffix('.provenance.json')} | `{info.get('command', '?')}` "
                     f"| {info.get('git_commit', '?')}{dirty} | {date} | {load} "
                     f"| {info.get('note', '')} |")
    return "\n".join(lines) + "\n"


def data_driven_text(cells: Sequence[Cell]) -> str:
    """Where refinement and AutoLRS win or lose (issue 21), computed from the cells: each
    data-driven arm's paired mean against searched UBA and against the best ladder-tuned peer,
    and the best arm of every cell."""
    present = [a for a in DATA_DRIVEN if any(a in c.values for c in cells)]
    if not present:
        return ""
    lines = ["## Data-driven schedulers (refinement, AutoLRS)\n",
             "Paired per seed, arm − searched UBA and arm − the best ladder-tuned peer of the "
             "cell (positive = the data-driven arm better):\n",
             "| task | budget | arm | vs UBA | vs best ladder-tuned peer | compute (units) |",
             "|---|---|---|---|---|---|"]
    wins: dict[str, list[str]] = defaultdict(list)
    for c in cells:
        s, unit = _scale(c.metric)
        peer = c.best_peer(LADDER_PEERS)
        for a in present:
            if a not in c.values:
                continue
            vs_uba, vs_peer = c.signed_pairs(a, "uba"), c.signed_pairs(a, peer)
            if vs_peer.mean_diff > 0:
                wins[a].append(f"{c.task} {c.steps}")
            lines.append(f"| {c.task} | {c.steps} | {LABELS[a]} | "
                         f"{vs_uba.fmt(scale=s, unit=unit)} | {vs_peer.fmt(scale=s, unit=unit)} "
                         f"({LABELS[peer]}) | {c.units[a]:.2f}"
                         + (f" ({c.diverged(a)} of {len(c.values[a])} seeds diverged, left out "
                            "of the pairs)" if c.diverged(a) else "") + " |")
    lines.append("")
    for a in present:
        n = sum(a in c.values for c in cells)
        lines.append(f"- {LABELS[a]}: ahead of the best ladder-tuned peer in {len(wins[a])} of "
                     f"{n} cells" + (f" ({', '.join(wins[a])})." if wins[a] else "."))
    lines.append("- Best arm per cell (any arm, paired mean): " + "; ".join(
        f"{c.task} {c.steps}: {LABELS[c.best_peer(c.arms)]}" for c in cells) + ".")
    lines.append("\nCompute: a refined arm's units are its source run (the source arm's pick "
                 "at the full budget, search seed) plus its own η_max ladder, on top of the "
                 "source arm's tuning; AutoLRS's are the search it trained beyond T.\n")
    return "\n".join(lines) + "\n"


def markdown(cells: Sequence[Cell], p: Preset, tuning_seconds: float | None) -> str:
    lines = [
        "Setup: see `bench/schedule_quality.py` (protocol in its docstring). Per task and "
        f"budget every arm is tuned with phitune's ladder ({p.candidates} candidates, η = "
        f"{p.eta}, {p.finalists} finalists × {p.finalist_seeds} extra seeds) on the tuning "
        f"half of the validation set (objective {OBJECTIVE}), then trained with evaluation "
        f"seeds 0..{p.eval_seeds - 1} and scored on the evaluation half. Reported metric: test "
        "accuracy (classification, %) or test loss (LM, nats/char); mean ± std over seeds, best "
        "arm in bold.\n",
    ]
    for task in dict.fromkeys(c.task for c in cells):
        tc = [c for c in cells if c.task == task]
        s, unit = _scale(tc[0].metric)
        lines += [f"## {task} ({metric_label(tc[0].metric)})\n",
                  "| arm | " + " | ".join(f"{c.steps} steps ({c.fraction:.0%})" for c in tc)
                  + " | tuning compute (units) |",
                  "|---|" + "---|" * len(tc) + "---|"]
        for arm in [a for a in ALL_ARMS if any(a in c.values for c in tc)]:
            cells_txt = []
            for c in tc:
                if arm not in c.values:
                    cells_txt.append("—")
                    continue
                m, sd = mean_std(c.finite(arm) or [math.nan])
                sign = 1 if c.mode == "max" else -1
                best = max(c.arms, key=lambda a: sign * c.mean(a) if math.isfinite(c.mean(a))
                           else -math.inf)
                t = f"{s * m:.3f} ± {s * sd:.3f}" if s == 1 else f"{s * m:.2f} ± {s * sd:.2f}"
                if c.diverged(arm):
                    t += f" ({c.diverged(arm)}/{len(c.values[arm])} diverged)"
                cells_txt.append(f"**{t}**" if arm == best else t)
            units = " / ".join(f"{c.units[arm]:.2f}" if arm in c.units else "—" for c in tc)
            lines.append(f"| {LABELS[arm]} | " + " | ".join(cells_txt) + f" | {units} |")
        lines += ["", "Paired per seed, UBA − peer (positive = UBA better; wins/ties/losses; "
                      "exact sign-flip p):\n",
                  "| vs | " + " | ".join(f"{c.steps} steps" for c in tc) + " |",
                  "|---|" + "---|" * len(tc)]
        for arm in [a for a in PEERS if any(a in c.values for c in tc)]:
            lines.append(f"| {LABELS[arm]} | " + " | ".join(
                c.uba_vs(arm).fmt(scale=s, unit=unit) if arm in c.values else "—"
                for c in tc) + " |")
        lines += ["", "Best peer per budget: " + "; ".join(
            f"{c.steps} steps: {LABELS[c.best_peer()]}" for c in tc) + ".",
            "Selection noise (tuning objective of each arm's pick, mean ± std over its "
            "search seed and the finalist seeds): " + "; ".join(
                f"{c.steps} steps: UBA {c.noise['uba'][0]:.4f} ± {c.noise['uba'][1]:.4f}, "
                f"best ladder-tuned peer ({LABELS[c.best_peer(LADDER_PEERS)]}) "
                f"{c.noise[c.best_peer(LADDER_PEERS)][0]:.4f} ± "
                f"{c.noise[c.best_peer(LADDER_PEERS)][1]:.4f}"
                for c in tc) + ".\n"]
        if any("autolrs" in c.values for c in tc):
            lines.append("AutoLRS is not ladder-tuned (it searches its lr while it trains, "
                         "[¼, 4]× the task's lr, the range every ladder-tuned arm sweeps); its "
                         "compute column is the "
                         "search it trained beyond the budget, per evaluation run.\n")
    lines += [verdict_text(cells), ""]
    n = p.eval_seeds
    lines += [f"With {n} paired seeds the smallest possible two-sided p is 2/2^{n} = "
              f"{2 / 2 ** n:.3g}.\n"]
    if tuning_seconds is not None:
        lines.append(f"Wall time {tuning_seconds / 60:.1f} min.\n")
    lines.append(f"Files: `{NAME}_<task>.csv` (one row per budget × arm × evaluation seed), "
                 f"`{NAME}_<task>_tuning.csv` (every search run), `{NAME}.png`.\n")
    return "\n".join(lines)


def plot(cells: Sequence[Cell], path: Path) -> None:
    """Per task: each arm's paired difference to searched UBA per budget (mean ± std)."""
    tasks = list(dict.fromkeys(c.task for c in cells))
    fig, axes = new_figure(4.2 * len(tasks), 3.8, ncols=len(tasks))
    axes = [axes] if len(tasks) == 1 else list(axes)
    for ax, task in zip(axes, tasks, strict=True):
        tc = [c for c in cells if c.task == task]
        s, unit = _scale(tc[0].metric)
        width = 0.8 / len(tc)
        peers = [a for a in PEERS if any(a in c.values for c in tc)]
        for j, c in enumerate(tc):
            ds = [c.uba_vs(a) for a in peers if a in c.values]
            xs = [i + (j - (len(tc) - 1) / 2) * width for i, a in enumerate(peers)
                  if a in c.values]
            ax.errorbar(xs, [s * d.mean_diff for d in ds], yerr=[s * d.std_diff for d in ds],
                        fmt="o", capsize=3, label=f"{c.steps} steps")
        ax.axhline(0.0, color="k", linewidth=0.8)
        ax.set_xticks(range(len(peers)))
        ax.set_xticklabels([LABELS[a] for a in peers], rotation=35, ha="right",
                           fontsize="small")
        ax.set_title(f"{task}: UBA vs peer, {metric_label(tc[0].metric)}{unit}\n"
                     "(paired mean ± std; > 0: UBA better)", fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, format="png")


def report(preset: str, out_dir: Path, info: dict[str, Any] | None = None,
           wall: float | None = None) -> list[Cell]:
    """Write ``schedule_quality{suffix}.md`` and ``.png`` from the per-task CSVs."""
    p = PRESETS[preset]
    cells = load_cells(out_dir, preset)
    if not cells:
        raise SystemExit(f"no {NAME}{_suffix(preset)}_<task>.csv in {out_dir}: run the bench first")
    partial = [f"{c.task} {c.steps}" for c in cells
               if "uba" not in c.values or not any(a in c.values for a in PEERS)]
    if partial:  # a run of some arms into a scratch --out: its CSVs are meant to be merged
        logger.warning("no UBA or no peer rows for %s in %s: the per-task CSVs are written, "
                       "the report "
                       "(every arm against UBA) is not; merge them into the results and run "
                       "--report there", ", ".join(partial), out_dir)
        if info is not None:  # the run's provenance per task, for the merged report to cite
            for task in info.get("tasks") or ():  # the tasks this run trained
                path = out_dir / f"{NAME}{_suffix(preset)}_{task}.provenance.json"
                path.write_text(json.dumps(info, indent=2) + "\n")
        return cells
    info = info or provenance(seeds=f"evaluation seeds 0..{p.eval_seeds - 1}; search seed "
                                    f"{TUNE_SEED}; finalist seeds derived from study seed 0",
                              device=p.device)
    title = (f"# Schedule quality at equal tuning compute ({preset}: "
             f"{', '.join(dict.fromkeys(c.task for c in cells))})\n")
    write_markdown(out_dir / f"{NAME}{_suffix(preset)}.md", title, info,
                   markdown(cells, p, wall) + "\n" + same_test_text(cells) + "\n"
                   + data_driven_text(cells) + "\n"
                   + fidelity_text(out_dir, preset) + "\n" + runs_text(out_dir, preset))
    plot(cells, out_dir / f"{NAME}{_suffix(preset)}.png")
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--smoke", action="store_true", help="= --preset smoke (seconds)")
    parser.add_argument("--task", action="append", help="run only these tasks (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="tasks run in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    parser.add_argument("--arm", action="append", choices=ALL_ARMS,
                        help="run only these arms (repeatable); other arms' rows of the task "
                             "are kept")
    parser.add_argument("--budget", action="append", type=float,
                        help="run only these budget fractions (repeatable, e.g. 1.0); other "
                             "budgets' rows of the task are kept")
    parser.add_argument("--report", action="store_true",
                        help="only rewrite the markdown/PNG from the per-task CSVs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--merge", type=Path, action="append", metavar="DIR",
                        help="merge the per-task CSVs of a scratch run (its --out) into --out "
                             "(rows of the same budget and arm replaced), then report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    preset = "smoke" if args.smoke else args.preset
    p = PRESETS[preset]
    sidecar = args.out / f"{NAME}{_suffix(preset)}.provenance.json"
    if args.merge:
        for line in merge_runs(preset, args.merge, args.out):
            logger.info("merged %s", line)
        args.report = True
    if args.report and sidecar.exists() and not args.merge:
        # re-rendering the report keeps the provenance of the run that made the rows
        info = json.loads(sidecar.read_text())
    else:
        command = "python -m bench.schedule_quality " + " ".join(
            argv if argv is not None else sys.argv[1:])
        if args.merge:  # the rows come from several runs, each cited with its own provenance
            command += " (rows from the runs listed under 'Runs merged into these files')"
        info = provenance(command=command,
                          seeds=f"evaluation seeds 0..{p.eval_seeds - 1}; search seed "
                                f"{TUNE_SEED}; finalist seeds derived from study seed 0",
                          device=p.device)
        if not args.merge:
            info["torch_threads"] = args.threads  # what each task process trains with
    t0 = time.perf_counter()
    arms = tuple(a for a in ALL_ARMS if a in (args.arm or ALL_ARMS))
    if not args.report:
        names = args.task or list(p.tasks)
        unknown = sorted(set(names) - set(p.tasks))
        if unknown:
            parser.error(f"--task: unknown {unknown}; choose from {sorted(p.tasks)}")
        info["tasks"] = list(names)
        odd = sorted(set(args.budget or ()) - set(p.budgets))
        if odd:
            parser.error(f"--budget: {odd} not among the preset's fractions {list(p.budgets)}")
        if args.jobs > 1:
            names = names[::-1]  # the longest task (the LM, listed last) starts first
            with ProcessPoolExecutor(args.jobs) as pool:
                list(pool.map(run_task, [preset] * len(names), names,
                              [args.out] * len(names), [args.threads] * len(names),
                              [arms] * len(names), [args.budget] * len(names)))
        else:
            for name in names:
                run_task(preset, name, args.out, args.threads, arms, args.budget)
    wall = None if args.report else time.perf_counter() - t0
    if args.report and sidecar.exists():
        old = (args.out / f"{NAME}{_suffix(preset)}.md").read_text()
        m = re.search(r"Wall time ([0-9.]+) min", old)
        wall = float(m.group(1)) * 60 if m else None
    report(preset, args.out, info, wall)
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
