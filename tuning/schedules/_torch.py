"""PyTorch adapters: ``ScheduleLR`` for any :class:`Schedule`, ``UBALR`` for Eq. (5).

Both compute the LR in closed form from ``self.last_epoch`` in ``get_lr()`` (step ``i`` of
the schedule = the LR used by the ``i``-th optimizer update, 0-based), so ``step()``,
``step(epoch)``, ``state_dict``/``load_state_dict`` and ``get_last_lr()`` behave like
torch's own closed-form schedulers. ``__init__`` has no side effects beyond torch's base
class (which records ``initial_lr`` in each param group and sets the step-0 LR).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ._base import ScheduleParamError
from ._schedule import Schedule, create_schedule

__all__ = ["ScheduleLR", "UBALR"]


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
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> sched = ScheduleLR(opt, create_schedule("cosine", 10))
    >>> sched.get_last_lr()
    [0.1]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: Schedule,
        *,
        relative: bool | None = None,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.relative = schedule.relative if relative is None else bool(relative)
        self.total_steps = schedule.total_steps
        # Filled on the first get_lr(), once the base class has recorded base_lrs.
        self._group_schedules: list[Schedule] | None = None
        self._factors: list[float] | None = None
        super().__init__(optimizer, last_epoch)

    def _make_groups(self) -> tuple[list[Schedule], list[float]]:
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
        if isinstance(state.get("schedule"), dict):
            state["schedule"] = Schedule.from_dict(state["schedule"])
        groups = state.get("_group_schedules")
        if groups is not None:
            state["_group_schedules"] = [
                g if isinstance(g, Schedule) else Schedule.from_dict(g) for g in groups
            ]
        super().load_state_dict(state)


class UBALR(ScheduleLR):
    r"""The UBA schedule, Eq. (5) of "Stepsize anything" (NeurIPS 2025), for any optimizer.

    For update ``t = last_epoch + 1`` in phase ``k``:
    ``eta_t = (eta_max - eta_min) 2(1 + cos c) / (2 phi + (2 - phi)(1 + cos c)) + eta_min``
    with ``c = (2(t - T_k) - 1) pi / (2(T_{k+1} - T_k)) + (k - 1) pi``.

    ``eta_max=None`` uses each param group's own initial LR as its ``eta_max`` (with the
    absolute ``eta_min``, like ``CosineAnnealingLR``); a number (or one per phase) applies to
    every group. ``phi`` may be a list (one per phase); ``boundaries`` (0-based steps where
    phases 2..K start) replaces equal ``phases``. ``warmup_steps`` adds a linear warmup that
    is part of ``total_steps``. ``phases`` is the paper's ``K - 1``.

    >>> import torch
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> sched = UBALR(opt, total_steps=100, phi=5.0)
    >>> round(sched.get_last_lr()[0], 6)
    0.099985
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        phi: float | Sequence[float],
        phases: int = 1,
        eta_min: float = 0.0,
        eta_max: float | Sequence[float] | None = None,
        variant: str = "cyclic",
        warmup_steps: int = 0,
        last_epoch: int = -1,
        *,
        boundaries: Sequence[int] | None = None,
    ) -> None:
        self._uba_params: dict[str, Any] = {
            "phi": list(phi) if isinstance(phi, Sequence) else phi,
            "phases": None if boundaries is not None and phases == 1 else phases,
            "boundaries": list(boundaries) if boundaries is not None else None,
            "eta_min": eta_min,
            "variant": variant,
            "warmup_steps": warmup_steps,
        }
        eta = list(eta_max) if isinstance(eta_max, Sequence) else eta_max
        schedule = create_schedule("uba", total_steps, eta_max=eta, **self._uba_params)
        super().__init__(optimizer, schedule, relative=False, last_epoch=last_epoch)

    def _make_groups(self) -> tuple[list[Schedule], list[float]]:
        n = len(self.base_lrs)
        if self.schedule.params["eta_max"] is not None:
            return [self.schedule] * n, [1.0] * n
        scheds = []
        for g, base in enumerate(self.base_lrs):
            try:
                scheds.append(create_schedule("uba", self.total_steps, eta_max=float(base),
                                              **self._uba_params))
            except ScheduleParamError as exc:
                raise ScheduleParamError(
                    "uba", exc.param, f"param group {g} (lr={float(base)!r}): {exc}") from exc
        return scheds, [1.0] * n
