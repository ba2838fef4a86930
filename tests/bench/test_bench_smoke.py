"""The evidence benchmarks at their ``--smoke`` size (real training on digits, seconds each),
so the scripts cannot rot; plus the statistics helpers they rely on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bench import phi_suggestions, schedule_quality
from bench.common import paired, read_csv


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


# ----------------------------------------------------------------------------- smoke runs


def test_schedule_quality_smoke(tmp_path) -> None:
    """Every arm tuned by the same ladder (equal compute), picks trained on paired evaluation
    seeds and scored on the evaluation half; the report's verdict is computed from the rows."""
    assert schedule_quality.main(["--smoke", "--out", str(tmp_path)]) == 0
    p = schedule_quality.PRESETS["smoke"]
    (task,) = p.tasks
    rows = read_csv(tmp_path / f"schedule_quality_smoke_{task}.csv")
    ladder_rows = [r for r in rows if r["arm"] in schedule_quality.ARMS]
    assert len(ladder_rows) == len(p.budgets) * len(schedule_quality.ARMS) * p.eval_seeds
    assert {r["arm"] for r in rows} == set(schedule_quality.ALL_ARMS)
    # AutoLRS: rows only where its stages fit (32 steps here), its search counted per run
    auto = [r for r in rows if r["arm"] == "autolrs"]
    fits = [s for s in {int(r["budget_steps"]) for r in rows}
            if schedule_quality.autolrs_settings(s) is not None]
    assert len(auto) == len(fits) * p.eval_seeds and fits
    assert all(float(r["tuning_units"]) > 0 and r["stage_lrs"] for r in auto)
    # refinement: every budget, its η_max one of its own ladder's candidates, its compute
    # its source run (1 unit) plus a ladder like every arm's
    for arm in ("refined-linear", "refined-uba"):
        ref = [r for r in rows if r["arm"] == arm]
        assert len(ref) == len(p.budgets) * p.eval_seeds
        ladder_units = {r["budget_steps"]: float(r["tuning_units"]) for r in ladder_rows}
        assert all(float(r["tuning_units"]) == pytest.approx(
            ladder_units[r["budget_steps"]] + 1.0) for r in ref)
    rows = ladder_rows
    accs = [float(r["test_value"]) for r in rows]
    assert all(0.0 <= a <= 1.0 for a in accs)
    assert max(accs) > 0.5  # digits: real learning happened, not chance (0.1)
    assert {r["optimizer"] for r in rows if r["arm"] == "schedulefree"} == {"sgd_schedulefree"}
    # equal tuning compute: every arm of a budget spent the same units
    for steps in {r["budget_steps"] for r in rows}:
        assert len({r["tuning_units"] for r in rows if r["budget_steps"] == steps}) == 1
    tuning = read_csv(tmp_path / f"schedule_quality_smoke_{task}_tuning.csv")
    first = next(t for t in tuning if t["arm"] == "uba")
    # phitune's own design: the first UBA candidates are the η_max sweep at the REX-like φ
    from tuning.proposer import NEUTRAL_PHI
    assert float(first["phi"]) == NEUTRAL_PHI and int(first["phases"]) == 1
    assert first["stage"] == "sweep"
    for r in rows:  # each pick is a candidate its own search trained
        assert float(r["lr"]) in {float(t["lr"]) for t in tuning
                                  if t["arm"] == r["arm"] and t["budget_steps"] == r[
                                      "budget_steps"]}
    md = (tmp_path / "schedule_quality_smoke.md").read_text()
    for needle in ("git commit", "load average", "Paired per seed", "schedule-free",
                   "Selection noise", "Goal (searched UBA ahead of the best peer"):
        assert needle in md
    cells = schedule_quality.load_cells(tmp_path, "smoke")
    ahead, behind = schedule_quality.goal_verdict(cells)
    assert ("**met**" in md) == (len(ahead) >= 1)
    assert "AutoLRS" in md and "Data-driven schedulers" in md and "refined from linear" in md
    assert (tmp_path / "schedule_quality_smoke.png").read_bytes()[:4] == b"\x89PNG"


def test_schedule_quality_verdict_follows_the_paired_numbers() -> None:
    """The goal sentence is computed: UBA ahead of the best peer everywhere on one task and
    behind on another reads as 'ahead on 1 of 2' and names where it trails and by how much."""
    from bench.schedule_quality import ARMS, Cell, verdict_text

    def cell(task: str, uba: list[float]) -> Cell:
        values = {a: [0.80, 0.81, 0.82] for a in ARMS} | {"uba": uba}
        return Cell(task=task, metric="val_accuracy", steps=100, fraction=1.0, values=values,
                    units=dict.fromkeys(ARMS, 8.67), noise=dict.fromkeys(ARMS, (0.5, 0.01)))

    text = verdict_text([cell("a", [0.83, 0.84, 0.85]), cell("b", [0.79, 0.80, 0.81])])
    assert "at least 2 of 2 tasks): **not met**" in text
    assert "ahead at every budget on 1 of 2 (a)" in text
    assert "- b, 100 steps: UBA trails cosine by 1 pt test accuracy (wins/ties/losses 0/0/3" in text
    loss = Cell(task="lm", metric="val_loss", steps=10, fraction=1.0,
                values={a: [2.0, 2.1, 2.2] for a in ARMS} | {"uba": [1.9, 2.0, 2.1]},
                units=dict.fromkeys(ARMS, 1.0), noise=dict.fromkeys(ARMS, (2.0, 0.1)))
    assert loss.uba_vs("wsd").mean_diff == pytest.approx(0.1)  # lower loss = UBA better


def test_scheduled_deficits_are_set_against_their_standard_error() -> None:
    """Where UBA trails the best scheduled peer, the sentence gives each deficit in standard
    errors of its paired difference and counts those below one."""
    from bench.schedule_quality import ARMS, Cell, verdict_text

    def cell(steps: int, uba: list[float]) -> Cell:
        values = {a: [0.80, 0.81, 0.82] for a in ARMS} | {"wsd": [0.82, 0.83, 0.84], "uba": uba}
        return Cell(task="t", metric="val_accuracy", steps=steps, fraction=1.0, values=values,
                    units=dict.fromkeys(ARMS, 8.67), noise=dict.fromkeys(ARMS, (0.5, 0.01)))

    # paired UBA − WSD: [-0.01, +0.01, -0.03] (mean -0.01, std 0.02, SE 0.0115: 0.9 SE) and
    # [-0.02, -0.02, -0.02] (std 0: a sure miss, SE 0)
    text = verdict_text([cell(100, [0.81, 0.84, 0.81]), cell(200, [0.80, 0.81, 0.82]),
                         cell(400, [0.83, 0.84, 0.85])])
    assert "at least as good in 1 of 3 task × budget cells (t 400)" in text
    assert ("Where it trails (2 cells), the deficit is smaller than one standard error of the "
            "paired difference in 1 of 2 (t 100: -1 pt vs WSD, 0.9 SE; t 200: -2 pt vs WSD, "
            "≫ 1 SE)") in text


def test_the_same_test_is_applied_to_every_scheduled_arm() -> None:
    """Each scheduled arm against the best *other* one per cell: an arm that is best in one
    cell and second in the other passes once, and the sentence names the most passes."""
    from bench.schedule_quality import ARMS, FAMILY, Cell, same_test_text

    def cell(steps: int, wsd: float, uba: float) -> Cell:
        values = {a: [0.80, 0.80] for a in ARMS} | {"wsd": [wsd] * 2, "uba": [uba] * 2}
        return Cell(task="t", metric="val_accuracy", steps=steps, fraction=1.0, values=values,
                    units=dict.fromkeys(ARMS, 8.67), noise=dict.fromkeys(ARMS, (0.5, 0.01)))

    text = same_test_text([cell(100, 0.82, 0.81), cell(200, 0.81, 0.83)])
    assert "| UBA searched (φ, phases, η_max) | -1.00 | +2.00 | 1 of 2 |" in text
    assert "| WSD | +1.00 | -2.00 | 1 of 2 |" in text
    assert "| cosine | -2.00 | -3.00 | 0 of 2 |" in text
    assert "No scheduled arm, fixed shape or searched, passes in every cell: the most is " \
        "1 of 2" in text
    assert len(FAMILY) == 5


def test_schedule_free_is_set_against_the_best_of_every_schedule() -> None:
    """Schedule-free counts as ahead of the family only where it beats the cell's best
    scheduled arm (here WSD in one cell, UBA in the other), not merely UBA."""
    from bench.schedule_quality import ARMS, Cell, same_test_text

    def cell(task: str, wsd: float, sf: float) -> Cell:
        values = {a: [0.80, 0.80] for a in ARMS} | {"wsd": [wsd] * 2, "schedulefree": [sf] * 2}
        return Cell(task=task, metric="val_accuracy", steps=100, fraction=1.0, values=values,
                    units=dict.fromkeys(ARMS, 8.67), noise=dict.fromkeys(ARMS, (0.5, 0.01)))

    text = same_test_text([cell("a", 0.82, 0.81), cell("b", 0.79, 0.81)])
    assert "ahead of the best of all six tuned scheduled arms, searched UBA included, in 1 of " \
        "2 cells (b 100: +1 pt over UBA searched (φ, phases, η_max) (2/0/0)); at every " \
        "budget on 1 of 2 tasks (b)." in text


def test_merge_replaces_the_rows_of_the_same_budget_and_arm(tmp_path) -> None:
    """A scratch run's rows replace those of its (budget, arm) in the results; other rows and
    budgets stay; its provenance is kept under ``<name>_runs/``."""
    from bench.common import write_csv
    from bench.schedule_quality import merge_runs

    results, scratch = tmp_path / "results", tmp_path / "scratch"
    results.mkdir()
    scratch.mkdir()
    row = dict(task="mlp-fmnist", budget_steps=100, arm="uba", seed=0, test_value=0.5)
    write_csv(results / "schedule_quality_mlp-fmnist.csv",
              [row, {**row, "arm": "cosine"}, {**row, "budget_steps": 200}])
    write_csv(scratch / "schedule_quality_mlp-fmnist.csv", [{**row, "test_value": 0.9}])
    (scratch / "schedule_quality.provenance.json").write_text('{"git_commit": "abc"}')
    merged = merge_runs("cpu", [scratch], results)
    assert len(merged) == 1 and "uba 100" in merged[0]
    rows = read_csv(results / "schedule_quality_mlp-fmnist.csv")
    assert sorted((r["budget_steps"], r["arm"], r["test_value"]) for r in rows) == [
        ("100", "cosine", "0.5"), ("100", "uba", "0.9"), ("200", "uba", "0.5")]
    sidecar = results / "schedule_quality_runs" / "mlp-fmnist-uba-100.provenance.json"
    assert sidecar.read_text() == '{"git_commit": "abc"}'


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




def test_refined_schedule_plot_smoke(tmp_path) -> None:
    """A real linear run's recorded norms, refined: the CSV's refined curve is the library's
    refinement of the CSV's own norms, and the plot and table are written."""
    from bench import refined_schedule_plot as rsp
    from tuning.schedules import create_schedule

    assert rsp.main(["--smoke", "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "refined_schedule_smoke.csv")
    norms = [float(r["grad_norm"]) for r in rows]
    assert len(norms) == 32 and len(set(norms)) > 1  # a real run's norms vary
    lr = max(float(r["linear_lr"]) for r in rows)
    want = create_schedule("refined", 32, eta_max=lr, norms=norms, optimizer="sgd").values()
    assert [float(r["refined_lr"]) for r in rows] == pytest.approx(want, rel=1e-5)
    assert float(rows[-1]["refined_lr"]) == 0.0
    md = (tmp_path / "refined_schedule_smoke.md").read_text()
    assert "| mlp-digits | sgd (l2) | 32 |" in md and "git commit" in md
    assert (tmp_path / "refined_schedule_smoke.png").read_bytes()[:4] == b"\x89PNG"


def test_restart_peaks_smoke(tmp_path) -> None:
    """The restart bench end to end on digits: every shape × η factor × seed trained once,
    resumable (a second call trains nothing), and the report's sentences counted from rows."""
    from bench import restart_peaks as rp

    assert rp.main(["--smoke", "--out", str(tmp_path), "--workers", "1"]) == 0
    rows = read_csv(tmp_path / "restart_peaks.csv")
    assert len(rows) == len(rp.shapes()) * len(rp.ETA_FACTORS) * 2
    assert all(math.isfinite(float(r["objective"])) for r in rows)
    assert rp.run_grid(rp.SMOKE_TASKS, 2, tmp_path / "restart_peaks.csv", 1, rp.RESULTS) == 0
    md = (tmp_path / "restart_peaks.md").read_text()
    assert "beats one phase (seed mean at its best η_max) in" in md


def test_restart_peaks_report_counts_what_wins() -> None:
    """A lower peak after the restart that wins, and a 2-phase shape that beats one phase,
    are counted as such; a shape that diverged on a seed loses."""
    from bench.restart_peaks import report_body

    def rows(phases: int, decay: float, vals: list[float]) -> list[dict[str, str]]:
        return [{"task": "t", "phases": str(phases), "peak_decay": str(decay),
                 "eta_factor": "1.0", "seed": str(s), "objective": str(v)}
                for s, v in enumerate(vals)]

    data = (rows(1, 1.0, [1.0, 1.0]) + rows(2, 1.0, [1.2, 1.2]) + rows(2, 0.5, [0.9, 0.95])
            + rows(2, 0.25, [float("nan"), 0.1]))
    text = report_body(data, Path("/nonexistent"))
    assert "in 1 of 3 (task, phases, peak_decay) shapes (t 2 phases, peak_decay 0.5)" in text
    assert "beats restarting at η_max in 1 of 1 (task, phases) groups" in text
    assert "diverged on 1 of 2 seeds" in text
