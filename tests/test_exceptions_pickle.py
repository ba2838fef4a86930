"""Every exception phitune defines survives a pickle round trip with its message.

Ray pickles a trial's or task's exception to record it; one whose ``__init__`` takes other
arguments than ``Exception.args`` holds cannot be rebuilt, and users then see a ``TypeError``
about ``__init__`` instead of the reason (issue: ``ScheduleParamError`` after crossing Ray).
The classes are found by walking the packages, so a new one is covered without editing this.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import typing
from typing import Any

import pytest

PACKAGES = ("service", "tuning", "trainables")
#: Modules that do something when imported (run migrations, the CLI) rather than define.
SKIP_MODULES = ("service.migrations", "service.cli.__main__")


def _exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
            if info.name.startswith(SKIP_MODULES):
                continue
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__.startswith(PACKAGES):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def _sample(name: str, annotation: Any) -> Any:
    """A plausible value for a constructor parameter, from its annotation or name."""
    text = str(annotation)
    if "Sequence" in text or "Iterable" in text or "list" in text:
        return ["alpha", "beta"]
    if text in ("int", "<class 'int'>") or name in ("step", "limit", "steps"):
        return 7
    if text in ("float", "<class 'float'>") or name in ("loss", "lr", "value"):
        return 0.5
    return f"{name}-value"


def _instance(cls: type[BaseException]) -> BaseException:
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - forward references of another module
        hints = {}
    args = []
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty:
            continue
        args.append(_sample(p.name, hints.get(p.name, p.annotation)))
    if not args:
        args = ["something went wrong: field=7"]
    return cls(*args)


CLASSES = _exception_classes()


def test_the_walk_finds_the_known_exceptions():
    names = {c.__name__ for c in CLASSES}
    assert {"ScheduleParamError", "DivergedError", "PhituneError", "DataAccessError",
            "UnsafePickleError", "MemoryBudgetError"} <= names, sorted(names)


@pytest.mark.parametrize("cls", CLASSES, ids=[f"{c.__module__}.{c.__qualname__}" for c in CLASSES])
def test_exception_survives_pickling_with_its_message(cls):
    err = _instance(cls)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err) and str(err)
