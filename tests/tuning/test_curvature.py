"""Exactness and bad-input tests of tuning.curvature.estimate_curvature.

Ground truth: numpy's eigvalsh of X^T X / n for linear least squares, and of the full Hessian
from torch.autograd.functional.hessian for a small MLP on sklearn's real digits data.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tuning.curvature import CurvatureReport, estimate_curvature

torch.set_num_threads(1)


def half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - y) ** 2).mean()


def _ls_problem(n: int = 240, d: int = 12, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 0.5, d, dtype=torch.float64)
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) * scales).to(dtype)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64).to(dtype)
    model = torch.nn.Linear(d, 1, bias=False).to(dtype)
    hess = (x.double().T @ x.double() / n).numpy()
    return model, x, y, np.linalg.eigvalsh(hess)


def _batches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


# ------------------------------------------------------------------ least squares: exact
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_least_squares_matches_eigvalsh(dtype):
    model, x, y, ev = _ls_problem(dtype=dtype)
    # Unequal batches: the estimator must weight them by size to get X^T X / n.
    batches = [(x[:100], y[:100]), (x[100:130], y[100:130]), (x[130:], y[130:])]
    rep = estimate_curvature(model, half_mse, batches, kappa_methods=("lanczos", "trace",
                             "slq_quantile", "ggn"), num_probes=4)
    assert rep.converged and rep.matrix == "hessian"
    assert rep.num_params == 12 and rep.num_batches == 3 and rep.num_samples == 240
    assert rep.lambda_max == pytest.approx(ev.max(), rel=1e-2)
    assert rep.trace == pytest.approx(ev.sum(), rel=5e-2)
    assert rep.lambda_min_ritz == pytest.approx(ev.min(), rel=1e-2)
    assert rep.lambda_min_positive == pytest.approx(ev.min(), rel=1e-2)
    kappa = ev.max() / ev.min()
    assert rep.kappa("lanczos").value == pytest.approx(kappa, rel=2e-2)
    assert rep.kappa("trace").value == pytest.approx(ev.max() / ev.mean(), rel=5e-2)
    # For least squares the Gauss-Newton matrix *is* the Hessian.
    assert rep.kappa("ggn").value == pytest.approx(rep.kappa("slq_quantile").value, rel=1e-3)
    # SLQ density: a probability density whose mean is trace / n.
    grid, dens = np.array(rep.density_grid), np.array(rep.density_values)
    dx = grid[1] - grid[0]
    assert dens.sum() * dx == pytest.approx(1.0, abs=2e-2)
    assert (grid * dens).sum() * dx == pytest.approx(ev.mean(), rel=5e-2)


def test_least_squares_more_params_than_steps_trace_and_lmax():
    """Lanczos shorter than the dimension: lambda_max still within 1 %, trace within 5 %."""
    model, x, y, ev = _ls_problem(n=600, d=120, seed=3)
    rep = estimate_curvature(model, half_mse, _batches(x, y, 200), lanczos_steps=25,
                             num_probes=8)
    assert rep.converged
    assert rep.lambda_max == pytest.approx(ev.max(), rel=1e-2)
    assert rep.trace == pytest.approx(ev.sum(), rel=5e-2)
    # Ritz values are Rayleigh quotients: never below the true lambda_min.
    assert rep.lambda_min_ritz >= ev.min() - 1e-9
    assert math.isfinite(rep.lambda_max_spread) and rep.lambda_max_spread > 0


def test_probe_groups_under_a_memory_cap():
    """With a basis budget of two probes, 6 probes run in 3 groups; results stay exact."""
    model, x, y, ev = _ls_problem(n=300, d=40, seed=2)
    rep = estimate_curvature(model, half_mse, [(x, y)], num_probes=6, lanczos_steps=30,
                             max_basis_bytes=25_000)
    assert rep.settings["probe_groups"] == 3
    assert rep.lambda_max == pytest.approx(ev.max(), rel=1e-2)
    assert rep.trace == pytest.approx(ev.sum(), rel=5e-2)
    assert len(rep.density_values) == 256 and rep.converged


def test_ggn_operator_is_psd_and_equals_hessian_for_least_squares():
    model, x, y, ev = _ls_problem(d=8)
    rep = estimate_curvature(model, half_mse, [(x, y)], ggn=True, num_probes=2,
                             kappa_methods=("lanczos", "ggn"))
    assert rep.matrix == "ggn"
    assert rep.lambda_max == pytest.approx(ev.max(), rel=1e-6)
    assert rep.kappa("lanczos").value == pytest.approx(ev.max() / ev.min(), rel=1e-6)


# ------------------------------------------------------------------ real network vs full Hessian
def _digits(n: int = 384) -> tuple[torch.Tensor, torch.Tensor]:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-learn (digits data) not installed")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as fh:
        arr = np.loadtxt(fh, delimiter=",", max_rows=n)
    return torch.tensor(arr[:, :64] / 16.0), torch.tensor(arr[:, 64], dtype=torch.long)


@pytest.fixture(scope="module")
def digits_mlp():
    """A tanh MLP (1 810 params) trained for 40 full-batch steps on real digits, float64."""
    x, y = _digits()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 24), torch.nn.Tanh(),
                                torch.nn.Linear(24, 10)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    names = [k for k, _ in model.named_parameters()]
    params = tuple(p.detach().clone() for p in model.parameters())

    def loss_of(*ps):
        return F.cross_entropy(torch.func.functional_call(model, dict(zip(names, ps, strict=True)),
                                                          (x,)), y)

    blocks = torch.autograd.functional.hessian(loss_of, params, vectorize=True)
    sizes = [p.numel() for p in params]
    hess = torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j])
                                 for j in range(len(sizes))], 1) for i in range(len(sizes))], 0)
    ev = np.linalg.eigvalsh(hess.numpy())
    return model, x, y, ev


def test_mlp_matches_full_hessian(digits_mlp):
    model, x, y, ev = digits_mlp
    assert sum(p.numel() for p in model.parameters()) == ev.size <= 5000
    rep = estimate_curvature(model, F.cross_entropy, _batches(x, y, 128), num_probes=8,
                             lanczos_steps=30)
    assert rep.converged
    assert rep.lambda_max == pytest.approx(ev.max(), rel=1e-2)
    top = np.sort(ev)[::-1][:3]
    assert rep.top_ritz_values[:3] == pytest.approx(top.tolist(), rel=1e-2)
    assert rep.trace == pytest.approx(ev.sum(), rel=5e-2)
    # The network Hessian is indefinite; the bottom Ritz value bounds lambda_min from above
    # and is close to it after 30 steps.
    assert ev.min() < 0
    assert ev.min() - 1e-9 <= rep.lambda_min_ritz <= 0.8 * ev.min()
    # SLQ moments are exact in expectation: mean = trace / n, second moment = ||H||_F^2 / n.
    grid, dens = np.array(rep.density_grid), np.array(rep.density_values)
    dx = grid[1] - grid[0]
    assert (grid**2 * dens).sum() * dx == pytest.approx((ev**2).mean(), rel=0.25)
    kt = rep.kappa("trace")
    assert kt.value == pytest.approx(ev.max() / ev.mean(), rel=5e-2)
    assert kt.hvp_count == rep.cost["hvp_count"] and kt.seconds > 0


def test_slq_quantile_kappa_is_resolved_and_seed_stable(digits_mlp):
    """The quantile kappa uses only Ritz values certified positive by their residual bound:
    it must not collapse onto the noisy 'lanczos' kappa and must agree across probe seeds,
    and its quantile must be a true positive eigenvalue region of the exact spectrum."""
    model, x, y, ev = digits_mlp
    b = _batches(x, y, 128)
    reps = [estimate_curvature(model, F.cross_entropy, b, seed=s) for s in (0, 1)]
    k = [r.kappa("slq_quantile").value for r in reps]
    assert k[0] == pytest.approx(k[1], rel=0.3)
    for r in reps:
        assert r.kappa("slq_quantile").value < 0.5 * r.kappa("lanczos").value
        quantile = r.lambda_max / r.kappa("slq_quantile").value
        # Certified: some exact eigenvalue lies within the bound of that Ritz value, and
        # it is positive.
        assert quantile > 0 and np.min(np.abs(ev - quantile)) < 0.5 * quantile


def test_mlp_ggn_against_explicit_jacobian(digits_mlp):
    """GGN = J^T H_L J built explicitly from the Jacobian of the logits (64 samples)."""
    model, x, y, _ = digits_mlp
    xs, ys = x[:64], y[:64]
    names = [k for k, _ in model.named_parameters()]
    params = tuple(p.detach().clone() for p in model.parameters())

    def logits(*ps):
        return torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (xs,))

    jac = torch.autograd.functional.jacobian(logits, params)
    j = torch.cat([b.reshape(64 * 10, -1) for b in jac], 1)  # (640, n)
    prob = torch.softmax(logits(*params), 1)
    h_l = torch.block_diag(*[(torch.diag(p) - torch.outer(p, p)) / 64 for p in prob])
    ev = np.linalg.eigvalsh((j.T @ h_l @ j).numpy())
    rep = estimate_curvature(model, F.cross_entropy, [(xs, ys)], ggn=True, num_probes=4,
                             kappa_methods=("trace",))
    assert rep.lambda_max == pytest.approx(ev.max(), rel=1e-2)
    assert rep.trace == pytest.approx(ev.sum(), rel=5e-2)
    assert rep.lambda_min_ritz > -1e-8 * ev.max()  # PSD up to round-off


# ------------------------------------------------------------------ determinism, serialisation
def test_deterministic_with_seed_and_json_roundtrip():
    model, x, y, _ = _ls_problem(n=200, d=40, seed=5)
    b = _batches(x, y, 100)
    kw = dict(lanczos_steps=10, num_probes=3)
    r1 = estimate_curvature(model, half_mse, b, seed=7, **kw)
    r2 = estimate_curvature(model, half_mse, b, seed=7, **kw)
    r3 = estimate_curvature(model, half_mse, b, seed=8, **kw)
    d1, d2 = r1.to_dict(), r2.to_dict()
    for d in (d1, d2):
        d["cost"] = {k: v for k, v in d["cost"].items() if "seconds" not in k}
        d["kappas"] = [{k: v for k, v in kd.items() if k != "seconds"} for kd in d["kappas"]]
    assert d1 == d2
    assert r1.trace != r3.trace  # different probes
    text = json.dumps(r1.to_dict(), allow_nan=False)
    back = CurvatureReport.from_dict(json.loads(text))
    assert back.kappa("lanczos").value == r1.kappa("lanczos").value
    assert back.lambda_max == r1.lambda_max
    with pytest.raises(KeyError, match="slq_quantile"):
        back.kappa("nope")


@pytest.mark.parametrize("ggn", [False, True])
def test_batched_and_looped_products_agree(digits_mlp, ggn):
    """The vmapped backward (default on CUDA) and the per-vector loop give the same report."""
    model, x, y, _ = digits_mlp
    kw = dict(lanczos_steps=6, num_probes=3, ggn=ggn, kappa_methods=("trace",))
    a = estimate_curvature(model, F.cross_entropy, [(x[:64], y[:64])], batched_hvp=True, **kw)
    b = estimate_curvature(model, F.cross_entropy, [(x[:64], y[:64])], batched_hvp=False, **kw)
    assert a.settings["batched_hvp"] and not b.settings["batched_hvp"]
    assert a.lambda_max == pytest.approx(b.lambda_max, rel=1e-9)
    assert a.trace == pytest.approx(b.trace, rel=1e-9)
    assert a.density_values == pytest.approx(b.density_values, rel=1e-6, abs=1e-9)


def test_model_mode_is_restored_and_dropout_does_not_randomise():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.5),
                                torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model.train()
    x, y = torch.randn(32, 5), torch.randn(32, 1)
    r1 = estimate_curvature(model, half_mse, [(x, y)], num_probes=2, lanczos_steps=8)
    r2 = estimate_curvature(model, half_mse, [(x, y)], num_probes=2, lanczos_steps=8)
    assert model.training
    assert r1.lambda_max == r2.lambda_max


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model, x, y, ev = _ls_problem()
    cpu = estimate_curvature(model, half_mse, [(x, y)], num_probes=3)
    gpu = estimate_curvature(model.cuda(), half_mse, [(x, y)], num_probes=3)  # batches on CPU
    assert gpu.settings["device"].startswith("cuda")
    assert gpu.lambda_max == pytest.approx(cpu.lambda_max, rel=1e-6)
    assert gpu.trace == pytest.approx(cpu.trace, rel=1e-6)


# ------------------------------------------------------------------ bad input
def test_no_trainable_parameters():
    model = torch.nn.Linear(3, 1)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        estimate_curvature(model, half_mse, [(torch.randn(4, 3), torch.randn(4, 1))])


def test_empty_batches():
    model = torch.nn.Linear(3, 1)
    with pytest.raises(ValueError, match="batches is empty"):
        estimate_curvature(model, half_mse, [])
    with pytest.raises(ValueError, match="batch 1 is empty"):
        estimate_curvature(model, half_mse, [(torch.randn(4, 3), torch.randn(4, 1)),
                                             (torch.randn(0, 3), torch.randn(0, 1))])


def test_nan_loss():
    model = torch.nn.Linear(3, 1)
    x = torch.randn(4, 3)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="loss of batch 0 is nan"):
        estimate_curvature(model, half_mse, [(x, torch.randn(4, 1))])


def test_nan_in_hessian_vector_product():
    """Finite loss, non-finite second derivative (sqrt at 0): refused, not reported."""
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()

    def sqrt_loss(out, y):
        return (out.abs() + 0 * y).sqrt().mean()

    with pytest.raises(ValueError, match="non-finite Hessian-vector product"):
        estimate_curvature(model, sqrt_loss, [(torch.randn(4, 2), torch.randn(4, 1))])


def test_bad_settings():
    model, x, y, _ = _ls_problem(d=3)
    with pytest.raises(ValueError, match="unknown kappa method"):
        estimate_curvature(model, half_mse, [(x, y)], kappa_methods=("condition",))
    with pytest.raises(ValueError, match="tol must be > 0"):
        estimate_curvature(model, half_mse, [(x, y)], tol=0)
    with pytest.raises(ValueError, match="scalar"):
        estimate_curvature(model, lambda o, t: (o - t) ** 2, [(x, y)])


def test_non_converging_power_iteration_is_reported():
    """Too few Lanczos steps and one power iteration on a spread spectrum: converged=False,
    a warning saying lambda_max is only a lower bound, and the number is not above the truth."""
    model, x, y, ev = _ls_problem(n=500, d=150, seed=1)
    rep = estimate_curvature(model, half_mse, [(x, y)], lanczos_steps=2, num_probes=1,
                             power_iters=1)
    assert not rep.converged
    assert any("did not converge" in w and "lower bound" in w for w in rep.warnings)
    assert rep.lambda_max <= ev.max() + 1e-9
    assert rep.to_dict()["converged"] is False
