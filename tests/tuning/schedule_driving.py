"""Shared by the schedule tests: drive a real optimizer with a scheduler and record the lr
of every update, and resume a scheduler from a ``torch.save``d state dict mid-run."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import torch


def drive(sched: Any, opt: torch.optim.Optimizer, steps: int, *, timm: bool = False
          ) -> list[float]:
    """Train ``steps`` updates of ``opt``'s parameters on a random linear loss; the lr each
    update used (``timm``: the scheduler is stepped with ``step_update``)."""
    torch.manual_seed(0)
    params = opt.param_groups[0]["params"]
    lrs = []
    for i in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        sum((p * torch.randn_like(p)).sum() for p in params).backward()
        opt.step()
        if timm:
            sched.step_update(num_updates=i + 1)
        else:
            sched.step()
    return lrs


def drive_with_resume(schedule: Any, make_opt: Callable[[], torch.optim.Optimizer],
                      split: int, total: int) -> list[float]:
    """The lrs of ``total`` updates driven by ``schedule.scheduler``: ``split`` updates, its
    state dict saved and loaded (``weights_only``) into a fresh scheduler on a fresh
    optimizer, then the rest."""
    o1 = make_opt()
    sched1 = schedule.scheduler(o1)
    first = drive(sched1, o1, split)
    buf = io.BytesIO()
    torch.save(sched1.state_dict(), buf)
    o2 = make_opt()
    sched2 = schedule.scheduler(o2)
    sched2.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    o2.param_groups[0]["lr"] = sched2.get_last_lr()[0]
    return first + drive(sched2, o2, total - split)
