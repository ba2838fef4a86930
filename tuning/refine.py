"""Refinement as a study step (``refine: true``): the refined schedule of Defazio, Cutkosky,
Mehta and Mishchenko ("When, Why and How Much? Adaptive Learning Rate Scheduling by
Refinement", 2023) from the gradient norms of the study's own runs, tuned and compared.

What it refines, as the paper does: two full-budget runs (``total_steps`` updates, the norms
every built-in trial records, :mod:`trainables.grad_norms`):

* ``refined-uba``: UBA's best full-budget run (the study's pick, its search run at the study
  seed); its compute is the study's search, already counted there;
* ``refined-linear``: a linear-decay run (the paper's source): the tuned full-budget pick of
  the ``linear`` compare arm when ``compare`` holds it (counted in that arm's tuning), else one
  run at the study's lr trained here (counted in this arm's ``tuning_units`` and in
  ``ComputeSpent.refine_steps``).

Each refined schedule ``create_schedule("refined", T, norms=<the run's norms>, optimizer=
<sgd|adam>, eta_max=lr)`` keeps its shape; only its base lr (η_max, the peak) is tuned, by the
same ladder plan and lr range as every compare arm (:func:`tuning.compare.tune_arm`), so the
comparison is at equal tuning effort. A rung shorter than T trains the same schedule
compressed onto its horizon: the norm sequence is resampled to the rung's length by linear
interpolation over the run's progress (:func:`tuning.schedules.resample_norms`; the median
window is a fraction of the run, so it compresses alike). That is the ladder's premise for
every schedule (a complete schedule on a shorter horizon ranks like the full one); it is
not a refinement of a shorter run, which would need that run's own norms. At the full budget
the norms are used exactly as recorded. The refined arms then train on the study's evaluation
seeds at the full budget next to every other arm and compete for the winner; their rows'
``params`` describe the schedule completely (``schedule``, ``total_steps``, ``eta_max``,
``norms``, ``optimizer``, ``window_frac``), so ``Winner.to_scheduler`` /
``BaselineRow.to_scheduler`` rebuild it for a user's own loop.

A source that cannot be refined (its run failed, or reported no norms) gives the arm a row
with the reason, not a failed study: the rest of the study stands.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainables.grad_norms import GradNorms
from tuning.arms import LR, NORMS, REFINE_OPTIMIZER, REFINED_LINEAR, REFINED_UBA, resolve_arm
from tuning.compare import ArmTuning, tune_arm
from tuning.ladder import Candidate, Outcome
from tuning.results import BestSchedule
from tuning.schedules import SCHEDULES
from tuning.search import Executor, best_outcome
from tuning.specs import StudySpec

__all__ = ["LINEAR", "RefineSource", "refine_sources", "refined_schedule_params",
           "tune_refined"]

logger = logging.getLogger(__name__)

#: The linear-decay arm whose run ``refined-linear`` refines.
LINEAR = "linear"


@dataclass
class RefineSource:
    """The full-budget run a refined arm refines: its trial, lr, norms (None with ``error``
    when it cannot be refined) and the run trained only for this (``trained``, counted)."""

    arm: str
    source_arm: str
    trial_id: str
    eta_max: float | None
    norms: GradNorms | None
    counted_in: str
    trained: Outcome | None = None
    error: str | None = None

    def arm_params(self) -> dict[str, Any]:
        """The :func:`tuning.arms.arm_config` params every candidate of the arm carries."""
        assert self.norms is not None
        family = self.norms.schedule_params()["optimizer"]
        return {NORMS: list(self.norms.per_step()), REFINE_OPTIMIZER: family}

    def describe(self) -> dict[str, Any]:
        """Where the norms came from (JSON for the row's ``params.source``)."""
        return {"arm": self.source_arm, "trial_id": self.trial_id, "eta_max": self.eta_max,
                "norm": self.norms.norm if self.norms is not None else None,
                "counted_in": self.counted_in}


def _norms_problem(spec: StudySpec, o: Outcome | None) -> tuple[GradNorms | None, str | None]:
    if o is None or not o.completed:
        why = "finished no run" if o is None else f"did not finish ({o.error or o.status})"
        return None, f"refine: its source run {why}"
    norms = o.grad_norms
    if norms is None:
        return None, (f"refine: the source run {o.trial_id} reported no gradient norms (a "
                      "trainable must report grad_norms, as trainables.loop.run_training does)")
    if norms.total_steps != spec.total_steps:
        return None, (f"refine: the source run {o.trial_id} has norms of {norms.total_steps} "
                      f"steps, not the full budget of {spec.total_steps}")
    bad = [v for v in norms.values if not (math.isfinite(v) and v > 0)]
    if bad:
        return None, (f"refine: the source run {o.trial_id} has a gradient norm of {bad[0]!r}; "
                      "refinement needs finite norms > 0")
    return norms, None


def _source(spec: StudySpec, arm: str, source_arm: str, o: Outcome | None, counted_in: str,
            trained: Outcome | None = None) -> RefineSource:
    norms, error = _norms_problem(spec, o)
    lr = float(o.candidate.params.get(LR, spec.train.lr)) if o is not None else None
    return RefineSource(arm=arm, source_arm=source_arm, trial_id=o.trial_id if o else "",
                        eta_max=lr, norms=norms, counted_in=counted_in, trained=trained,
                        error=error)


def _pick_run(spec: StudySpec, tuning: ArmTuning) -> Outcome | None:
    """The full-budget run of a tuned arm's pick: its winning finalist's search run, else its
    best full-budget run."""
    full = tuning.outcomes.get(spec.total_steps, [])
    f = tuning.finalists[0] if tuning.finalists else None
    if f is not None and f.robust and f.mean is not None:
        run = next((o for o in full if o.trial_id == f.trial_id), None)
        if run is not None:
            return run
    return best_outcome(spec, full)


def refine_sources(spec: StudySpec, best: BestSchedule | None, full_runs: Sequence[Outcome],
                   tunings: Mapping[str, ArmTuning], executor: Executor
                   ) -> dict[str, RefineSource]:
    """The runs ``refined-uba`` and ``refined-linear`` refine (see the module docstring).
    ``best``: UBA's full-budget pick; ``full_runs``: UBA's full-budget runs; ``tunings``: the
    compare arms tuned by the ladder (``linear`` among them, or not)."""
    uba_run = None
    if best is not None:
        uba_run = next((o for o in full_runs if o.trial_id == best.trial_id), None)
    out = {REFINED_UBA: _source(spec, REFINED_UBA, "uba", uba_run, "search")}
    if LINEAR in tunings:
        run = _pick_run(spec, tunings[LINEAR])
        out[REFINED_LINEAR] = _source(spec, REFINED_LINEAR, LINEAR, run,
                                      f"compare arm {LINEAR}")
    else:  # the paper's source, trained once at the study's lr and counted here
        if LINEAR in (resolve_arm(a) for a in spec.compare):
            logger.info("study %s: linear is compared untuned; refine trains its own source",
                        spec.study_id)
        cand = Candidate(0, {LR: spec.train.lr}, 0, "source", LINEAR)
        (run,) = executor.run(f"{REFINED_LINEAR}-source-{spec.total_steps}", spec.total_steps,
                              [(cand, spec.seed)])
        out[REFINED_LINEAR] = _source(spec, REFINED_LINEAR, LINEAR, run, REFINED_LINEAR,
                                      trained=run)
    for src in out.values():
        if src.error:
            logger.warning("study %s: %s: %s", spec.study_id, src.arm, src.error)
    return out


def tune_refined(spec: StudySpec, sources: Mapping[str, RefineSource],
                 executor: Executor) -> dict[str, ArmTuning]:
    """Tune each refinable source's base lr by the study's ladder (:func:`tune_arm`); the run
    trained as a source is part of its arm's compute (``extra``)."""
    out: dict[str, ArmTuning] = {}
    for arm, src in sources.items():
        if src.norms is None:
            continue
        logger.info("study %s: tuning %s (norms of %s run %s) by the ladder", spec.study_id,
                    arm, src.source_arm, src.trial_id)
        tuning = tune_arm(spec, arm, executor, arm_params=src.arm_params())
        if src.trained is not None:
            tuning.extra.append(src.trained)
        out[arm] = tuning
    return out


def refined_schedule_params(spec: StudySpec, src: RefineSource, lr: float) -> dict[str, Any]:
    """A refined arm's schedule as ``tuning.schedules.schedule_from_best`` reads it: every
    field ``create_schedule("refined", total_steps, ...)`` takes, plus where it came from."""
    assert src.norms is not None
    params = src.norms.schedule_params()
    return {"schedule": "refined", "total_steps": spec.total_steps, "eta_max": lr,
            "norms": params["norms"], "optimizer": params["optimizer"],
            "window_frac": SCHEDULES["refined"].params["window_frac"].default,
            "source": src.describe()}
