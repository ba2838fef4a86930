"""``Schedule``: one pure, frozen object type for every registered schedule name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._base import ScheduleParamError, UnknownScheduleError
from ._registry import SCHEDULES
from ._torch import ScheduleLR

if TYPE_CHECKING:
    from torch.optim import Optimizer

__all__ = ["Schedule", "create_schedule"]


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _short(value: Any) -> str:
    """``repr`` of a parameter, a long list (refined's per-step norms) shortened."""
    if isinstance(value, list) and len(value) > 8:
        head = ", ".join(repr(v) for v in value[:3])
        return f"[{head}, ..., {value[-1]!r}] ({len(value)} values)"
    return repr(value)


@dataclass(frozen=True, eq=False)
class Schedule:
    """A learning-rate schedule over ``total_steps`` optimizer updates, as a pure function.

    Holds no optimizer and no counter (timm's ``_get_lr(t)`` idea): :meth:`lr` maps a 0-based
    step to the absolute LR in closed form, so any step can be evaluated in any order and
    resuming is exact. Construction validates ``params`` against :data:`SCHEDULES` and fills
    defaults; ``params`` afterwards is the complete, read-only parameter set.

    Steps ``>= total_steps`` hold the last value (a scheduler stepped once more after the
    final update must not fail); negative steps are refused.

    ``eta_max=None`` (the default) is *relative mode*: the curve peaks at 1.0 and
    :meth:`scheduler` multiplies each param group's own LR by it.

    >>> s = create_schedule("uba", 4, phi=5.0, eta_max=0.1)
    >>> [round(v, 4) for v in s.values()]
    [0.091, 0.0473, 0.0152, 0.0016]
    """

    name: str
    total_steps: int
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        info = SCHEDULES.get(self.name)
        if info is None:
            raise UnknownScheduleError(self.name, list(SCHEDULES))
        total = self.total_steps
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ScheduleParamError(self.name, "total_steps", f"{total!r} must be an int >= 1")
        params = info.validate(dict(self.params))
        warmup = params.get("warmup_steps", 0)
        if warmup >= total:
            raise ScheduleParamError(
                self.name, "warmup_steps",
                f"{warmup} must be < total_steps={total} (the schedule needs >= 1 step)")
        fn, peak = info.build(total - warmup, params)
        set_ = object.__setattr__
        set_(self, "params", MappingProxyType(params))
        set_(self, "_fn", fn)
        set_(self, "_peak", float(peak))
        set_(self, "_warmup", int(warmup))
        set_(self, "_last", total - 1)

    # -- values ---------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        """Absolute LR of 0-based ``step`` (closed form; steps past the end hold the last)."""
        if step > self._last:
            step = self._last
        elif step < 0:
            raise ValueError(f"step={step} must be >= 0")
        if step < self._warmup:
            # Linear warmup, separate from the schedule's formula: reaches the peak on the
            # last warmup step and never spends an update at LR 0.
            return self._peak * (step + 1) / self._warmup
        return self._fn(step - self._warmup)

    def values(self) -> list[float]:
        """``[lr(0), ..., lr(total_steps - 1)]``."""
        return [self.lr(i) for i in range(self.total_steps)]

    @property
    def eta_max(self) -> float:
        """Peak LR: ``eta_max`` (the largest per-phase one), 1.0 in relative mode."""
        return self._peak

    @property
    def relative(self) -> bool:
        """True when ``eta_max`` was not given: values are multipliers of a group's LR."""
        return self.params.get("eta_max") is None

    @property
    def warmup_steps(self) -> int:
        return self._warmup

    # -- torch ----------------------------------------------------------------------------
    def scheduler(self, optimizer: Optimizer, *, relative: bool | None = None) -> ScheduleLR:
        """A ``torch.optim.lr_scheduler.LRScheduler`` that follows this schedule.

        ``relative=None`` follows :attr:`relative`; see :class:`ScheduleLR`.
        """
        return ScheduleLR(optimizer, self, relative=relative)

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"name", "total_steps", "params"}``, JSON-serialisable; inverse of from_dict."""
        return {
            "name": self.name,
            "total_steps": self.total_steps,
            "params": {k: _jsonable(v) for k, v in self.params.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        """Rebuild a schedule from :meth:`to_dict` output (validated again)."""
        return cls(data["name"], int(data["total_steps"]), dict(data.get("params", {})))

    def _key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[Any, ...]:
        # The built curve is a closure; pickle (Ray, torch.save) rebuilds it from params.
        return (_rebuild, (self.name, self.total_steps, dict(self.params)))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={_short(_jsonable(v))}" for k, v in self.params.items())
        return f"Schedule({self.name!r}, total_steps={self.total_steps}, {inner})"


def _rebuild(name: str, total_steps: int, params: dict[str, Any]) -> Schedule:
    return Schedule(name, total_steps, params)


def create_schedule(name: str, total_steps: int, **params: Any) -> Schedule:
    """Build the schedule ``name`` over ``total_steps`` updates.

    Unknown names raise :class:`UnknownScheduleError`, unknown or out-of-range parameters
    :class:`ScheduleParamError` (both ``ValueError``), each listing what is valid.

    >>> create_schedule("uba", 1000, phi=5.0, eta_max=0.1).lr(0) > 0.0999
    True
    """
    return Schedule(name, total_steps, params)
