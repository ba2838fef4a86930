"""The evidence benchmarks at their ``--smoke`` size (real training on digits, seconds each),
so the scripts cannot rot; plus the statistics and search helpers they rely on."""

from __future__ import annotations

import math

import pytest
import torch

from bench import phi_suggestions, schedule_quality, search_efficiency
from bench.common import holdout_split, paired, read_csv
from trainables.registry import get_dataset


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- helpers


def test_paired_exact_permutation_p() -> None:
    # All 8 differences positive: only the all-plus and all-minus flips are as extreme.
    r = paired([1.0 + i for i in range(8)], [0.0] * 8)
    assert (r.wins, r.ties, r.losses) == (8, 0, 0)
    assert r.p_value == pytest.approx(2 / 256)
    assert r.mean_diff == pytest.approx(4.5)
    # Symmetric differences: mean 0, every flip at least as extreme -> p = 1.
    r = paired([1.0, -1.0], [0.0, 0.0])
    assert r.mean_diff == 0 and r.p_value == 1.0 and (r.wins, r.losses) == (1, 1)
    with pytest.raises(ValueError, match="equal non-empty"):
        paired([1.0], [1.0, 2.0])


def test_holdout_split_is_disjoint_and_keeps_test_out() -> None:
    b = get_dataset("digits")
    t = holdout_split(b, 200)
    assert t.num_val == 200 and t.num_train == b.num_train - 200
    rows = {tuple(r.tolist()) for r in b.train_x.flatten(1)}
    assert all(tuple(r.tolist()) in rows for r in t.val_x.flatten(1))  # from train, not test
    # Disjoint as index sets: together they are a permutation of the original training set.
    merged = torch.cat([t.train_x, t.val_x]).flatten(1).double().sum(0)
    assert torch.allclose(merged, b.train_x.flatten(1).double().sum(0))
    with pytest.raises(ValueError):
        holdout_split(b, b.num_train)


def test_snap_phi_keeps_grid_values_and_is_log_nearest() -> None:
    lattice = search_efficiency.phi_lattice()
    for phi in search_efficiency.PAPER_GRID_PHI:
        assert search_efficiency.snap_phi(phi, lattice) == phi
    for phi in (0.1234, 3.3, 17.0, 49.0):
        s = search_efficiency.snap_phi(phi, lattice)
        assert abs(math.log(s / phi)) <= math.log(10) / search_efficiency.LATTICE_PER_DECADE / 2


# ----------------------------------------------------------------------------- smoke runs


def test_schedule_quality_smoke(tmp_path) -> None:
    assert schedule_quality.main(["--smoke", "--out", str(tmp_path)]) == 0
    p = schedule_quality.PRESETS["smoke"]
    rows = read_csv(tmp_path / "schedule_quality_smoke.csv")
    assert len(rows) == len(p["budgets"]) * len(schedule_quality.ARMS) * p["seeds"]
    assert {r["arm"] for r in rows} == set(schedule_quality.ARMS)
    accs = [float(r["test_accuracy"]) for r in rows]
    assert all(0.0 <= a <= 1.0 for a in accs)
    assert max(accs) > 0.5  # digits: real learning happened, not chance (0.1)
    assert {float(r["phi"]) for r in rows if r["arm"] == "uba_default"} == {5.0}
    tuned = [float(r["phi"]) for r in rows if r["arm"] == "uba_tuned"]
    assert all(0.01 <= phi <= 50 for phi in tuned)  # SearchSpace's default range
    tuning = read_csv(tmp_path / "schedule_quality_smoke_tuning.csv")
    # Trial 0 of the first budget is the paper default phi = 5, one phase (phitune's start).
    assert float(tuning[0]["phi"]) == 5.0 and int(tuning[0]["phases"]) == 1
    assert len(tuning) == len(p["budgets"]) * p["tune_trials"]
    md = (tmp_path / "schedule_quality_smoke.md").read_text()
    for needle in ("torch", "seeds", "git commit", "Paired per seed", "UBA tuned"):
        assert needle in md
    assert (tmp_path / "schedule_quality_smoke.png").read_bytes()[:4] == b"\x89PNG"


def test_search_efficiency_smoke(tmp_path) -> None:
    assert search_efficiency.main(["--smoke", "--out", str(tmp_path)]) == 0
    p = search_efficiency.PRESETS["smoke"]
    rows = read_csv(tmp_path / "search_efficiency_smoke.csv")
    evals = read_csv(tmp_path / "search_efficiency_smoke_evals.csv")
    assert len(rows) == len(search_efficiency.SPACES) * len(search_efficiency.METHODS) * \
        p["search_seeds"]
    by_point = {(float(e["phi"]), int(e["phases"])): float(e["val_accuracy"]) for e in evals}
    assert len(by_point) == len(evals)  # memoised: each distinct point trained once
    grid_best = max(by_point[(phi, ph)] for phi in search_efficiency.PAPER_GRID_PHI
                    for ph in search_efficiency.PAPER_GRID_PHASES)
    for r in rows:
        reached = r["trials_to_reach"]
        assert int(r["n_trials"]) <= p["max_trials"]
        if reached:
            assert float(r["best"]) >= grid_best - 1e-9 and int(reached) == int(r["n_trials"])
        else:
            assert float(r["best"]) < grid_best
        if r["method"] == "tpe_phitune":  # warm start: the paper default is trial 1
            assert float(r["first"]) == by_point[(5.0, 1)]
    assert "Trials to reach the grid's best" in (tmp_path / "search_efficiency_smoke.md"
                                                 ).read_text()


def test_phi_suggestions_smoke(tmp_path) -> None:
    """Corpus (digits, 3 horizons x 3 phi x 2 phases) -> features -> LOCO report -> refit."""
    from tuning.curvature.recommend import load_phi_model

    model_path = tmp_path / "phi_model.json"
    assert phi_suggestions.main(["--smoke", "--out", str(tmp_path),
                                 "--model-out", str(model_path)]) == 0
    corpus = read_csv(tmp_path / "phi_corpus_smoke.csv")
    from bench.phi_corpus import COLUMNS

    assert tuple(corpus[0]) == COLUMNS
    finals = [r for r in corpus if r["final"] == "1"]
    assert all(r["step"] == r["horizon_steps"] for r in finals)
    assert len(finals) == 3 * 3 * 2  # horizons x phi x phases, one seed
    rows = read_csv(tmp_path / "phi_suggestions_smoke.csv")
    cases = {r["case"] for r in rows}
    assert len(cases) == 3
    for case in cases:
        sources = {r["source"] for r in rows if r["case"] == case}
        assert {"model", "best_constant", "paper_default", "theory_2kappa", "calibrated",
                "history"} <= sources
        default = next(r for r in rows if r["case"] == case and r["source"] == "paper_default")
        assert float(default["phi"]) == 5.0
    md = (tmp_path / "phi_suggestions_smoke.md").read_text()
    assert "Leave-one-case-out" in md and "Against the goal" in md
    assert (tmp_path / "phi_suggestions_smoke.png").read_bytes()[:4] == b"\x89PNG"
    model = load_phi_model(model_path)
    assert model is not None and model.provenance["corpus_cases"] == 3
    assert model.provenance["refit_command"] == phi_suggestions.REFIT_COMMAND


def test_schedule_quality_tunes_eta_max_of_every_arm(tmp_path) -> None:
    """--lr-grid: each baseline evaluates at the η_max that won on the held-out split."""
    grid = (0.02, 0.1)
    schedule_quality.run("smoke", tmp_path, seeds=1, tune_trials=2, lr_grid=grid)
    rows = read_csv(tmp_path / "schedule_quality_smoke_tunedlr.csv")
    tuning = read_csv(tmp_path / "schedule_quality_smoke_tunedlr_tuning.csv")
    for r in rows:
        steps, arm, lr = r["budget_steps"], r["arm"], float(r["lr"])
        trials = [t for t in tuning if t["budget_steps"] == steps and t["arm"] == arm]
        if arm == "uba_tuned":
            assert min(grid) <= lr <= max(grid)  # searched log-uniformly over the range
            assert lr in {float(t["lr"]) for t in trials}
        else:
            assert {float(t["lr"]) for t in trials} == set(grid)
            best = max(trials, key=lambda t: float(t["holdout_val_accuracy"]))
            assert lr == float(best["lr"])
    assert "η_max chosen on the held-out split" in (
        tmp_path / "schedule_quality_smoke_tunedlr.md").read_text()
