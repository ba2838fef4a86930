"""Learning-rate schedules: exact UBA (Eq. 5 of "Stepsize anything", NeurIPS 2025) and the
baselines it is compared with, as pure :class:`Schedule` objects and torch schedulers.

>>> from tuning.schedules import create_schedule, UBALR
>>> sched = create_schedule("uba", total_steps=1000, phi=5.0, eta_max=0.1)
>>> round(sched.lr(500), 5)
0.02851

Modules: ``_uba`` (Eq. 5), ``_baselines`` (other curves), ``_registry`` (names and
parameters), ``_schedule`` (:class:`Schedule`), ``_torch`` (LRScheduler adapters),
``fit`` (Table 1 fits), ``plot`` (PNG plots).
"""

from ._base import (
    ParamInfo,
    ScheduleError,
    ScheduleInfo,
    ScheduleParamError,
    UnknownScheduleError,
)
from ._registry import SCHEDULES, schedule_names
from ._schedule import Schedule, create_schedule
from ._torch import UBALR, ScheduleLR
from ._uba import UBA_VARIANTS, UBACurve, equal_boundaries, uba_array, uba_lr

__all__ = [
    "SCHEDULES",
    "UBALR",
    "UBA_VARIANTS",
    "ParamInfo",
    "Schedule",
    "ScheduleError",
    "ScheduleInfo",
    "ScheduleLR",
    "ScheduleParamError",
    "UBACurve",
    "UnknownScheduleError",
    "create_schedule",
    "equal_boundaries",
    "schedule_names",
    "uba_array",
    "uba_lr",
]
