"""``UBALR``: Eq. (5) as a ``torch.optim.lr_scheduler.LRScheduler``.

A thin subclass of :class:`ScheduleLR` over ``create_schedule("uba", ...)``; the only thing
it adds is that ``eta_max=None`` means *each param group's own LR* (like
``CosineAnnealingLR``), which needs one curve per group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer

from ._base import ScheduleParamError
from ._schedule import Schedule, create_schedule
from ._torch import ScheduleLR
from ._uba import DEFAULT_VARIANT

__all__ = ["UBALR"]


class UBALR(ScheduleLR):
    r"""The UBA schedule, Eq. (5) of "Stepsize anything" (NeurIPS 2025), for any optimizer.

    For update ``t = last_epoch + 1`` in phase ``k``:
    ``eta_t = (eta_max - eta_min) 2(1 + cos c) / (2 phi + (2 - phi)(1 + cos c)) + eta_min``
    with ``c = (2(t - T_k) - 1) pi / (2(T_{k+1} - T_k)) + (k - 1) pi``.

    ``eta_max=None`` uses each param group's own initial LR as its ``eta_max`` (with the
    absolute ``eta_min``, like ``CosineAnnealingLR``); a number (or one per phase) applies to
    every group. ``phi`` may be a list (one per phase); ``boundaries`` (0-based steps where
    phases 2..K start) replaces equal ``phases``. ``peak_decay`` scales phase k's peak by
    ``peak_decay ** (k - 1)`` (a lower η_max after each restart). ``warmup_steps`` adds a linear warmup that
    is part of ``total_steps``. ``phases`` is the paper's ``K - 1``; ``variant`` defaults to
    :data:`DEFAULT_VARIANT` (``"restart"``), the variant the service tunes.

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
        variant: str = DEFAULT_VARIANT,
        warmup_steps: int = 0,
        last_epoch: int = -1,
        *,
        boundaries: Sequence[int] | None = None,
        peak_decay: float = 1.0,
    ) -> None:
        self._uba_params: dict[str, Any] = {
            "phi": list(phi) if isinstance(phi, Sequence) else phi,
            "phases": None if boundaries is not None and phases == 1 else phases,
            "boundaries": list(boundaries) if boundaries is not None else None,
            "eta_min": eta_min,
            "variant": variant,
            "warmup_steps": warmup_steps,
            "peak_decay": peak_decay,
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
