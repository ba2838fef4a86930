"""Curvature features that relate a spectrum to the schedule a run needs (issue 13, item 1).

Why features rather than one kappa: on real networks the tuned phi is far from Prop. 1's
``phi = 2 kappa`` (design.md, "Curvature and phi"); what it depends on in practice is the
budget, eta_max *relative to the stability limit*, the optimizer (for Adam the preconditioned
Hessian) and the curvature along the trajectory. This module turns a
:class:`~tuning.curvature.report.CurvatureReport` into named numbers; measuring them on a
registered model (at init and after a short warm-up at eta_max) is
:func:`tuning.phi_from_curvature.schedule_features`.

Stability limits (quadratic model, eigenvalue lambda of the stepped matrix):

* heavy-ball SGD (PyTorch: ``v = mu v + g``, ``theta -= eta v``): stable iff
  ``eta lambda < 2 (1 + mu)``;
* Adam/AdamW (``m = b1 m + (1 - b1) g``, ``theta -= eta m / P``): stable iff
  ``eta lambda(P^-1 H) < 2 (1 + b1) / (1 - b1)`` (38 for b1 = 0.9; Cohen et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from tuning.curvature.report import CurvatureReport

#: Feature name (without its ``init_``/``warm_``/``pre_`` prefix) -> what it is.
SPECTRUM_FEATURES: dict[str, str] = {
    "lambda_max": "top Hessian eigenvalue (power iteration)",
    "kappa_lanczos": "lambda_max / smallest positive Ritz value",
    "kappa_trace": "lambda_max / (trace / n)",
    "kappa_slq_quantile": "lambda_max / 10 % quantile of the resolved positive SLQ density",
    "trace": "Hutchinson trace (deflated)",
    "density_q90": "90 % quantile of the SLQ density, relative to lambda_max",
    "density_q99": "99 % quantile of the SLQ density, relative to lambda_max",
    "negative_mass": "SLQ density mass below -3 smoothing widths (0 for a convex loss)",
    "stability": "eta_max * lambda_max",
    "stability_fraction": "eta_max * lambda_max / the optimizer's stability limit",
}


def stability_limit(optimizer: str, *, momentum: float = 0.9, beta1: float = 0.9) -> float:
    """Largest ``eta * lambda`` of a stable quadratic step (see the module docstring)."""
    if optimizer == "sgd":
        return 2.0 * (1.0 + momentum)
    if optimizer in ("adam", "adamw"):
        return 2.0 * (1.0 + beta1) / (1.0 - beta1)
    raise ValueError(f"unknown optimizer {optimizer!r}; known: 'sgd', 'adamw'")


def adam_preconditioner(
    optimizer_state: Mapping[str, Any], params: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Adam's diagonal ``P = sqrt(v / (1 - b2^t)) + eps``, flat in ``params`` order.

    ``optimizer_state`` is ``torch.optim.Adam(W).state_dict()`` for one parameter group whose
    parameters are ``params`` (a trial's checkpoint holds exactly that).
    """
    groups = optimizer_state["param_groups"]
    if len(groups) != 1:
        raise ValueError(f"expected one parameter group, got {len(groups)}")
    group = groups[0]
    _, beta2 = group["betas"]
    eps = float(group["eps"])
    parts = []
    for i, p in zip(group["params"], params, strict=True):
        st = optimizer_state["state"].get(i)
        if st is None or "exp_avg_sq" not in st:
            raise ValueError(f"parameter {i} has no Adam state (no step taken yet)")
        step = float(st["step"])
        v = st["exp_avg_sq"].detach().to(dtype=p.dtype, device=p.device)
        if v.shape != p.shape:
            raise ValueError(f"Adam state {i} has shape {tuple(v.shape)}, param {tuple(p.shape)}")
        parts.append((v / (1.0 - beta2**step)).sqrt().reshape(-1) + eps)
    return torch.cat(parts)


def _density_quantile(grid: np.ndarray, values: np.ndarray, q: float) -> float:
    cdf = np.cumsum(np.clip(values, 0, None))
    if cdf[-1] <= 0:
        return float("nan")
    return float(grid[min(int(np.searchsorted(cdf / cdf[-1], q)), len(grid) - 1)])


def spectrum_features(report: CurvatureReport, *, eta_max: float, limit: float,
                      prefix: str) -> dict[str, float]:
    """Named features of one report (keys ``prefix + name``, names in SPECTRUM_FEATURES).

    Non-finite values stay NaN here; consumers decide (a model refuses NaN features).
    """
    lmax = report.lambda_max
    grid = np.asarray(report.density_grid, dtype=float)
    vals = np.nan_to_num(np.asarray(report.density_values, dtype=float))
    kappas = {k.definition: k.value for k in report.kappas}
    out = {
        "lambda_max": lmax,
        "kappa_lanczos": kappas.get("lanczos", math.nan),
        "kappa_trace": kappas.get("trace", math.nan),
        "kappa_slq_quantile": kappas.get("slq_quantile", math.nan),
        "trace": report.trace,
        "density_q90": math.nan,
        "density_q99": math.nan,
        "negative_mass": math.nan,
        "stability": eta_max * lmax,
        "stability_fraction": eta_max * lmax / limit,
    }
    if grid.size and lmax > 0 and np.isfinite(vals).all() and vals.sum() > 0:
        out["density_q90"] = _density_quantile(grid, vals, 0.9) / lmax
        out["density_q99"] = _density_quantile(grid, vals, 0.99) / lmax
        # below -3 sigma of the estimator's Gaussian smoothing (sigma = 1 % of the Ritz
        # range, the grid spans that range + 10 sigma): the smear of eigenvalues >= 0 is
        # < 0.2 % there, so what remains is resolved negative curvature
        sigma = (grid[-1] - grid[0]) / 110.0
        pos = np.clip(vals, 0, None)
        out["negative_mass"] = float(pos[grid < -3 * sigma].sum() / pos.sum())
    return {prefix + k: float(v) for k, v in out.items()}
