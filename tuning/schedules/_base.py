"""Registry types: parameter descriptions, schedule descriptions and their errors.

The service validates schedule specs with :data:`tuning.schedules.SCHEDULES`, so every
parameter carries its kind, default and bounds here, and every refusal names the schedule,
the parameter, the value and what is allowed (style rule 8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ScheduleError",
    "UnknownScheduleError",
    "ScheduleParamError",
    "ParamInfo",
    "ScheduleInfo",
    "Curve",
]

#: What a builder returns: the body's per-step LR function (0-based step of the body, i.e.
#: after warmup) and the peak LR the schedule reaches (eta_max, 1.0 in relative mode).
Curve = tuple[Callable[[int], float], float]

PARAM_KINDS = ("float", "int", "str", "bool", "float_or_list", "float_list", "int_list")


class ScheduleError(ValueError):
    """Base class of every refusal by the schedule library (a ``ValueError``)."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray pickles a trial's error; subclasses' __init__ take other arguments than
        # Exception.args holds, so rebuild from the finished state instead of calling it.
        return (_rebuild_error, (type(self), self.args), self.__dict__)


def _rebuild_error(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    err = cls.__new__(cls)
    err.args = args
    return err


class UnknownScheduleError(ScheduleError):
    """The schedule name is not in the registry; the message lists the valid names."""

    def __init__(self, name: str, valid: Sequence[str]) -> None:
        self.name = name
        self.valid = tuple(valid)
        super().__init__(f"unknown schedule {name!r}; valid schedules: {', '.join(valid)}")


class ScheduleParamError(ScheduleError):
    """A schedule parameter is unknown, of the wrong type or out of bounds."""

    def __init__(self, schedule: str, param: str, message: str) -> None:
        self.schedule = schedule
        self.param = param
        super().__init__(f"{schedule}: parameter {param!r}: {message}")


def _fmt_bound(x: float | None) -> str:
    if x is None:
        return "inf"
    return f"{x:g}"


@dataclass(frozen=True)
class ParamInfo:
    """One schedule parameter: kind, default, bounds, meaning.

    ``kind`` is one of ``float``, ``int``, ``str``, ``bool``, ``float_or_list`` (a number or
    one number per phase), ``float_list``, ``int_list``. Bounds apply to every element;
    ``low_open``/``high_open`` make them strict. ``nullable`` allows ``None`` (meaning
    documented per parameter, e.g. ``eta_max=None`` = relative to the optimizer's LR).
    """

    name: str
    kind: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    nullable: bool = False

    def __post_init__(self) -> None:
        if self.kind not in PARAM_KINDS:
            raise ValueError(f"ParamInfo {self.name}: kind {self.kind!r} not in {PARAM_KINDS}")

    def allowed(self) -> str:
        """Human-readable description of the allowed values (used in error messages)."""
        if self.kind == "str":
            text = "one of " + ", ".join(repr(c) for c in self.choices or ())
        elif self.kind == "bool":
            text = "true or false"
        else:
            base = {"float": "number", "int": "integer", "float_or_list": "number",
                    "float_list": "list of numbers", "int_list": "list of integers"}[self.kind]
            lo = "(" if self.low_open or self.low is None else "["
            hi = ")" if self.high_open or self.high is None else "]"
            bounds = f"{lo}{_fmt_bound(self.low) if self.low is not None else '-inf'}, " \
                     f"{_fmt_bound(self.high)}{hi}"
            text = f"{base} in {bounds}"
            if self.kind == "float_or_list":
                text += " or a list of such numbers, one per phase"
        if self.nullable:
            text += " or null"
        return text

    def _check_number(self, schedule: str, value: Any, integer: bool) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScheduleParamError(schedule, self.name,
                                     f"{value!r} is not a number; allowed: {self.allowed()}")
        if integer:
            if isinstance(value, float):
                if not value.is_integer():
                    raise ScheduleParamError(
                        schedule, self.name, f"{value!r} is not an integer; "
                        f"allowed: {self.allowed()}")
                value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ScheduleParamError(schedule, self.name,
                                         f"{value!r} is not finite; allowed: {self.allowed()}")
        lo_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        hi_bad = self.high is not None and (
            value >= self.high if self.high_open else value > self.high)
        if lo_bad or hi_bad:
            raise ScheduleParamError(schedule, self.name,
                                     f"{value!r} is out of range; allowed: {self.allowed()}")
        return value

    def _check_list(self, schedule: str, value: Any, integer: bool) -> tuple[Any, ...]:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ScheduleParamError(schedule, self.name,
                                     f"{value!r} is not a list; allowed: {self.allowed()}")
        if len(value) == 0:
            raise ScheduleParamError(schedule, self.name,
                                     f"empty list; allowed: {self.allowed()}")
        return tuple(self._check_number(schedule, v, integer) for v in value)

    def coerce(self, schedule: str, value: Any) -> Any:
        """Check ``value`` and return its canonical form (float, int, str, bool, tuple).

        Raises :class:`ScheduleParamError` naming the parameter, the value and the range.
        """
        if value is None:
            if self.nullable:
                return None
            raise ScheduleParamError(schedule, self.name, f"None; allowed: {self.allowed()}")
        kind = self.kind
        if kind == "float":
            return self._check_number(schedule, value, integer=False)
        if kind == "int":
            return self._check_number(schedule, value, integer=True)
        if kind == "bool":
            if not isinstance(value, bool):
                raise ScheduleParamError(schedule, self.name,
                                         f"{value!r} is not a bool; allowed: {self.allowed()}")
            return value
        if kind == "str":
            if not isinstance(value, str) or value not in (self.choices or ()):
                raise ScheduleParamError(schedule, self.name,
                                         f"{value!r} is invalid; allowed: {self.allowed()}")
            return value
        if kind == "float_or_list":
            if isinstance(value, Sequence) and not isinstance(value, str | bytes):
                vals = self._check_list(schedule, value, integer=False)
                return vals[0] if len(vals) == 1 else vals
            return self._check_number(schedule, value, integer=False)
        return self._check_list(schedule, value, integer=kind == "int_list")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (for ``GET /v1/schedules``)."""
        default = list(self.default) if isinstance(self.default, tuple) else self.default
        return {
            "name": self.name,
            "kind": self.kind,
            "default": default,
            "description": self.description,
            "low": self.low,
            "high": self.high,
            "low_open": self.low_open,
            "high_open": self.high_open,
            "choices": list(self.choices) if self.choices is not None else None,
            "nullable": self.nullable,
            "allowed": self.allowed(),
        }


@dataclass(frozen=True)
class ScheduleInfo:
    """A registered schedule: description, parameters and the builder of its curve.

    ``build(body_steps, params)`` receives the number of steps after warmup and the
    validated parameters (defaults filled) and returns a :data:`Curve`.
    """

    name: str
    description: str
    params: Mapping[str, ParamInfo]
    build: Callable[[int, Mapping[str, Any]], Curve] = field(repr=False, compare=False)
    torch_equivalent: str | None = None
    #: Optional hook that resolves derived defaults (e.g. UBA ``phases`` from boundaries).
    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = field(
        default=None, repr=False, compare=False)

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``params`` checked and completed with defaults, in registry order.

        Unknown names raise :class:`ScheduleParamError` listing the valid parameters.
        Cross-parameter checks (e.g. ``eta_min <= eta_max``) happen in ``build``.
        """
        unknown = [k for k in params if k not in self.params]
        if unknown:
            raise ScheduleParamError(
                self.name, unknown[0],
                f"unknown parameter; valid parameters: {', '.join(self.params)}")
        out: dict[str, Any] = {}
        for pname, info in self.params.items():
            out[pname] = info.coerce(self.name, params[pname]) if pname in params \
                else info.default
        return self.normalize(out) if self.normalize is not None else out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (for ``GET /v1/schedules``)."""
        return {
            "name": self.name,
            "description": self.description,
            "torch_equivalent": self.torch_equivalent,
            "params": {k: v.to_dict() for k, v in self.params.items()},
        }
