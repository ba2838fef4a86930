"""The ``piecewise`` schedule against its definition (``eta_max · factors[j]`` on segment ``j``,
segment ``j + 1`` starting at 0-based step ``boundaries[j]``), through every adapter (torch
scheduler driving an optimizer, HF LambdaLR, timm, Lightning, a tuned result), and its bad
params refused by name."""

from __future__ import annotations

import math

import pytest
import torch

from tuning.schedules import (
    Schedule,
    ScheduleParamError,
    StepUpdateScheduler,
    create_schedule,
    get_piecewise_schedule,
    lightning_scheduler_config,
    scheduler_from_best,
)

from .schedule_driving import drive, drive_with_resume

torch.set_num_threads(1)

T, ETA = 40, 0.3
BOUNDS, FACTORS = [5, 12, 30], [1.0, 0.25, 0.5, 0.0625]


def definition(i: int, total: int = T, bounds=BOUNDS, factors=FACTORS, eta=ETA,
               warmup: int = 0) -> float:
    """The definition written out: warmup ``eta (i + 1) / W``, then the factor of the last
    boundary at or before ``i`` (segment 1 before the first)."""
    if i < warmup:
        return eta * (i + 1) / warmup
    seg = 0
    for j, b in enumerate(bounds):
        if i >= b:
            seg = j + 1
    return eta * factors[seg]


def test_exact_values_at_every_boundary_and_between() -> None:
    s = create_schedule("piecewise", T, eta_max=ETA, boundaries=BOUNDS, factors=FACTORS)
    assert s.values() == [definition(i) for i in range(T)]
    for j, b in enumerate(BOUNDS):  # a boundary is the first step of the next segment
        assert s.lr(b - 1) == ETA * FACTORS[j]
        assert s.lr(b) == ETA * FACTORS[j + 1]
    assert s.lr(0) == ETA and s.lr(T - 1) == ETA * FACTORS[-1] == s.lr(T + 5)
    assert s.eta_max == ETA and not s.relative


def test_defaults_warmup_and_relative_mode() -> None:
    assert create_schedule("piecewise", 7, eta_max=0.2).values() == [0.2] * 7  # one segment
    assert create_schedule("piecewise", 6, eta_max=0.2, boundaries=[3]).values() == [0.2] * 6
    w = create_schedule("piecewise", 20, eta_max=ETA, boundaries=[8, 15],
                        factors=[1.0, 0.5, 0.1], warmup_steps=4)
    assert w.values() == [definition(i, 20, [8, 15], [1.0, 0.5, 0.1], warmup=4)
                          for i in range(20)]
    rel = create_schedule("piecewise", T, boundaries=BOUNDS, factors=FACTORS)
    assert rel.relative and rel.values() == [definition(i, eta=1.0) for i in range(T)]


def _opt(lr: float = ETA, cls=torch.optim.SGD) -> torch.optim.Optimizer:
    return cls(torch.nn.Linear(3, 2).parameters(), lr=lr)


def test_torch_scheduler_driving_an_optimizer_follows_the_closed_form() -> None:
    s = create_schedule("piecewise", T, eta_max=ETA, boundaries=BOUNDS, factors=FACTORS)
    want = [definition(i) for i in range(T)]
    o = _opt(lr=123.0)  # absolute mode: replaced by the schedule's lrs
    assert drive(s.scheduler(o), o, T) == want
    o = _opt(cls=torch.optim.AdamW)
    assert drive(StepUpdateScheduler(o, s), o, T, timm=True) == want
    o = _opt()
    cfg = lightning_scheduler_config(s.scheduler(o))
    assert cfg["interval"] == "step" and drive(cfg["scheduler"], o, T) == want
    for style in ("torch", "timm", "lightning"):
        o = _opt()
        got = scheduler_from_best({**s.to_dict()["params"], "schedule": "piecewise",
                                   "total_steps": T, "value": 0.5}, o, style=style)
        if style == "lightning":
            got = got["scheduler"]
        assert drive(got, o, T, timm=style == "timm") == want
    # HF style: factors of the group's own lr (here 2 x ETA), with warmup
    o = _opt(lr=2 * ETA)
    hf = get_piecewise_schedule(o, T, BOUNDS, FACTORS, num_warmup_steps=3)
    assert drive(hf, o, T) == pytest.approx(
        [2 * definition(i, warmup=3) for i in range(T)], rel=1e-15)


def test_state_dict_resumes_exactly_and_pickles() -> None:
    import pickle

    s = create_schedule("piecewise", T, eta_max=ETA, boundaries=BOUNDS, factors=FACTORS)
    want = s.values()
    assert drive_with_resume(s, _opt, 20, T) == want
    assert Schedule.from_dict(s.to_dict()) == s and pickle.loads(pickle.dumps(s)).values() == want


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"boundaries": [5, 5], "factors": [1.0, 0.5, 0.2]}, "boundaries"),  # not increasing
    ({"boundaries": [12, 5], "factors": [1.0, 0.5, 0.2]}, "boundaries"),
    ({"boundaries": [0], "factors": [1.0, 0.5]}, "boundaries"),  # must be >= 1
    ({"boundaries": [T], "factors": [1.0, 0.5]}, "boundaries"),  # must be <= T - 1
    ({"boundaries": [3], "factors": [1.0, 0.5], "warmup_steps": 3}, "boundaries"),  # in warmup
    ({"boundaries": [2.5], "factors": [1.0, 0.5]}, "boundaries"),
    ({"boundaries": [], "factors": [1.0]}, "boundaries"),
    ({"boundaries": [5], "factors": [1.0]}, "factors"),  # one per segment
    ({"boundaries": [5], "factors": [1.0, 0.5, 0.2]}, "factors"),
    ({"factors": [1.0, 0.5]}, "factors"),
    ({"boundaries": [5], "factors": [1.0, math.nan]}, "factors"),
    ({"boundaries": [5], "factors": [1.0, math.inf]}, "factors"),
    ({"boundaries": [5], "factors": [1.0, 0.0]}, "factors"),  # (0, 1]
    ({"boundaries": [5], "factors": [1.5, 1.0]}, "factors"),
    ({"boundaries": [5], "factors": [1.0, -0.5]}, "factors"),
    ({"factors": "1.0"}, "factors"),
    ({"eta_max": math.nan}, "eta_max"),
    ({"gamma": 0.1}, "gamma"),  # not a piecewise parameter
])
def test_bad_params_are_refused_naming_the_param(kwargs: dict, param: str) -> None:
    with pytest.raises(ScheduleParamError, match=f"'{param}'") as info:
        create_schedule("piecewise", T, **kwargs)
    assert info.value.param == param and info.value.schedule == "piecewise"
    assert isinstance(info.value, ValueError)
