"""Curvature features for the φ recommendation: the preconditioned Hessian against an explicit
matrix, exact features of a least-squares problem, Adam's preconditioner, the measured
schedule features of a real (tiny) run, and the nearest-case φ model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from trainables.config import TrainConfig
from tuning.curvature import estimate_curvature
from tuning.curvature._operator import CurvatureOperator
from tuning.curvature.features import (
    SPECTRUM_FEATURES,
    adam_preconditioner,
    spectrum_features,
    stability_limit,
)
from tuning.curvature.recommend import Case, PhiModel, load_phi_model, regret_curve
from tuning.phi_from_curvature import (
    FeatureSpec,
    WarmupDivergedError,
    recommend_for,
    schedule_features,
)

torch.set_num_threads(1)


def half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - y) ** 2).mean()


def _ls(n: int = 200, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.logspace(-1, 0.5, d,
                                                                            dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(d, 1, bias=False).double()
    return model, x, y, (x.T @ x / n)


# ----------------------------------------------------------- preconditioned operator: exact
def test_preconditioned_operator_is_the_explicit_matrix():
    model, x, y, h = _ls()
    d = torch.linspace(0.5, 4.0, h.shape[0], dtype=torch.float64)
    explicit = torch.diag(d.rsqrt()) @ h @ torch.diag(d.rsqrt())
    op = CurvatureOperator(model, half_mse, [(x, y)], preconditioner=d)
    v = torch.randn(h.shape[0], 3, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    assert torch.allclose(op.matvec(v), explicit @ v, rtol=1e-10, atol=1e-12)
    rep = estimate_curvature(model, half_mse, [(x[:120], y[:120]), (x[120:], y[120:])],
                             preconditioner=d, lanczos_steps=8, num_probes=4)
    ev = np.linalg.eigvalsh(explicit.numpy())
    assert rep.matrix == "preconditioned_hessian"
    assert rep.lambda_max == pytest.approx(ev.max(), rel=1e-6)
    assert rep.trace == pytest.approx(ev.sum(), rel=1e-6)  # full Krylov space: exact
    assert rep.kappa("lanczos").value == pytest.approx(ev.max() / ev.min(), rel=1e-5)
    # the same eigenvalues as P^-1 H (what a preconditioned step sees)
    ev_pinv_h = np.sort(np.linalg.eigvals((torch.diag(1 / d) @ h).numpy()).real)
    assert ev_pinv_h == pytest.approx(ev, rel=1e-8)


@pytest.mark.parametrize("bad", [torch.zeros(8), -torch.ones(8), torch.ones(5),
                                 torch.full((8,), float("nan"))])
def test_bad_preconditioner_is_refused(bad):
    model, x, y, _ = _ls()
    with pytest.raises(ValueError, match="preconditioner"):
        CurvatureOperator(model, half_mse, [(x, y)], preconditioner=bad.double())


def test_features_of_least_squares_are_exact():
    model, x, y, h = _ls()
    ev = np.linalg.eigvalsh(h.numpy())
    rep = estimate_curvature(model, half_mse, [(x, y)], lanczos_steps=8, num_probes=4)
    f = spectrum_features(rep, eta_max=0.1, limit=stability_limit("sgd", momentum=0.9),
                          prefix="init_")
    assert set(f) == {"init_" + k for k in SPECTRUM_FEATURES}
    assert f["init_lambda_max"] == pytest.approx(ev.max(), rel=1e-6)
    assert f["init_trace"] == pytest.approx(ev.sum(), rel=1e-6)
    assert f["init_kappa_lanczos"] == pytest.approx(ev.max() / ev.min(), rel=1e-5)
    assert f["init_kappa_trace"] == pytest.approx(ev.max() / ev.mean(), rel=1e-5)
    assert f["init_stability"] == pytest.approx(0.1 * ev.max(), rel=1e-6)
    assert f["init_stability_fraction"] == pytest.approx(0.1 * ev.max() / 3.8, rel=1e-6)
    assert f["init_negative_mass"] < 0.05  # convex: (almost) no density below zero
    assert 0 < f["init_density_q90"] <= f["init_density_q99"] <= 1.1


def test_stability_limits():
    assert stability_limit("sgd", momentum=0.0) == 2.0
    assert stability_limit("sgd", momentum=0.9) == pytest.approx(3.8)
    assert stability_limit("adamw", beta1=0.9) == pytest.approx(38.0)
    with pytest.raises(ValueError, match="lion"):
        stability_limit("lion")


def test_adam_preconditioner_matches_the_optimizer_state():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-6)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        opt.step()
    params = list(model.parameters())
    p = adam_preconditioner(opt.state_dict(), params)
    expect = torch.cat([(opt.state[q]["exp_avg_sq"] / (1 - 0.99**5)).sqrt().reshape(-1) + 1e-6
                        for q in params])
    assert torch.allclose(p, expect)
    with pytest.raises(ValueError, match="no Adam state"):
        adam_preconditioner(torch.optim.AdamW(model.parameters()).state_dict(), params)


# ------------------------------------------------------------- measured on a real tiny run
DIGITS = dict(model="mlp", dataset="digits", model_kwargs={"hidden_sizes": (16,)},
              batch_size=64, device="cpu")
SMALL = FeatureSpec(min_warmup_steps=4, curv=FeatureSpec().curv.__class__(
    num_batches=1, batch_size=64, lanczos_steps=8, num_probes=2))


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adamw", 3e-3)])
def test_schedule_features_of_a_real_run(optimizer, lr):
    train = TrainConfig(optimizer=optimizer, lr=lr, **DIGITS)
    out = schedule_features(train, 100, SMALL)
    f = out["features"]
    assert out["warmup_steps"] == 5  # 5 % of 100
    for prefix in ("init_", "warm_", "step_"):
        assert math.isfinite(f[prefix + "lambda_max"]) and f[prefix + "lambda_max"] > 0
    assert f["log_T"] == pytest.approx(math.log(100)) and f["adam"] == (optimizer == "adamw")
    assert f["warm_stability"] == pytest.approx(lr * f["warm_lambda_max"])
    assert set(out["cost_s"]) >= {"init", "warmup_train", "warm", "step"}
    if optimizer == "sgd":  # SGD steps on H itself
        assert f["step_lambda_max"] == f["warm_lambda_max"]
    else:  # Adam's preconditioned Hessian is a different matrix, near its stability limit
        assert f["step_lambda_max"] != pytest.approx(f["warm_lambda_max"], rel=0.1)
        assert out["reports"]["step"]["matrix"] == "preconditioned_hessian"
    init_only = schedule_features(train, 100, SMALL, warmup=False)
    assert not any(k.startswith("warm_") for k in init_only["features"])
    assert init_only["features"]["init_lambda_max"] == pytest.approx(f["init_lambda_max"])


def test_a_diverging_warmup_is_a_clear_error():
    train = TrainConfig(optimizer="sgd", lr=1e6, **DIGITS)
    with pytest.raises(WarmupDivergedError, match="diverged"):
        schedule_features(train, 200, FeatureSpec(min_warmup_steps=30, curv=SMALL.curv),
                          warmup=True)


# --------------------------------------------------------------------------- the φ model
def _case(name, opt, x, best, phis=(0.1, 1.0, 10.0)):
    reg = {p: abs(math.log(p / best)) for p in phis}
    return Case(name, opt, {"f": x}, tuple(reg), tuple(reg.values()))


def test_regret_curve_units_and_divergence():
    acc = regret_curve({0.1: 0.80, 1.0: 0.85, 10.0: float("nan")}, "max", "points")
    assert acc[1.0] == 0 and acc[0.1] == pytest.approx(5.0) and acc[10.0] == 100.0
    loss = regret_curve({0.1: 2.2, 1.0: 2.0}, "min", "relative_%")
    assert loss[0.1] == pytest.approx(10.0) and loss[1.0] == 0.0


def test_model_recommends_what_similar_cases_liked():
    cases = [_case("a", "sgd", 0.0, 0.1), _case("b", "sgd", 0.1, 0.1),
             _case("c", "sgd", 10.0, 10.0), _case("d", "adamw", 0.0, 1.0)]
    model = PhiModel([("f", "id")], 2, cases)
    assert model.predict({"f": 0.05}, "sgd").phi == 0.1
    assert model.predict({"f": 9.0}, "sgd").phi in (0.1, 10.0)
    assert model.predict({"f": 9.0}, "adamw").phi == 1.0  # only same-optimizer cases
    near = model.predict({"f": 0.05}, "sgd").neighbours
    assert [n.case for n in near] == ["a", "b"] and near[0].weight >= near[1].weight
    missing = model.predict({"f": float("nan")}, "sgd")
    assert missing.notes and math.isfinite(missing.phi)
    with pytest.raises(ValueError, match="lion"):
        model.predict({"f": 0.0}, "lion")
    # no features: every case is a neighbour with equal weight -> the best constant
    const = PhiModel([], 10, cases[:3])
    assert const.predict({}, "sgd").phi == 0.1
    # history: more cases, same standardisation
    more = model.with_cases([_case("h", "sgd", 0.05, 10.0), _case("i", "sgd", 0.06, 10.0)])
    assert more.predict({"f": 0.055}, "sgd").phi == 10.0


def test_model_round_trips_through_json(tmp_path):
    cases = [_case("a", "sgd", 0.0, 0.1), _case("b", "sgd", 1.0, 10.0)]
    model = PhiModel([("f", "log")], 1, cases, validation={"expected_gap": {"points": {}}},
                     provenance={"refit_command": "x"})
    model.save(tmp_path / "m.json")
    json.loads((tmp_path / "m.json").read_text(), parse_constant=pytest.fail)
    back = load_phi_model(tmp_path / "m.json")
    assert back is not None and back.predict({"f": 2.0}, "sgd").phi == 10.0
    assert back.provenance == {"refit_command": "x"}
    assert load_phi_model(tmp_path / "missing.json") is None


def test_packaged_model_has_provenance_and_validation():
    model = load_phi_model()
    assert model is not None
    assert model.provenance["refit_command"].startswith("python -m bench.phi_suggestions")
    assert model.provenance["corpus_cases"] >= 12
    assert {"median", "worst", "n"} <= set(model.validation["expected_gap"]["points"])
    assert {c.optimizer for c in model.cases} == {"sgd", "adamw"}


def test_recommend_for_a_real_run_and_its_fallbacks():
    train = TrainConfig(optimizer="sgd", lr=0.1, **DIGITS)
    rec = recommend_for(train, 100, spec=SMALL)
    json.dumps(rec, allow_nan=False)  # never NaN/inf
    assert rec["source"] == "model" and rec["phi"] > 0 and rec["phases"] == 1
    assert {s["source"] for s in rec["suggestions"]} >= {"model", "paper_default", "theory",
                                                         "calibrated"}
    assert rec["model_provenance"]["refit_command"]
    assert rec["features"]["init_lambda_max"] > 0 and rec["feature_cost_s"]["init"] > 0
    unmeasured = recommend_for(train, 100, measure=False)
    assert unmeasured["source"] == "model_partial_features" and unmeasured["warnings"]
    json.dumps(unmeasured, allow_nan=False)
    # a model that needs the warm-up, on a run whose warm-up diverges: labelled fallback
    cases = [Case(n, "sgd", {"log_T": t, "warm_lambda_max": lm}, (0.1, 1.0), r)
             for n, t, lm, r in (("a", 5.0, 1.0, (0.0, 1.0)), ("b", 6.0, 10.0, (1.0, 0.0)))]
    warm_model = PhiModel([("log_T", "id"), ("warm_lambda_max", "log")], 2, cases)
    diverging = TrainConfig(optimizer="sgd", lr=1e6, **DIGITS)
    rec = recommend_for(diverging, 600, model=warm_model,
                        spec=FeatureSpec(min_warmup_steps=30, curv=SMALL.curv))
    json.dumps(rec, allow_nan=False)
    assert rec["source"] == "model_partial_features"
    assert any("diverged" in w for w in rec["warnings"])


def test_the_recommendation_is_the_first_point_of_every_search():
    from tuning.phi_from_curvature import study_recommendation, suggestion_gaps, with_recommendation
    from tuning.proposer import initial_points
    from tuning.specs import StudySpec

    spec = StudySpec(study_id="s", train=TrainConfig(optimizer="sgd", lr=0.1, **DIGITS),
                     total_steps=100, num_trials=4)
    rec, report = study_recommendation(spec)  # no curvature asked: budget features, no Ray
    assert rec is not None and rec["source"] == "model_partial_features"
    assert report is None, "nothing was measured"
    spec2, sugg = with_recommendation(spec, rec, [{"source": "paper_default", "phi": 5.0}])
    first = initial_points(spec2)[0]
    assert first["phi"] == pytest.approx(rec["phi"]) and first.get("phases", 1) == 1
    assert [s["source"] for s in sugg] == ["model", "paper_default"]
    assert sugg[0]["evidence"]["features"]["log_T"] == pytest.approx(math.log(100))
    assert with_recommendation(spec, None, []) == (spec, [])
    # the study measures each suggestion's gap to the best run, the model's first
    trials = [{"phi": rec["phi"], "step": 100, "value": 0.8}, {"phi": 5.0, "step": 100,
                                                               "value": 0.9}]
    gaps = suggestion_gaps(sugg, 100, trials, 0.9, "max", (0.01, 50.0))
    assert gaps[0]["source"] == "model" and gaps[0]["gap"] == pytest.approx(0.1)
    assert gaps[1]["gap"] == pytest.approx(0.0)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_transformer_hessian_uses_an_attention_kernel_with_double_backward(device):
    """Fused attention (flash / memory-efficient, picked on CUDA) has no double backward; the
    operator forces the math kernel, so a transformer's H v works on every device."""
    import torch.nn.functional as F

    from trainables.models import transformer_lm

    torch.manual_seed(0)
    lm = transformer_lm({"task": "lm", "num_classes": 20, "input_shape": (16,)},
                        d_model=32).to(device)
    tok = torch.randint(0, 20, (8, 17), device=device)

    def lm_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    rep = estimate_curvature(lm, lm_loss, [(tok[:, :-1], tok[:, 1:])], lanczos_steps=6,
                             num_probes=2)
    assert rep.lambda_max > 0 and math.isfinite(rep.trace)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_preconditioned_estimate_on_cuda_matches_cpu():
    model, x, y, _ = _ls()
    d = torch.linspace(0.5, 4.0, 8, dtype=torch.float64)
    cpu = estimate_curvature(model, half_mse, [(x, y)], preconditioner=d, lanczos_steps=8,
                             num_probes=2)
    gpu = estimate_curvature(model.cuda(), half_mse, [(x, y)], preconditioner=d,
                             lanczos_steps=8, num_probes=2)
    assert gpu.settings["device"].startswith("cuda")
    assert gpu.lambda_max == pytest.approx(cpu.lambda_max, rel=1e-6)
    assert gpu.trace == pytest.approx(cpu.trace, rel=1e-6)
