"""The schedule-aware search bench on a tiny synthetic corpus (seconds): the lookup tables,
the rank-fidelity statistics, the six search methods' bookkeeping and the report.

The corpus is synthetic on purpose: its ground truth is known, so the test can check that the
fidelity table finds what was built in (intermediate values ranking backwards, short complete
horizons ranking forwards) and that compute is charged as the methods train.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import pytest

from bench import search_bench as sb

PHIS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
FULL = 80
COLUMNS = ("case,task,model,dataset,optimizer,eta_max,batch_size,full_steps,horizon_steps,"
           "horizon_fraction,phi,phases,variant,seed,step,metric,mode,val_value,test_value,"
           "final,wall_s").split(",")


def _final_acc(phi: float, phases: int, frac: float) -> float:
    """Best φ ≈ 0.3 at every horizon (short horizons rank like the full one)."""
    return 0.85 - 0.02 * (math.log10(phi) + 0.5) ** 2 - 0.01 * (phases - 1) - 0.05 * (1 - frac)


def _intermediate(phi: float, at: float) -> float:
    """Within one run, high φ decays early and looks good early (short-horizon bias)."""
    return 0.6 + 0.05 * math.log10(phi) * (1 - at)


def write_corpus(path: Path, seeds: int = 3, noise: float = 0.002) -> Path:
    rng = random.Random(0)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for phi in PHIS:
            for phases in (1, 2):
                for frac in (0.25, 0.5, 1.0):
                    h = round(FULL * frac)
                    for seed in range(seeds):
                        eps = rng.gauss(0, noise)
                        for step in range(h // 4, h + 1, h // 4):
                            at = step / h
                            val = (_final_acc(phi, phases, frac) + eps if step == h
                                   else _intermediate(phi, at) + eps)
                            w.writerow({
                                "case": f"mlp-toy/sgd/T{h}", "task": "mlp-toy", "model": "mlp",
                                "dataset": "toy", "optimizer": "sgd", "eta_max": 0.1,
                                "batch_size": 32, "full_steps": FULL, "horizon_steps": h,
                                "horizon_fraction": frac, "phi": phi, "phases": phases,
                                "variant": "restart", "seed": seed, "step": step,
                                "metric": "val_accuracy", "mode": "max", "val_value": val,
                                "test_value": val, "final": int(step == h), "wall_s": 0.1})
    return path


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # GPSampler's GP fit; the bench itself runs with one thread


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "phi_corpus.csv")


def test_load_corpus_and_lookups(corpus: Path) -> None:
    (tc,) = sb.load_corpus(corpus).values()
    assert tc.full_steps == FULL and tc.mode == "max"
    assert tc.fractions == [0.25, 0.5, 1.0]
    assert len(tc.configs) == len(PHIS) * 2
    best, mu = tc.best_mean()
    assert best == (0.3, 1) and tc.regret(best) == 0.0
    assert 0 < tc.seed_std() < 0.01
    assert tc.snap(0.28, 1) == (0.3, 1) and tc.snap(100.0, 3) == (30.0, 2)


def test_spearman_matches_definition() -> None:
    assert sb.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert sb.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert sb.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, rel=1e-6)
    assert math.isnan(sb.spearman([1, 1, 1], [1, 2, 3]))


def test_fidelity_finds_backward_asha_and_forward_ladder(corpus: Path) -> None:
    (tc,) = sb.load_corpus(corpus).values()
    fid = {(r["fidelity"], r["fraction"]): r for r in sb.fidelity_rows(tc)}
    assert fid[("asha_rung", 0.25)]["spearman_configs"] < 0
    assert fid[("ladder_rung", 0.25)]["spearman_configs"] > 0.8
    assert fid[("ladder_rung", 0.5)]["n_configs"] == len(tc.configs)


@pytest.mark.parametrize("method", sb.METHODS)
def test_methods_charge_compute_and_pick_full_horizon_incumbents(corpus: Path,
                                                                 method: str) -> None:
    (tc,) = sb.load_corpus(corpus).values()
    cap = 8.0 if method == "ladder_gp" else 14.0  # GP asks cost ~0.2 s each
    tr = sb.run_method(tc, method, seed=0, max_units=cap, candidates=6, eta=3)
    assert 0 < tr.spent <= cap + 1e-9
    units = [u for u, _ in tr.points]
    assert units == sorted(units) and all(u <= tr.spent + 1e-9 for u in units)
    assert all(c in tc.configs for _, c in tr.points)
    if method == "grid12":  # one result, after all of its points
        assert tr.spent == len(sb.grid_points(tc)) and len(tr.points) == 1
    # same seed, same trace: the simulation is deterministic
    again = sb.run_method(tc, method, seed=0, max_units=cap, candidates=6, eta=3)
    assert again.points == tr.points


def test_ladder_uses_tuning_ladder_plan(corpus: Path) -> None:
    from tuning.ladder import plan_ladder

    (tc,) = sb.load_corpus(corpus).values()
    plan = plan_ladder(FULL, 6, eta=3, budget_fractions=(0.25, 0.5, 1.0))
    cost = sum(r.candidates * r.fraction for r in plan.rungs)
    tr = sb.run_method(tc, "ladder_tpe", seed=1, max_units=3 * cost, candidates=6, eta=3)
    assert tr.spent == pytest.approx(3 * cost)
    assert len(tr.points) == 3 * plan.top.candidates  # one incumbent check per top-rung run


def test_script_writes_tables_with_provenance(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert sb.main(["--corpus", str(corpus), "--out", str(out), "--search-seeds", "2", "--min-seeds", "2",
                    "--max-units", "12", "--candidates", "6", "--cases", "--methods", "grid12", "tpe",
                    "ladder_tpe"]) == 0
    md = (out / "search_bench.md").read_text()
    for needle in ("tabular (lookup) simulation", "git commit", "load average", "Spearman",
                   "Compute to target", "ladder_tpe", "GPU: not measured"):
        assert needle in md
    rows = sb.read_csv(out / "search_bench_compute.csv")
    assert len(rows) == 2 * 3
    assert (out / "search_bench.provenance.json").exists()
    assert (out / "search_bench.png").read_bytes()[:4] == b"\x89PNG"


def test_noise_aware_final_pick_charges_extra_seeds(corpus: Path) -> None:
    (tc,) = sb.load_corpus(corpus).values()
    tr = sb.run_ladder(tc, "tpe", 0, 2 * 9.0, candidates=8, eta=3, finalists=2,
                       finalist_seeds=2)
    # 8 x 1/4 + 2 x 1/2 + 2 x 1 + 2 finalists x 2 extra seeds = 9 units per ladder
    assert tr.spent == pytest.approx(18.0) and len(tr.points) == 2
