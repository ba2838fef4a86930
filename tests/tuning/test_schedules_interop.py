"""The drop-in adapters (HF ``get_uba_schedule``, timm ``StepUpdateScheduler``, Lightning's
``lr_scheduler`` config, a tuned result) in real training loops.

Each test trains a tiny model with real optimizer steps, records the LR every update used, and
compares it with an independent transcription of Eq. (5) (1-based update ``t``, the paper's
boundaries) plus the linear warmup ``(i + 1) / W``. The loops copy how each library steps its
scheduler: HF ``Trainer`` calls ``step()`` after each optimizer step, timm's
``train_one_epoch`` calls ``step_update(num_updates)`` after it and ``step(epoch)`` after
each epoch, Lightning calls ``step()`` every ``frequency`` optimizer steps for
``interval="step"``.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from tuning.schedules import (
    DEFAULT_VARIANT,
    SCHEDULES,
    UBALR,
    ScheduleLR,
    ScheduleParamError,
    StepUpdateScheduler,
    create_schedule,
    get_uba_schedule,
    lightning_scheduler_config,
    schedule_from_best,
    scheduler_from_best,
    uba_lr,
)
from tuning.schedules.fit import fit_uba

torch.set_num_threads(1)


def eq5(t: int, bounds: list[int], phi: float, eta_max: float, eta_min: float,
        restart: bool = True) -> float:
    """Eq. (5) for 1-based update t; bounds = [T_1=0, ..., T_K]; restart drops (k-1)pi."""
    k = next(j for j in range(1, len(bounds)) if bounds[j - 1] < t <= bounds[j])
    t_k, t_k1 = bounds[k - 1], bounds[k]
    c = (2 * (t - t_k) - 1) * math.pi / (2 * (t_k1 - t_k)) + (0 if restart else (k - 1) * math.pi)
    q = 1 + math.cos(c)
    return (eta_max - eta_min) * 2 * q / (2 * phi + (2 - phi) * q) + eta_min


def closed_form(i: int, *, total: int, warmup: int, phi: float, phases: int, eta_max: float,
                eta_min: float) -> float:
    """LR of 0-based step i: linear warmup, then Eq. (5) with equal phases over T - W."""
    if i < warmup:
        return eta_max * (i + 1) / warmup
    body = total - warmup
    bounds = [(k * body) // phases for k in range(phases + 1)]
    return eq5(i - warmup + 1, bounds, phi, eta_max, eta_min)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(n)]


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer,
                batch: tuple[torch.Tensor, torch.Tensor]) -> list[float]:
    """One real update; returns the LRs (per param group) that update used."""
    used = [g["lr"] for g in opt.param_groups]
    x, y = batch
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    return used


def _two_groups(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW with the usual decay / no-decay groups at different LRs (ratio 1 : 0.5)."""
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    return torch.optim.AdamW([{"params": decay, "lr": lr},
                              {"params": rest, "lr": lr / 2, "weight_decay": 0.0}], lr=lr)


# ----------------------------------------------------------------------- one default variant

def test_one_default_variant_everywhere() -> None:
    """Omitting the variant gives the same (restart) curve in every entry point."""
    assert DEFAULT_VARIANT == "restart"
    assert SCHEDULES["uba"].params["variant"].default == DEFAULT_VARIANT
    kw = dict(phi=3.0, phases=3)
    s = create_schedule("uba", 60, eta_max=0.1, **kw)
    want = [closed_form(i, total=60, warmup=0, phi=3.0, phases=3, eta_max=0.1, eta_min=0.0)
            for i in range(60)]
    assert s.values() == pytest.approx(want, rel=1e-12)
    assert [uba_lr(i, 60, eta_max=0.1, **kw) for i in range(60)] == pytest.approx(want,
                                                                               rel=1e-12)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    ubalr = UBALR(opt, total_steps=60, **kw)
    assert ubalr.schedule.params["variant"] == DEFAULT_VARIANT
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    lam = get_uba_schedule(opt, 0, 60, **kw)
    assert [0.1 * lam.lr_lambdas[0](i) for i in range(60)] == pytest.approx(want, rel=1e-12)
    assert fit_uba(want, eta_max=0.1, phases=(3,)).variant == DEFAULT_VARIANT
    import tuning.specs as specs  # every spec dataclass with a variant field defaults to it

    defaults = [f.default for obj in vars(specs).values()
                if isinstance(obj, type) and dataclasses.is_dataclass(obj)
                for f in dataclasses.fields(obj) if f.name == "variant"]
    assert defaults and set(defaults) == {DEFAULT_VARIANT}


# ----------------------------------------------------------------------- Hugging Face

@pytest.mark.parametrize("warmup,phases", [(0, 1), (5, 1), (4, 3)])
def test_get_uba_schedule_in_hf_style_loop(warmup: int, phases: int) -> None:
    T, lr, phi, eta_min = 40, 3e-3, 0.5, 0.1
    model = _model()
    opt = _two_groups(model, lr)
    sched = get_uba_schedule(opt, num_warmup_steps=warmup, num_training_steps=T, phi=phi,
                             phases=phases, eta_min=eta_min)
    assert isinstance(sched, LambdaLR)  # what transformers' get_scheduler returns
    used = []
    for batch in _batches(T):  # Trainer: optimizer.step(), then lr_scheduler.step()
        used.append(_train_step(model, opt, batch))
        sched.step()
    for i, (a, b) in enumerate(used):
        # LambdaLR semantics: base LR x factor; eta_min is a fraction of each group's LR
        factor = closed_form(i, total=T, warmup=warmup, phi=phi, phases=phases, eta_max=1.0,
                             eta_min=eta_min)
        assert a == pytest.approx(lr * factor, rel=1e-12)
        assert b == pytest.approx(lr / 2 * factor, rel=1e-12)
    assert used[0][0] > 0.0  # never an update at LR 0 (HF's own warmup spends step 0 at 0)


def test_get_uba_schedule_resumes_from_weights_only_checkpoint() -> None:
    kw = dict(num_warmup_steps=3, num_training_steps=30, phi=[5.0, 1.0], phases=2)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_sched = get_uba_schedule(opt, **kw)
    ref = []
    for batch in _batches(30):
        ref.append(_train_step(model, opt, batch))
        ref_sched.step()

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = get_uba_schedule(opt, **kw)
    used = []
    batches = _batches(30)
    for batch in batches[:11]:
        used.append(_train_step(model, opt, batch))
        sched.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)  # what Trainer does on resume: plain data only

    model = _model(seed=5)
    model.load_state_dict(ckpt["model"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = get_uba_schedule(opt, **kw)  # Trainer's order: create both, then load both
    opt.load_state_dict(ckpt["opt"])
    sched.load_state_dict(ckpt["sched"])
    for batch in batches[11:]:
        used.append(_train_step(model, opt, batch))
        sched.step()
    assert used == ref


def test_get_uba_schedule_refuses_bad_arguments_by_name() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ScheduleParamError, match="'warmup_steps'"):
        get_uba_schedule(opt, 10, 10)
    with pytest.raises(ScheduleParamError, match="'phi'"):
        get_uba_schedule(opt, 0, 10, phi=-1.0)
    with pytest.raises(ScheduleParamError, match="'variant'"):
        get_uba_schedule(opt, 0, 10, variant="cosine")


# ----------------------------------------------------------------------- timm

def _timm_loop(model: torch.nn.Module, opt: torch.optim.Optimizer,
               sched: StepUpdateScheduler, epochs: int, per_epoch: int,
               start_epoch: int = 0) -> list[list[float]]:
    """timm's train.py: step_update(num_updates) after each update, step(epoch + 1) after
    each epoch."""
    used = []
    batches = _batches(per_epoch)
    for epoch in range(start_epoch, epochs):
        num_updates = epoch * per_epoch
        for batch in batches:
            used.append(_train_step(model, opt, batch))
            num_updates += 1
            sched.step_update(num_updates=num_updates)
        sched.step(epoch + 1)  # a no-op for a per-update schedule
    return used


def test_timm_step_update_in_timm_style_loop() -> None:
    epochs, per_epoch, lr = 4, 10, 0.05
    T = epochs * per_epoch
    schedule = create_schedule("uba", T, phi=5.0, phases=2, warmup_steps=4, eta_min=0.02)
    model = _model()
    opt = _two_groups(model, lr)
    sched = StepUpdateScheduler(opt, schedule)
    used = _timm_loop(model, opt, sched, epochs, per_epoch)
    for i, (a, b) in enumerate(used):
        f = closed_form(i, total=T, warmup=4, phi=5.0, phases=2, eta_max=1.0, eta_min=0.02)
        assert a == pytest.approx(lr * f, rel=1e-12)
        assert b == pytest.approx(lr / 2 * f, rel=1e-12)
    assert [g["initial_lr"] for g in opt.param_groups] == [lr, lr / 2]  # as timm records it


def test_timm_step_epoch_is_noop_and_state_resumes() -> None:
    schedule = create_schedule("uba", 30, phi=2.0, eta_max=0.1)  # absolute: all groups
    model = _model()
    opt = _two_groups(model, 0.5)
    sched = StepUpdateScheduler(opt, schedule)
    ref = _timm_loop(model, opt, sched, 3, 10)
    assert all(a == b for a, b in ref)
    assert [u[0] for u in ref] == pytest.approx(schedule.values(), rel=1e-12)
    before = sched.get_last_lr()
    sched.step(7)
    assert sched.get_last_lr() == before

    model = _model()
    opt = _two_groups(model, 0.5)
    sched = StepUpdateScheduler(opt, schedule)
    first = _timm_loop(model, opt, sched, 1, 10)
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    opt2 = _two_groups(model, 0.5)
    sched2 = StepUpdateScheduler(opt2, create_schedule("constant", 5))
    sched2.load_state_dict(torch.load(buf, weights_only=True))
    rest = _timm_loop(model, opt2, sched2, 3, 10, start_epoch=1)
    assert first + rest == ref


# ----------------------------------------------------------------------- Lightning

def _lightning_fit(configure_optimizers: Callable[[], dict], model: torch.nn.Module,
                   steps: int) -> list[list[float]]:
    """What Lightning's fit loop does with ``configure_optimizers``' dict: after every
    optimizer step, ``scheduler.step()`` when interval is "step" and the number of batches
    that stepped is a multiple of ``frequency``."""
    conf = configure_optimizers()
    opt, cfg = conf["optimizer"], conf["lr_scheduler"]
    assert cfg["interval"] == "step"
    used = []
    for batches_that_stepped, batch in enumerate(_batches(steps), start=1):
        used.append(_train_step(model, opt, batch))
        if batches_that_stepped % cfg["frequency"] == 0:
            cfg["scheduler"].step()
    return used


def test_lightning_configure_optimizers_snippet() -> None:
    """The docstring's snippet (README interop section), run through Lightning's stepping."""
    T = 36
    model = _model()

    def configure_optimizers() -> dict:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
        sched = get_uba_schedule(opt, num_warmup_steps=6, num_training_steps=T, phi=0.5)
        return {"optimizer": opt, "lr_scheduler": lightning_scheduler_config(sched)}

    used = _lightning_fit(configure_optimizers, model, T)
    want = [3e-4 * closed_form(i, total=T, warmup=6, phi=0.5, phases=1, eta_max=1.0,
                               eta_min=0.0) for i in range(T)]
    assert [u[0] for u in used] == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="frequency"):
        lightning_scheduler_config(ScheduleLR(torch.optim.SGD(model.parameters(), lr=0.1),
                                              create_schedule("cosine", 5)), frequency=0)


# ----------------------------------------------------------------------- a tuned result

@dataclasses.dataclass
class _Best:
    """Shape of a tuned ``BestSchedule`` (the service returns the same fields as JSON)."""

    schedule: str = "uba"
    phi: float = 0.7
    phases: int = 2
    eta_max: float = 0.08
    eta_min: float = 0.004
    variant: str = "restart"
    total_steps: int = 24
    metric: str = "val_accuracy"
    value: float = 0.9
    trial_id: str = "t1"
    lr_curve: list[float] = dataclasses.field(default_factory=list)


def test_scheduler_from_best_every_style_follows_the_tuned_curve() -> None:
    best = _Best()
    want = [closed_form(i, total=24, warmup=0, phi=0.7, phases=2, eta_max=0.08, eta_min=0.004)
            for i in range(24)]
    best.lr_curve = want
    as_json = dataclasses.asdict(best)
    assert schedule_from_best(best) == schedule_from_best(as_json)
    assert schedule_from_best(as_json).values() == pytest.approx(want, rel=1e-12)

    model = _model()
    opt = _two_groups(model, 1.0)  # the tuned absolute LRs replace the optimizer's
    sched = scheduler_from_best(best, opt)
    used = []
    for batch in _batches(24):
        used.append(_train_step(model, opt, batch))
        sched.step()
    assert [u[0] for u in used] == pytest.approx(want, rel=1e-12)
    assert all(a == b for a, b in used)

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    timm_sched = scheduler_from_best(as_json, opt, style="timm")
    assert isinstance(timm_sched, StepUpdateScheduler)
    used = _timm_loop(model, opt, timm_sched, 2, 12)
    assert [u[0] for u in used] == pytest.approx(want, rel=1e-12)

    model = _model()
    used = _lightning_fit(lambda: {"optimizer": (o := torch.optim.SGD(model.parameters(),
                                                                      lr=1.0)),
                                   "lr_scheduler": scheduler_from_best(best, o,
                                                                       style="lightning")},
                          model, 24)
    assert [u[0] for u in used] == pytest.approx(want, rel=1e-12)

    with pytest.raises(ValueError, match="torch, timm, lightning"):
        scheduler_from_best(best, opt, style="keras")
    with pytest.raises(ValueError, match="total_steps"):
        schedule_from_best({"schedule": "uba", "phi": 1.0})
