"""The arms a study can train: searched UBA and the peers users pick instead.

One home for "what is an arm": its name (with the aliases users know), the trial config of one
of its candidates, and the learning-rate range its tuning sweeps. The search
(:mod:`tuning.search`) tunes every arm with the same ladder; the comparison
(:mod:`tuning.compare`) evaluates the picks; neither needs to know how an arm builds its config.

Pure (no Ray, no Optuna): the bench and the tests build the same configs in-process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from trainables.autolrs import AUTOLRS, AutoLRSSettings
from trainables.config import PAPER_DEFAULT_PHI, SCHEDULED_LR_FACTORS, TrainConfig
from tuning.schedules import SCHEDULES, resample_norms

#: Searched parameters (Optuna parameter names; ``lr`` is η_max).
PHI, PHASES, LR = "phi", "phases", "lr"
#: Searched warmup: a fraction of each run (SearchSpace.warmup_min/max).
WARMUP = "warmup"

#: The searched arm.
UBA = "uba"
#: Pseudo-baseline: UBA at the paper's default φ (5 for SGD, 0.5 for AdamW), one phase.
UBA_DEFAULT = "uba_default"
#: Pseudo-baseline: the study's optimizer in its schedule-free form (the ``schedulefree``
#: package) at a constant LR: the peer users pick to avoid a schedule altogether.
SCHEDULE_FREE = "schedulefree"
#: Warmup of the schedule-free arm, a fraction of the run (its README recommends warmup).
SCHEDULE_FREE_WARMUP = 0.05
#: Arms that choose their lr while they train (AutoLRS: a BO per stage in [¼, 4]× by default
#: around the study's lr, :mod:`trainables.autolrs`). The study's ladder does not tune them:
#: tuning the centre of a search that spans 100× would tune the tuner; their search is
#: counted as what each evaluation run trained (``trained_steps_total``) instead.
SELF_TUNING: tuple[str, ...] = (AUTOLRS,)
#: ``params`` key of :func:`arm_config` holding an AutoLRS arm's :class:`AutoLRSSettings`.
AUTOLRS_SETTINGS = "autolrs"

#: Refinement arms (Defazio et al. 2023, ``refine: true``): the ``refined`` schedule computed
#: from the gradient norms of one full-budget run, UBA's best or a linear-decay run (the
#: paper's source), its base lr tuned by the same ladder as every arm (:mod:`tuning.refine`).
#: Not compare arms a user names: the study adds them when it refines.
REFINED_UBA, REFINED_LINEAR = "refined-uba", "refined-linear"
#: Refined arm -> the arm whose run it refines.
REFINED_ARMS: Mapping[str, str] = {REFINED_UBA: UBA, REFINED_LINEAR: "linear"}
#: ``params`` keys of :func:`arm_config` for a refined arm: the source run's per-update norms
#: (length = the full budget) and the refinement's optimizer family (``sgd`` or ``adam``).
NORMS, REFINE_OPTIMIZER = "norms", "refine_optimizer"

#: Names users know from the paper and other libraries, mapped onto registry names.
ALIASES: dict[str, str] = {"clr": "triangular", "cyclic": "triangular", "one_cycle": "onecycle",
                           "multistep": "step", "exp": "exponential",
                           "schedule_free": SCHEDULE_FREE, "schedule-free": SCHEDULE_FREE}

#: Scheduled arms (and searched UBA by default) sweep :data:`SCHEDULED_LR_FACTORS` × the
#: study's lr. Schedule-free's README puts good rates 10–50× (SGD) or 1–10× (AdamW) above a
#: scheduled one: its range is shifted there, as wide.
SCHEDULE_FREE_LR_FACTORS: Mapping[str, tuple[float, float]] = {"sgd": (2.5, 40.0),
                                                               "adamw": (0.5, 8.0)}


def resolve_arm(name: str) -> str:
    """Registry name of a compare arm, or ValueError naming the valid ones."""
    resolved = ALIASES.get(name, name)
    if resolved in (UBA_DEFAULT, SCHEDULE_FREE, *SELF_TUNING) or (
            resolved in SCHEDULES and resolved != UBA):
        return resolved
    valid = sorted([*(n for n in SCHEDULES if n != UBA), *ALIASES, UBA_DEFAULT, SCHEDULE_FREE,
                    *SELF_TUNING])
    raise ValueError(f"unknown baseline {name!r}; valid: {', '.join(valid)}")


#: Former name, kept for the service's spec checks.
resolve_baseline = resolve_arm


def lr_factors(arm: str, optimizer: str) -> tuple[float, float]:
    """The η_max (lr) range an arm's tuning sweeps, as factors of the study's lr."""
    if arm == SCHEDULE_FREE:
        return SCHEDULE_FREE_LR_FACTORS[optimizer.removesuffix("_schedulefree")]
    return SCHEDULED_LR_FACTORS


def arm_config(arm: str, base: TrainConfig, params: Mapping[str, Any]) -> TrainConfig:
    """The trial config of one candidate of ``arm`` on ``base`` (a horizon and seed already set).

    ``params`` holds ``lr`` (η_max; the study's lr when absent) and, for UBA, ``phi``,
    ``phases``, ``variant``, ``eta_min`` and ``warmup_steps`` (steps of this run); for
    AutoLRS, ``lr`` is the centre of its lr search and ``autolrs`` its
    :class:`~trainables.autolrs.AutoLRSSettings` (default ones when absent); for a refined arm
    (:data:`REFINED_ARMS`), ``norms`` (the source run's, one per update of the full budget)
    and ``refine_optimizer``: a run of another length gets the norms resampled to its steps
    (:func:`tuning.schedules.resample_norms`, linear interpolation over the run's progress),
    the full budget gets them as recorded."""
    lr = float(params.get(LR, base.lr))
    if arm in REFINED_ARMS:
        norms = resample_norms(params[NORMS], base.total_steps)
        return base.with_schedule("refined", lr=lr, norms=norms,
                                  optimizer=params[REFINE_OPTIMIZER])
    if arm == AUTOLRS:
        settings = params.get(AUTOLRS_SETTINGS) or AutoLRSSettings()
        return base.with_schedule(AUTOLRS, lr=lr, **settings.to_params())
    if arm == UBA:
        extra = {k: params[k] for k in ("variant", "eta_min") if params.get(k) is not None}
        if params.get("warmup_steps"):
            extra["warmup_steps"] = int(params["warmup_steps"])
        return base.with_schedule(UBA, phi=float(params[PHI]), phases=int(params[PHASES]),
                                  lr=lr, **extra)
    if arm == UBA_DEFAULT:
        return base.with_schedule(UBA, phi=PAPER_DEFAULT_PHI[base.optimizer], phases=1, lr=lr)
    if arm == SCHEDULE_FREE:
        sf = dataclasses.replace(base, optimizer=f"{base.optimizer}_schedulefree")
        return sf.with_schedule("constant", lr=lr, warmup_steps=max(
            0, round(SCHEDULE_FREE_WARMUP * base.total_steps)))
    return base.with_schedule(arm, lr=lr)
