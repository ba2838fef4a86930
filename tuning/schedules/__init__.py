"""Learning-rate schedules: exact UBA (Eq. 5 of "Stepsize anything", NeurIPS 2025) and the
baselines it is compared with, as pure :class:`Schedule` objects and torch schedulers.

>>> from tuning.schedules import create_schedule, UBALR
>>> sched = create_schedule("uba", total_steps=1000, phi=5.0, eta_max=0.1)
>>> round(sched.lr(500), 5)
0.02851

Drop-in use elsewhere (``_interop``): ``get_uba_schedule`` (Hugging Face signature, a
``LambdaLR``; ``get_refined_schedule`` and ``get_piecewise_schedule`` likewise for a refined
or a piecewise-constant one), ``StepUpdateScheduler``
(timm's ``step_update``), ``lightning_scheduler_config`` (Lightning's
``configure_optimizers``), ``scheduler_from_best`` (a tuned result, one call).

Modules: ``_uba`` (Eq. 5, :data:`DEFAULT_VARIANT`), ``_baselines`` (other curves),
``_refined`` (refinement from gradient norms, Defazio et al. 2023), ``_piecewise``
(piecewise-constant, e.g. an AutoLRS run's stage lrs),
``_registry`` (names and parameters), ``_schedule`` (:class:`Schedule`), ``_torch``
(``ScheduleLR``), ``_ubalr`` (``UBALR``), ``_interop`` (HF / timm / Lightning / best result),
``fit`` (Table 1 fits), ``plot`` (PNG plots).
"""

from ._base import (
    ParamInfo,
    ScheduleError,
    ScheduleInfo,
    ScheduleParamError,
    UnknownScheduleError,
)
from ._interop import (
    SCHEDULER_STYLES,
    StepUpdateScheduler,
    get_piecewise_schedule,
    get_refined_schedule,
    get_uba_schedule,
    lightning_scheduler_config,
    schedule_from_best,
    scheduler_from_best,
)
from ._refined import REFINED_OPTIMIZERS, median_smooth, refined_multipliers, resample_norms
from ._registry import SCHEDULES, schedule_names
from ._schedule import Schedule, create_schedule
from ._torch import ScheduleLR
from ._uba import DEFAULT_VARIANT, UBA_VARIANTS, UBACurve, equal_boundaries, uba_array, uba_lr
from ._ubalr import UBALR

__all__ = [
    "DEFAULT_VARIANT",
    "SCHEDULER_STYLES",
    "SCHEDULES",
    "UBALR",
    "UBA_VARIANTS",
    "REFINED_OPTIMIZERS",
    "ParamInfo",
    "Schedule",
    "ScheduleError",
    "ScheduleInfo",
    "ScheduleLR",
    "ScheduleParamError",
    "StepUpdateScheduler",
    "UBACurve",
    "UnknownScheduleError",
    "create_schedule",
    "equal_boundaries",
    "get_piecewise_schedule",
    "get_refined_schedule",
    "get_uba_schedule",
    "lightning_scheduler_config",
    "median_smooth",
    "refined_multipliers",
    "resample_norms",
    "schedule_from_best",
    "scheduler_from_best",
    "schedule_names",
    "uba_array",
    "uba_lr",
]
