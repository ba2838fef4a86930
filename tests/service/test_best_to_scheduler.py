"""A tuned result drops into a training loop in one call, from either side of the API: the
client's pydantic ``BestSchedule`` (what ``client.best(id)`` returns) and ``tuning``'s dataclass
give the same scheduler, whose LRs are the result's own ``lr_curve``; and the variant default
is the same on both sides, so a schedule rebuilt without naming it is the tuned one."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from service import schemas
from tuning import results
from tuning.schedules import DEFAULT_VARIANT, StepUpdateScheduler, create_schedule

torch.set_num_threads(1)


def _best_fields() -> dict:
    curve = create_schedule("uba", 30, phi=2.5, phases=3, eta_max=0.2, eta_min=0.01,
                            variant="restart").values()
    return {"schedule": "uba", "phi": 2.5, "phases": 3, "eta_max": 0.2, "eta_min": 0.01,
            "variant": "restart", "total_steps": 30, "metric": "val_loss", "value": 0.3,
            "trial_id": "t7", "lr_curve": curve}


def _train(opt: torch.optim.Optimizer, model: torch.nn.Module, sched, steps: int) -> list[float]:
    torch.manual_seed(0)
    used = []
    for _ in range(steps):
        used.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        model(torch.randn(4, 3)).pow(2).mean().backward()
        opt.step()
        sched.step()
    return used


def test_mirror_has_the_dataclass_fields() -> None:
    assert set(schemas.BestSchedule.model_fields) == {
        f.name for f in dataclasses.fields(results.BestSchedule)}


@pytest.mark.parametrize("side", ["client", "tuning"])
def test_to_scheduler_follows_the_tuned_lr_curve(side: str) -> None:
    fields = _best_fields()
    best = (schemas.BestSchedule.model_validate_json(
        schemas.BestSchedule(**fields).model_dump_json())  # as it arrives over HTTP
            if side == "client" else results.BestSchedule(**fields))
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=123.0)  # replaced by the tuned η
    used = _train(opt, model, best.to_scheduler(opt), 30)
    assert used == pytest.approx(fields["lr_curve"], rel=1e-12)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    assert isinstance(best.to_scheduler(opt, style="timm"), StepUpdateScheduler)
    assert best.to_scheduler(opt, style="lightning")["interval"] == "step"


def test_variant_default_is_the_same_in_the_schema_and_the_schedule_library() -> None:
    assert schemas.SearchSpaceSpec().variant == DEFAULT_VARIANT


@pytest.mark.parametrize("side", ["client", "tuning"])
def test_a_refined_winner_drops_into_a_loop_as_its_schedule(side: str) -> None:
    """A refined arm's row and the winner copied from it carry the whole schedule in
    ``params`` (what ``refine: true`` writes), so ``to_scheduler`` rebuilds it."""
    norms = [4.0, 3.0] + [1.0 + 0.1 * i for i in range(28)]
    want = create_schedule("refined", 30, eta_max=0.2, norms=norms, optimizer="sgd").values()
    params = {"schedule": "refined", "total_steps": 30, "eta_max": 0.2, "norms": norms,
              "optimizer": "sgd", "window_frac": 0.1,
              "source": {"arm": "uba", "trial_id": "t1", "eta_max": 0.1, "norm": "l2",
                         "counted_in": "search"}}
    fields = {"budget_steps": 30, "arm": "refined-uba", "mean": 0.9, "eta_max": 0.2,
              "uba_mean": 0.8, "margin": 0.1, "wins": 2, "ties": 0, "losses": 0, "n": 2,
              "tuned": True, "params": params}
    winner = (schemas.Winner.model_validate_json(schemas.Winner(**fields).model_dump_json())
              if side == "client" else results.Winner(**fields))
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=123.0)
    assert _train(opt, model, winner.to_scheduler(opt), 30) == pytest.approx(want, rel=1e-12)
    assert want[0] < max(want)  # the large early norms gave a warmup


@pytest.mark.parametrize("side", ["client", "tuning"])
def test_an_autolrs_row_drops_into_a_loop_as_its_median_seeds_stage_lrs(side: str) -> None:
    """An AutoLRS row carries, next to every seed's stages, the representative seed's stage
    lrs as a ``piecewise`` schedule (what ``tuning.compare.autolrs_schedule`` writes), so
    ``to_scheduler`` replays them, from the JSON result too."""
    stages = [{"stage": i, "start": a, "tau": n, "tau_prime": 2, "lr": lr, "forecast": 0.5,
               "candidates": []} for i, (a, n, lr) in enumerate([(0, 3, 0.05), (3, 6, 0.2),
                                                                  (9, 12, 0.1), (21, 9, 0.02)])]
    params = {"runs": [{"seed": 0, "trained_steps_total": 55, "stages": stages}],
              "schedule": "piecewise", "total_steps": 30, "eta_max": 0.2,
              "boundaries": [3, 9, 21], "factors": [0.25, 1.0, 0.5, 0.1], "from_seed": 0}
    fields = {"budget_steps": 30, "schedule": "autolrs", "n": 1, "values": [0.9],
              "mean": 0.9, "std": 0.0, "eta_max": 0.1, "seeds": [0], "tuned": True,
              "tuning_units": 0.8, "params": params}
    row = (schemas.BaselineRow.model_validate_json(
        schemas.BaselineRow(**fields).model_dump_json())
           if side == "client" else results.BaselineRow(**fields))
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=123.0)
    want = [s["lr"] for s in stages for _ in range(s["tau"])]
    assert _train(opt, model, row.to_scheduler(opt), 30) == pytest.approx(want, rel=1e-12)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    assert isinstance(row.to_scheduler(opt, style="timm"), StepUpdateScheduler)
