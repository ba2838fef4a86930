"""phi suggestions (theory / calibrated / history / paper default) and the density plot."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from tuning.curvature import (
    CALIBRATION_PATH,
    HistoryPoint,
    estimate_curvature,
    hessian_density_plot,
    load_calibration,
    suggest_phi,
)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ls_report():
    """Least squares with a known kappa (eigenvalues of X^T X / n)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64) * torch.tensor(
        [1.0, 0.8, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    y = torch.randn(200, 1, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(6, 1, bias=False).double()
    rep = estimate_curvature(model, lambda o, t: 0.5 * ((o - t) ** 2).mean(), [(x, y)],
                             num_probes=3)
    ev = torch.linalg.eigvalsh(x.T @ x / 200)
    return rep, float(ev.max() / ev.min())


def _by_source(sugs, source):
    return [s for s in sugs if s.source == source]


def test_theory_is_two_kappa_and_labelled(ls_report):
    rep, kappa = ls_report
    sugs = suggest_phi(rep, "sgd")
    theory = {s.kappa_definition: s for s in _by_source(sugs, "theory")}
    assert set(theory) == {"lanczos", "trace", "slq_quantile"}
    assert theory["lanczos"].phi == pytest.approx(2 * kappa, rel=1e-3)
    assert "Prop. 1" in theory["lanczos"].rationale
    assert "rescaled quadratic" in theory["lanczos"].valid_for
    # Order: most specific evidence first; theory last.
    assert [s.source for s in sugs][-3:] == ["theory"] * 3
    assert sugs[0].source == "calibrated"


def test_paper_defaults():
    for opt, phi in (("sgd", 5.0), ("adamw", 0.5), ("AdamW", 0.5), ("nesterov", 5.0)):
        (d,) = _by_source(suggest_phi(None, opt), "paper_default")
        assert d.phi == phi
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        suggest_phi(None, "lion")


def test_calibrated_uses_committed_calibration_and_states_its_error(ls_report):
    rep, _ = ls_report
    cal = load_calibration()
    assert cal is not None, f"{CALIBRATION_PATH} missing: run bench/curvature_calibration.py"
    for opt, fam in (("sgd", "sgd"), ("adamw", "adam")):
        (c,) = _by_source(suggest_phi(rep, opt), "calibrated")
        f = cal["families"][fam]["fits"][c.kappa_definition]
        kappa = rep.kappa(c.kappa_definition).value
        expect = min(max(math.exp(f["a"] + f["b"] * math.log(kappa)), f["clip"][0]),
                     f["clip"][1])
        assert c.phi == pytest.approx(expect)
        assert "bench/curvature_calibration.py" in c.rationale
        assert "leave-one-out" in c.rationale and "regret" in c.rationale
    # Without a report, the kappa-free calibrated constant.
    (c0,) = _by_source(suggest_phi(None, "sgd"), "calibrated")
    assert c0.kappa_definition is None
    assert c0.phi == pytest.approx(cal["families"]["sgd"]["constant_phi"])


def test_calibration_file_matches_committed_csv():
    """The json's point counts come from the committed CSV (minus 'solved' rows)."""
    cal = json.loads(CALIBRATION_PATH.read_text())
    with (ROOT / cal["data"]).open() as fh:
        rows = list(csv.DictReader(fh))
    for opt, fam in (("sgd", "sgd"), ("adamw", "adam")):
        mine = [r for r in rows if r["optimizer"] == opt]
        fitted = [r for r in mine if float(r["best_loss"]) > 1e-12 * float(r["initial_loss"])]
        assert cal["families"][fam]["n_points"] == len(fitted) > 20
        loo = cal["families"][fam]["fits"][cal["families"][fam]["best_definition"]]["loo"]
        assert loo["mean_log_regret"] >= 0


def test_calibrated_extrapolation_is_flagged():
    cal = {"created_by": "unit", "data": "x.csv", "families": {"sgd": {
        "n_points": 10, "optimizer_simulated": "SGD",
        "fits": {"trace": {"a": 0.0, "b": 1.0, "clip": [0.1, 100.0], "kappa_range": [1, 10],
                           "loo": {"mean_abs_log_phi_error": 0.1, "median_factor": 1.1,
                                   "median_regret": 0.01, "mean_log_regret": 0.01}}},
        "constant_phi": 3.0, "constant_loo": {"mean_abs_log_phi_error": 0.5,
                                              "median_factor": 1.6},
        "paper_default": {"median_regret": 0.2}, "theory_2kappa": {"median_regret": 0.9},
        "kappa_helps": True}}}
    from tuning.curvature import CurvatureReport, KappaEstimate

    rep = CurvatureReport(
        matrix="hessian", num_params=1, num_batches=1, num_samples=1, lambda_max=1.0,
        lambda_max_spread=float("nan"), lambda_min_ritz=0.0, lambda_min_positive=0.001,
        lambda_min_positive_residual=0.0, positive_threshold=0.0, trace=1.0, trace_std=0.0,
        density_grid=[0.0], density_values=[1.0],
        kappas=[KappaEstimate("trace", 1000.0, 1.0)], converged=True, warnings=[], cost={})
    (c,) = _by_source(suggest_phi(rep, "sgd", calibration=cal), "calibrated")
    assert c.phi == 100.0
    assert "outside the calibrated range" in c.rationale and "clipped" in c.rationale


def test_calibrated_skips_noisy_kappa(ls_report):
    """A kappa with > 50 % spread over probes is not fed to the calibration."""
    import dataclasses

    rep, _ = ls_report
    noisy = [dataclasses.replace(k, spread=k.value) for k in rep.kappas]
    rep2 = dataclasses.replace(rep, kappas=noisy)
    (c,) = _by_source(suggest_phi(rep2, "sgd"), "calibrated")
    assert c.kappa_definition is None
    assert "skipped (relative spread 100% > 50%)" in c.rationale
    assert c.phi == pytest.approx(load_calibration()["families"]["sgd"]["constant_phi"])
    only_trace = [dataclasses.replace(k, spread=k.value) if k.definition != "trace" else k
                  for k in rep.kappas]
    (c,) = _by_source(suggest_phi(dataclasses.replace(rep, kappas=only_trace), "sgd"),
                      "calibrated")
    assert c.kappa_definition == "trace"


def test_history_nearest_neighbours(ls_report):
    rep, kappa = ls_report
    hist = [
        HistoryPoint("mlp", "digits", "sgd", 1000, 8.0, kappa=kappa, study_id="s1",
                     kappa_definition="lanczos"),
        HistoryPoint("mlp", "digits", "sgd", 2000, 4.0, kappa=kappa, study_id="s2",
                     kappa_definition="lanczos"),
        HistoryPoint("cnn", "fashion", "sgd", 1000, 100.0, study_id="far"),  # distance > 2
        HistoryPoint("mlp", "digits", "adamw", 1000, 0.3, study_id="other-family"),
        HistoryPoint("mlp", "digits", "sgd", 1000, float("nan"), study_id="broken"),
    ]
    sugs = suggest_phi(rep, "sgd", history=hist, model="mlp", dataset="digits",
                       budget_steps=1000, max_distance=2.0)
    h = sugs[0]
    assert h.source == "history"
    names = [n["study_id"] for n in h.evidence["neighbours"]]
    assert names == ["s1", "s2"]
    # weights exp(-0) and exp(-0.5): geometric mean pulled towards s1
    w1, w2 = 1.0, math.exp(-0.5)
    assert h.phi == pytest.approx(math.exp((w1 * math.log(8) + w2 * math.log(4)) / (w1 + w2)))
    assert "s1" in h.rationale and "s2" in h.rationale
    # No similar study of the family: no history suggestion (never a made-up one).
    assert not _by_source(suggest_phi(rep, "adamw", history=hist[:3]), "history")


def test_history_without_report_uses_budget_and_names():
    hist = [HistoryPoint("mlp", "digits", "adamw", 500, 0.25, study_id="a"),
            HistoryPoint("mlp", "digits", "adamw", 4000, 2.0, study_id="b")]
    (h,) = _by_source(suggest_phi(None, "adamw", history=hist, model="mlp",
                                  dataset="digits", budget_steps=600), "history")
    assert h.evidence["neighbours"][0]["study_id"] == "a"
    assert 0.25 < h.phi < 2.0


def test_density_plot_png(ls_report):
    rep, _ = ls_report
    png = hessian_density_plot(rep)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    json.dumps([s.to_dict() for s in suggest_phi(rep, "sgd")], allow_nan=False)
