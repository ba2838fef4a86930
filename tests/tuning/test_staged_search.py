"""The family-aware search design (issue 20) without Ray: stage A sweeps η_max at a REX-like φ,
stage B tries the family's shapes at the sweep's best η_max (and the neutral φ half a cell
towards where the sweep puts the optimum), a peer's
promotion is hedged towards lower η_max (UBA's first iteration carries its hedge as a
candidate instead), and a finalist whose seeds spread far more than the others' or that
failed a seed cannot win. The executor is a deterministic objective in (φ, η_max), so each rule
is checked exactly; the Ray side of the same search runs in tests/tuning/test_study.py."""

from __future__ import annotations

import math

import optuna
import pytest

from trainables.config import TrainConfig
from tuning.ladder import Candidate, Outcome, promote_hedged
from tuning.proposer import (
    NEUTRAL_PHI,
    WSD_PHI,
    eta_sweep_points,
    hedge_lr,
    lr_grid,
    shape_points,
    stage_sizes,
)
from tuning.results import FinalistRow
from tuning.schedules import create_schedule
from tuning.schedules.fit import fit_uba
from tuning.search import _mark_unrobust, pick_finalists, search_ladder
from tuning.specs import SearchSpace, StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def spec(**kw) -> StudySpec:
    base = dict(study_id="s", total_steps=90, num_trials=8, seed=3,
                train=TrainConfig(model="mlp", dataset="digits", lr=0.1, eval_every=10,
                                  metric="val_loss"),
                search=SearchSpace(phi_min=0.01, phi_max=50))
    return StudySpec(**{**base, **kw})


class Objective:
    """Executor whose value is a smooth bowl in (log φ, log η_max) with its optimum at
    ``lr_star`` (lower at longer horizons, as Bjorck et al. measured) and φ = 2."""

    def __init__(self, lr_star: float = 0.2, noise: dict | None = None) -> None:
        self.lr_star, self.noise, self.batches = lr_star, noise or {}, []

    def run(self, name, steps, runs, kind="search"):
        self.batches.append((name, steps, [c.index for c, _ in runs]))
        out = []
        for c, seed in runs:
            best = self.lr_star * (90 / steps) ** 0.3
            phi = c.params.get("phi", 2.0)
            v = (math.log(c.params["lr"] / best) ** 2 + 0.1 * math.log(phi / 2) ** 2
                 + self.noise.get((c.index, seed), 0.0))
            out.append(Outcome(candidate=c, steps=steps, seed=seed, trained_steps=steps,
                               value=v, last_value=v, status="terminated",
                               trial_id=f"{name}-{c.index}-{seed}"))
        return out


def test_stage_a_sweeps_eta_max_on_log_cell_centres_at_a_rex_like_phi():
    s = spec()
    assert stage_sizes(8, True) == (4, 4) and stage_sizes(8, False) == (0, 8)
    pts = eta_sweep_points(s, 4)
    assert [p["lr"] for p in pts] == pytest.approx([0.1 * 2 ** (k - 1.5) for k in range(4)],
                                                   rel=1e-3)
    assert {p["phi"] for p in pts} == {NEUTRAL_PHI} and {p["phases"] for p in pts} == {1}
    assert lr_grid(1.0, 16.0, 2) == pytest.approx([2.0, 8.0])


def test_stage_b_puts_first_points_and_the_family_shapes_at_the_best_eta_max():
    s = spec()
    pts = shape_points(s, 4, 0.14, 4, first=[{"phi": 3.0}, {"phi": 1.0, "lr": 0.05}])
    assert pts[0] == {"phi": 3.0, "phases": 1, "lr": 0.14}  # the recommendation at η*
    assert pts[1]["lr"] == 0.05  # a point that names its η_max keeps it
    assert pts[2] == {"phi": NEUTRAL_PHI, "phases": 1, "lr": pytest.approx(0.14 / 2 ** 0.5)}
    assert pts[3] == {"phi": 2.0, "phases": 1, "lr": 0.14}  # cosine at η*


def test_stage_b_without_first_points_tries_the_hedge_cosine_and_both_late_drops():
    s = spec()
    grid = lr_grid(0.025, 0.4, 4)
    pts = shape_points(s, 4, grid[2], 4, sweep={lr: 1.0 for lr in grid})
    assert [p["phi"] for p in pts] == [NEUTRAL_PHI, 2.0, 0.2, WSD_PHI]
    assert all(p["lr"] == grid[2] for p in pts[1:])


@pytest.mark.parametrize(("decay_frac", "phi"), [(0.2, WSD_PHI), (0.45, 0.2)])
def test_the_late_drop_shapes_are_ubas_fits_to_wsd(decay_frac, phi):
    """The φ called WSD-like is UBA's least-squares fit to WSD's default decay (last 20 %);
    φ = 0.2 is the fit to a decay over the last ~45 %."""
    wsd = create_schedule("wsd", total_steps=1000, eta_max=1.0, decay_frac=decay_frac)
    fit = fit_uba([wsd.lr(i) for i in range(1000)], eta_max=1.0, eta_min=0.0)
    assert fit.phi == pytest.approx(phi, rel=0.1)
    assert fit.rel_rmse < 0.05


def test_the_hedge_goes_half_a_cell_towards_where_the_sweep_puts_the_optimum():
    s = spec()  # η_max range [0.025, 0.4]: sweep 0.035, 0.071, 0.141, 0.283; half a cell √2
    grid = lr_grid(0.025, 0.4, 4)
    bowl = {lr: math.log(lr / 0.12) ** 2 for lr in grid}  # optimum between 0.071 and 0.141
    assert hedge_lr(s, bowl, grid[2], 4) == pytest.approx(0.1)  # down, to the optimum's side
    bowl = {lr: math.log(lr / 0.2) ** 2 for lr in grid}
    assert hedge_lr(s, bowl, grid[2], 4) == pytest.approx(0.2)  # up
    # the cnn-fmnist 320-step sweep of the quality bench (rung 107, val_loss): the upper
    # neighbour was better, and every ladder-tuned peer picked η_max 0.12-0.24 at 320 steps
    cnn = dict(zip(grid, [0.877, 0.705, 0.688, 0.703], strict=True))
    assert hedge_lr(s, cnn, grid[2], 4) == pytest.approx(0.2)
    # at an edge the parabola says whether the optimum is past it or just inside
    inside = {lr: math.log(lr / 0.26) ** 2 for lr in grid}
    past = {lr: math.log(lr / 0.5) ** 2 for lr in grid}
    assert hedge_lr(s, inside, grid[3], 4) == pytest.approx(0.2)
    assert hedge_lr(s, past, grid[3], 4) == pytest.approx(0.4)
    low = {lr: math.log(lr / 0.02) ** 2 for lr in grid}
    assert hedge_lr(s, low, grid[0], 4) == pytest.approx(0.025)
    # a diverged neighbour (no value) is worst: the hedge moves away from it
    diverged = dict(zip(grid, [0.9, 0.7, 0.6, None], strict=True))
    assert hedge_lr(s, diverged, grid[2], 4) == pytest.approx(0.1)
    # maximised metric: the better neighbour has the larger value
    acc = dict(zip(grid, [0.5, 0.8, 0.9, 0.85], strict=True))
    assert hedge_lr(spec(train=TrainConfig(model="mlp", dataset="digits", lr=0.1,
                                           metric="val_accuracy")), acc, grid[2], 4) \
        == pytest.approx(0.2)
    assert hedge_lr(s, {0.1: 0.5}, 0.1, 1) == pytest.approx(0.1 / 4)  # alone: lower
    two = lr_grid(0.025, 0.4, 2)  # 0.05, 0.2: no curvature from two points, lower
    assert hedge_lr(s, dict(zip(two, [0.9, 0.5], strict=True)), two[1], 2) == pytest.approx(0.1)


def test_stage_b_places_the_hedge_from_the_sweep_values():
    s = spec()
    grid = lr_grid(0.025, 0.4, 4)
    sweep = dict(zip(grid, [0.877, 0.705, 0.688, 0.703], strict=True))
    pts = shape_points(s, 4, grid[2], 4, sweep=sweep)
    assert pts[0] == {"phi": NEUTRAL_PHI, "phases": 1, "lr": pytest.approx(0.2)}


def test_a_peer_arm_promotes_a_lower_eta_max_rival_of_its_rung_winner():
    s = spec()
    ex = Objective()
    out = search_ladder(s, ex, arm="cosine")
    low = {o.candidate.index: o for o in out[30]}
    best = min(low.values(), key=lambda o: o.value)
    promoted = [low[o.candidate.index] for o in out[90]]
    assert best in promoted and len(promoted) == 2
    assert min(o.candidate.params["lr"] for o in promoted) < best.candidate.params["lr"]


def test_promotion_keeps_a_lower_eta_max_rival_of_the_rung_winner():
    values = {0: 0.1, 1: 0.2, 2: 0.3}
    lrs = {0: 0.2, 1: 0.4, 2: 0.1}
    assert promote_hedged(values, lrs, 2, "min") == [0, 2]
    assert promote_hedged(values, {0: 0.2, 1: 0.1, 2: 0.05}, 2, "min") == [0, 1]
    assert promote_hedged(values, lrs, 1, "min") == [0]


def test_the_ladder_runs_the_stages_in_order_and_finds_the_family_optimum():
    s = spec()
    ex = Objective()
    out = search_ladder(s, ex)
    names = [b[0] for b in ex.batches]
    assert names == ["it0-rung0-30", "it0-rung0-30-shapes", "it0-rung1-90"]
    low = out[30]
    assert [o.candidate.stage for o in low] == ["sweep"] * 4 + ["shape"] * 4
    assert any(o.candidate.params["phi"] == 2.0 for o in low)  # cosine is tried
    finalists, extra = pick_finalists(s, out[90], ex)
    assert len(finalists) == 2 and len(extra) == 4
    # UBA's first iteration promotes its best two by rung value: the design's own hedge (the
    # neutral φ at a lower η_max) competes like any candidate instead of taking a slot
    top2 = sorted(low, key=lambda o: o.value)[:2]
    assert {o.candidate.index for o in out[90]} == {o.candidate.index for o in top2}
    sweep_best = min((o for o in low if o.candidate.stage == "sweep"), key=lambda o: o.value)
    assert any(o.candidate.stage == "shape" and o.candidate.params["phi"] == NEUTRAL_PHI
               and o.candidate.params["lr"] < sweep_best.candidate.params["lr"] for o in low)
    assert 2.0 in {f.phi for f in finalists}  # cosine, the bowl's φ, reaches the full budget
    # the same spec proposes and picks the same (determinism)
    again = search_ladder(s, Objective())
    assert [o.candidate.params for o in again[30]] == [o.candidate.params for o in low]


def test_a_finalist_with_a_far_wider_spread_or_a_failed_seed_cannot_win():
    def row(i, values, failed=0):
        import statistics
        return FinalistRow(trial_id=str(i), phi=1.0, phases=1, eta_max=0.1, seeds=[0, 1, 2],
                           values=values, n=len(values), mean=statistics.fmean(values),
                           std=statistics.stdev(values), failed_seeds=failed, candidate=i)

    rows = [row(0, [1.0, 1.6, 0.4]), row(1, [1.1, 1.12, 1.09]), row(2, [1.2, 1.22, 1.19])]
    _mark_unrobust(rows)
    assert [r.robust for r in rows] == [False, True, True] and "spread" in rows[0].note
    rows = [row(0, [1.0, 1.01, 1.02], failed=1), row(1, [1.1, 1.12, 1.09])]
    _mark_unrobust(rows)
    assert [r.robust for r in rows] == [False, True] and "failed" in rows[0].note


def test_pick_finalists_puts_an_unrobust_finalist_last_with_its_reason():
    s = spec()
    ex = Objective()
    out = search_ladder(s, ex)
    best = min(out[90], key=lambda o: o.value)
    # the best run's extra seeds are far noisier than the other finalist's
    from tuning.proposer import derive_seed
    seeds = [derive_seed(s.seed, "finalist", j) for j in range(2)]
    wild = {(best.candidate.index, seeds[0]): 3.0, (best.candidate.index, seeds[1]): -2.0}
    other = next(o for o in out[90] if o is not best)
    wild[(other.candidate.index, seeds[0])] = 0.01
    finalists, _ = pick_finalists(s, out[90], Objective(noise=wild))
    assert finalists[0].candidate == other.candidate.index and finalists[0].robust
    assert finalists[-1].candidate == best.candidate.index and not finalists[-1].robust


def test_a_peer_arm_sweeps_its_lr_grid_with_the_same_plan():
    s = spec()
    ex = Objective()
    out = search_ladder(s, ex, arm="cosine")
    assert [b[0] for b in ex.batches] == ["cosine-it0-rung0-30", "cosine-it0-rung1-90"]
    assert [o.candidate.params["lr"] for o in out[30]] == pytest.approx(lr_grid(0.025, 0.4, 8))
    assert all(o.candidate.arm == "cosine" for o in out[30])
    assert isinstance(out[90][0].candidate, Candidate)
