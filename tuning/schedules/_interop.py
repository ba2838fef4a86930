"""Drop-in adapters: the UBA schedule (or a tuned result) in the loops people already have.

* Hugging Face: :func:`get_uba_schedule` has the signature of ``transformers``'
  ``get_*_schedule_with_warmup`` and returns a ``LambdaLR`` whose factor multiplies the
  optimizer's LR, so ``Trainer(optimizers=(opt, sched))`` or a plain loop uses it as is.
  :func:`get_refined_schedule` does the same for a refined schedule (any optimizer),
  :func:`get_piecewise_schedule` for a piecewise-constant one (stage lrs as factors).
* timm: :class:`StepUpdateScheduler` implements timm's scheduler protocol
  (``step_update(num_updates)`` after each update, ``step(epoch)`` a no-op as with timm's
  ``t_in_epochs=False``), so ``train_one_epoch``-style loops drive it unchanged.
* Lightning: :func:`lightning_scheduler_config` returns the ``lr_scheduler`` entry of
  ``configure_optimizers`` with ``interval="step"`` (Lightning's default is per *epoch*, which
  would stretch a per-update schedule over epochs)::

      def configure_optimizers(self):
          opt = torch.optim.AdamW(self.parameters(), lr=3e-4)
          sched = get_uba_schedule(opt, num_warmup_steps=100,
                                   num_training_steps=self.trainer.estimated_stepping_batches,
                                   phi=0.5)
          return {"optimizer": opt, "lr_scheduler": lightning_scheduler_config(sched)}

* A tuned result: :func:`scheduler_from_best` turns a ``BestSchedule`` (the tuning dataclass,
  the client's pydantic mirror or its JSON dict) into a scheduler in one call.

Every adapter evaluates :meth:`Schedule.lr` in closed form from the step it is given, so the
LR of update ``i`` is exactly ``schedule.lr(i)`` (times the group's LR in relative mode) and
resuming from a state dict is exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from ._refined import DEFAULT_WINDOW_FRAC
from ._registry import SCHEDULES
from ._schedule import Schedule, create_schedule
from ._uba import DEFAULT_VARIANT

__all__ = [
    "SCHEDULER_STYLES",
    "StepUpdateScheduler",
    "get_piecewise_schedule",
    "get_refined_schedule",
    "get_uba_schedule",
    "lightning_scheduler_config",
    "schedule_from_best",
    "scheduler_from_best",
]

#: What :func:`scheduler_from_best` can return (``style=``).
SCHEDULER_STYLES: tuple[str, ...] = ("torch", "timm", "lightning")


class _ScheduleFactor:
    """``LambdaLR``'s ``lr_lambda``: step -> ``schedule.lr(step)`` (relative mode, peak 1).

    ``LambdaLR.state_dict()`` saves a callable object's ``__dict__``; keeping only the
    schedule's plain dict there makes the scheduler state loadable with
    ``torch.load(weights_only=True)`` (what ``transformers.Trainer`` does on resume). The
    built :class:`Schedule` lives in a slot and is rebuilt when a loaded state replaces it.
    """

    __slots__ = ("__dict__", "_built", "_source")

    def __init__(self, schedule: Schedule) -> None:
        self.schedule: dict[str, Any] = schedule.to_dict()
        self._built = schedule
        self._source = self.schedule

    def __call__(self, step: int) -> float:
        if self._source is not self.schedule:  # load_state_dict replaced the dict
            self._built = Schedule.from_dict(self.schedule)
            self._source = self.schedule
        return self._built.lr(step)


def get_uba_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    phi: float | Sequence[float] | None = None,
    phases: int = 1,
    eta_min: float = 0.0,
    variant: str = DEFAULT_VARIANT,
    last_epoch: int = -1,
    *,
    boundaries: Sequence[int] | None = None,
) -> LambdaLR:
    """UBA with linear warmup as a ``LambdaLR``, in ``transformers``' scheduler signature.

    The factor of 0-based step ``i`` is ``create_schedule("uba", num_training_steps,
    warmup_steps=num_warmup_steps, ...).lr(i)`` in relative mode: warmup ``(i + 1) / W`` for
    ``i < W`` (it reaches the full LR on the last warmup step and never spends an update at
    LR 0, unlike HF's ``i / W``), then Eq. (5) over the remaining ``T - W`` steps from 1 down
    to ``eta_min``. ``eta_min`` is therefore a *fraction* of each group's LR (HF's
    ``min_lr_rate``). ``phi=None`` is the registry default (5, the paper's SGD value; the
    paper uses 0.5 for AdamW); ``phases`` is the paper's ``K - 1``; ``boundaries`` gives
    unequal phases. Call ``step()`` once after every optimizer update, as HF does.

    Raises ``ScheduleParamError`` (a ``ValueError``) naming the bad parameter.

    >>> import torch
    >>> opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    >>> sched = get_uba_schedule(opt, 10, 100, phi=0.5)
    >>> opt.param_groups[0]["lr"]
    0.0001
    """
    params: dict[str, Any] = {"eta_min": eta_min, "variant": variant,
                              "warmup_steps": num_warmup_steps}
    if phi is not None:
        params["phi"] = list(phi) if isinstance(phi, Sequence) else phi
    if boundaries is not None:
        params["boundaries"] = list(boundaries)
        if phases != 1:
            params["phases"] = phases
    else:
        params["phases"] = phases
    schedule = create_schedule("uba", num_training_steps, **params)
    return LambdaLR(optimizer, _ScheduleFactor(schedule), last_epoch=last_epoch)


def refined_optimizer_kind(optimizer: Optimizer) -> str:
    """The refinement family of a torch optimizer, from its class name: ``adam`` for the Adam
    type (Adam, AdamW, NAdam, RAdam, Adamax, schedule-free AdamW), ``sgd`` for SGD."""
    name = type(optimizer).__name__.lower()
    if "adam" in name:
        return "adam"
    if "sgd" in name:
        return "sgd"
    raise ValueError(f"optimizer_kind: cannot tell the family of {type(optimizer).__name__}; "
                     "pass optimizer_kind='sgd' (l2 norms) or 'adam' (l1 norms)")


def get_refined_schedule(
    optimizer: Optimizer,
    num_training_steps: int,
    norms: Sequence[float],
    *,
    optimizer_kind: str | None = None,
    window_frac: float = DEFAULT_WINDOW_FRAC,
    last_epoch: int = -1,
) -> LambdaLR:
    """The refined schedule of one run's gradient norms (Defazio et al. 2023) as a
    ``LambdaLR``, in ``transformers``' scheduler style: the factor of 0-based step ``i`` is
    ``create_schedule("refined", num_training_steps, norms=norms, ...).lr(i)`` in relative
    mode (peak 1, 0 on the last update), multiplying each param group's LR.

    ``norms`` holds one gradient norm per update of the run being refined (ℓ2 for SGD, ℓ1 for
    Adam-type; phitune records them per trial); ``optimizer_kind`` (``sgd``, ``adam``,
    ``adamw``) defaults to the family of ``optimizer``'s class. Call ``step()`` once after
    every optimizer update. Bad norms raise ``ScheduleParamError`` naming ``norms``.

    >>> import torch
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> sched = get_refined_schedule(opt, 3, [1.0, 1.0, 1.0])
    >>> [sched.lr_lambdas[0](i) for i in range(3)]
    [1.0, 0.5, 0.0]
    """
    kind = optimizer_kind if optimizer_kind is not None else refined_optimizer_kind(optimizer)
    schedule = create_schedule("refined", num_training_steps, norms=list(norms),
                               optimizer=kind, window_frac=window_frac)
    return LambdaLR(optimizer, _ScheduleFactor(schedule), last_epoch=last_epoch)


def get_piecewise_schedule(
    optimizer: Optimizer,
    num_training_steps: int,
    boundaries: Sequence[int] | None,
    factors: Sequence[float] | None,
    num_warmup_steps: int = 0,
    last_epoch: int = -1,
) -> LambdaLR:
    """A piecewise-constant schedule as a ``LambdaLR``, in ``transformers``' scheduler style:
    the factor of 0-based step ``i`` is ``create_schedule("piecewise", num_training_steps,
    boundaries=..., factors=..., warmup_steps=num_warmup_steps).lr(i)`` in relative mode,
    i.e. ``factors[j]`` on segment ``j`` (segments 2..n start at the 0-based ``boundaries``)
    after a linear warmup ``(i + 1) / W``, multiplying each param group's LR. Call ``step()``
    once after every optimizer update. Bad input raises ``ScheduleParamError`` naming
    ``boundaries`` or ``factors``.

    >>> import torch
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> sched = get_piecewise_schedule(opt, 4, [2], [1.0, 0.5])
    >>> [sched.lr_lambdas[0](i) for i in range(4)]
    [1.0, 1.0, 0.5, 0.5]
    """
    params: dict[str, Any] = {"warmup_steps": num_warmup_steps}
    if boundaries is not None:
        params["boundaries"] = list(boundaries)
    if factors is not None:
        params["factors"] = list(factors)
    schedule = create_schedule("piecewise", num_training_steps, **params)
    return LambdaLR(optimizer, _ScheduleFactor(schedule), last_epoch=last_epoch)


class StepUpdateScheduler:
    """timm's scheduler protocol over a :class:`Schedule` (``timm.scheduler.Scheduler``).

    timm's training loop calls ``lr_scheduler.step_update(num_updates=n)`` after the ``n``-th
    optimizer update and ``lr_scheduler.step(epoch + 1)`` after each epoch. Here
    ``step_update(n)`` sets the LR of the next update, i.e. 0-based step ``n`` of the
    schedule (the caller passes ``n``: no hidden counter, timm's ``_get_lr(t)`` idea), and
    ``step(epoch)`` does nothing, as a timm scheduler built with ``t_in_epochs=False``.
    Construction records ``initial_lr`` in each group (as timm does) and sets step 0's LR.

    Groups: relative mode (the default when the schedule has no ``eta_max``) scales each
    group's initial LR by ``schedule.lr(t) / eta_max``; absolute mode gives every group
    ``schedule.lr(t)`` (see :class:`ScheduleLR`).

    >>> import torch
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> sched = StepUpdateScheduler(opt, create_schedule("uba", 100, phi=5.0))
    >>> sched.step_update(num_updates=50)
    >>> round(opt.param_groups[0]["lr"], 6)
    0.027935
    """

    def __init__(self, optimizer: Optimizer, schedule: Schedule, *,
                 relative: bool | None = None, param_group_field: str = "lr") -> None:
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        self.optimizer = optimizer
        self.schedule = schedule
        self.relative = schedule.relative if relative is None else bool(relative)
        self.param_group_field = param_group_field
        initial = f"initial_{param_group_field}"
        for group in optimizer.param_groups:
            group.setdefault(initial, group[param_group_field])
        self.base_values = [float(g[initial]) for g in optimizer.param_groups]
        self.num_updates = 0
        self._apply(0)

    def _get_lr(self, t: int) -> list[float]:
        """Closed-form LR of 0-based step ``t`` for each param group."""
        value = self.schedule.lr(t)
        if self.relative:
            return [b * value / self.schedule.eta_max for b in self.base_values]
        return [value] * len(self.base_values)

    def _apply(self, t: int) -> None:
        for group, value in zip(self.optimizer.param_groups, self._get_lr(t), strict=True):
            group[self.param_group_field] = value

    def step(self, epoch: int, metric: float | None = None) -> None:
        """Per-epoch hook of timm's loop: a no-op (the schedule is indexed by updates)."""

    def step_update(self, num_updates: int, metric: float | None = None) -> None:
        """Set the LR of the update after the ``num_updates``-th (0-based step ``num_updates``)."""
        self.num_updates = int(num_updates)
        self._apply(self.num_updates)

    def get_last_lr(self) -> list[float]:
        return [float(g[self.param_group_field]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Plain data (loadable with ``torch.load(weights_only=True)``)."""
        return {"schedule": self.schedule.to_dict(), "relative": self.relative,
                "base_values": list(self.base_values), "num_updates": self.num_updates}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore; the next ``step_update`` then continues exactly."""
        self.schedule = Schedule.from_dict(state_dict["schedule"])
        self.relative = bool(state_dict["relative"])
        self.base_values = [float(b) for b in state_dict["base_values"]]
        self.step_update(int(state_dict["num_updates"]))


def lightning_scheduler_config(scheduler: LRScheduler, *, frequency: int = 1,
                               name: str | None = None) -> dict[str, Any]:
    """The ``lr_scheduler`` entry of Lightning's ``configure_optimizers`` for a per-update
    schedule: ``{"scheduler": ..., "interval": "step", "frequency": ...}``.

    Lightning calls ``scheduler.step()`` after every ``frequency``-th optimizer step when
    ``interval="step"``; its default (``"epoch"``) would advance the schedule once per epoch.
    """
    if frequency < 1:
        raise ValueError(f"frequency={frequency} must be >= 1")
    config: dict[str, Any] = {"scheduler": scheduler, "interval": "step",
                              "frequency": int(frequency)}
    if name is not None:
        config["name"] = name
    return config


def _field(best: Any, name: str) -> Any:
    if isinstance(best, Mapping):
        return best.get(name)
    return getattr(best, name, None)


def schedule_from_best(best: Any) -> Schedule:
    """The :class:`Schedule` a tuned ``BestSchedule`` describes (absolute LRs).

    ``best`` is ``tuning.results.BestSchedule``, the client's ``service.schemas.BestSchedule``
    or its JSON dict: ``schedule`` names the registry entry, ``total_steps`` the run length,
    and every other field the entry accepts (``phi``, ``phases``, ``eta_max``, ``eta_min``,
    ``variant``, ``warmup_steps``, ...) is passed on; missing or null fields take the
    registry default, fields the entry does not know (``value``, ``lr_curve``) are ignored.
    """
    name = _field(best, "schedule") or "uba"
    total = _field(best, "total_steps")
    if total is None:
        raise ValueError("best schedule has no total_steps")
    info = SCHEDULES.get(name)
    accepted = info.params if info is not None else {}
    params = {k: _field(best, k) for k in accepted if _field(best, k) is not None}
    return create_schedule(name, int(total), **params)


def scheduler_from_best(best: Any, optimizer: Optimizer, *,
                        style: str = "torch") -> Any:
    """Drive ``optimizer`` with the tuned schedule ``best`` (see :func:`schedule_from_best`).

    ``style="torch"``: a ``ScheduleLR`` (an ``LRScheduler``: plain loops, HF
    ``Trainer(optimizers=(opt, sched))``); ``"timm"``: a :class:`StepUpdateScheduler`;
    ``"lightning"``: the ``lr_scheduler`` dict of ``configure_optimizers``. Every param
    group follows the tuned absolute LRs (``eta_max`` of the result).
    """
    if style not in SCHEDULER_STYLES:
        raise ValueError(f"style={style!r} is not one of {', '.join(SCHEDULER_STYLES)}")
    schedule = schedule_from_best(best)
    if style == "timm":
        return StepUpdateScheduler(optimizer, schedule)
    sched = schedule.scheduler(optimizer)
    return lightning_scheduler_config(sched) if style == "lightning" else sched
