"""PyTorch adapter: ``ScheduleLR`` drives an optimizer with any :class:`Schedule`.

It computes the LR in closed form from ``self.last_epoch`` in ``get_lr()`` (step ``i`` of
the schedule = the LR used by the ``i``-th optimizer update, 0-based), so ``step()``,
``step(epoch)``, ``state_dict``/``load_state_dict`` and ``get_last_lr()`` behave like
torch's own closed-form schedulers. ``__init__`` has no side effects beyond torch's base
class (which records ``initial_lr`` in each param group and sets the step-0 LR).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["ScheduleLR"]


class ScheduleLike(Protocol):
    """What ``ScheduleLR`` needs of :class:`tuning.schedules.Schedule` (structural type)."""

    total_steps: int

    @property
    def eta_max(self) -> float: ...

    @property
    def relative(self) -> bool: ...

    def lr(self, step: int) -> float: ...

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScheduleLike: ...


class ScheduleLR(LRScheduler):
    """Drive an optimizer's LRs with a :class:`Schedule`.

    Several param groups:

    * relative (``relative=True``, the default when the schedule has no explicit
      ``eta_max``): group ``g`` gets ``base_lr_g * schedule.lr(i) / schedule.eta_max``, so
      groups keep their LR ratios (layer-wise LRs, no-decay groups) and ``eta_min`` is a
      fraction of each group's LR;
    * absolute (``relative=False``, the default when ``eta_max`` was given): every group
      gets ``schedule.lr(i)``.

    >>> import torch
    >>> from tuning.schedules import create_schedule
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> sched = ScheduleLR(opt, create_schedule("cosine", 10))
    >>> sched.get_last_lr()
    [0.1]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: ScheduleLike,
        *,
        relative: bool | None = None,
        last_epoch: int = -1,
    ) -> None:
        if not all(hasattr(schedule, a) for a in ("lr", "eta_max", "relative", "to_dict",
                                                      "from_dict", "total_steps")):
            raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.relative = schedule.relative if relative is None else bool(relative)
        self.total_steps = schedule.total_steps
        # Filled on the first get_lr(), once the base class has recorded base_lrs.
        self._group_schedules: list[ScheduleLike] | None = None
        self._factors: list[float] | None = None
        super().__init__(optimizer, last_epoch)

    def _make_groups(self) -> tuple[list[ScheduleLike], list[float]]:
        """Per-group (schedule, factor); group LR = factor * schedule.lr(step)."""
        n = len(self.base_lrs)
        if self.relative:
            peak = self.schedule.eta_max
            return [self.schedule] * n, [float(b) / peak for b in self.base_lrs]
        return [self.schedule] * n, [1.0] * n

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """Closed form: ``factor_g * schedule_g.lr(last_epoch)`` for each param group."""
        if self._factors is None or self._group_schedules is None:
            self._group_schedules, self._factors = self._make_groups()
        step = self.last_epoch
        first = self._group_schedules[0]
        if all(s is first for s in self._group_schedules):  # one curve: evaluate it once
            value = first.lr(step)
            return [f * value for f in self._factors]
        return [f * s.lr(step) for s, f in zip(self._group_schedules, self._factors,
                                                strict=True)]

    _get_closed_form_lr = get_lr

    def state_dict(self) -> dict[str, Any]:
        """Base-class state with schedules as plain dicts (loadable with weights_only)."""
        state = super().state_dict()
        state["schedule"] = self.schedule.to_dict()
        if self._group_schedules is not None:
            state["_group_schedules"] = [s.to_dict() for s in self._group_schedules]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state; continuing then gives exactly the uninterrupted values."""
        state = dict(state_dict)
        cls = type(self.schedule)
        if isinstance(state.get("schedule"), dict):
            state["schedule"] = cls.from_dict(state["schedule"])
        groups = state.get("_group_schedules")
        if groups is not None:
            state["_group_schedules"] = [
                cls.from_dict(g) if isinstance(g, dict) else g for g in groups
            ]
        super().load_state_dict(state)
