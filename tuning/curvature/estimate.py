"""``estimate_curvature``: the Hessian spectrum summary behind phitune's phi suggestions.

One pass of batched Lanczos over ``num_probes`` Rademacher probes gives, at the same time,
the top and bottom Ritz values, the Hutchinson trace (``n * alpha_1`` of each probe) and the
SLQ spectral density; a shifted power iteration warm-started from the top Ritz vector then
confirms lambda_max to ``tol`` and yields its spread over batches for free. The condition
numbers of Prop. 1 (phi = 2 kappa, kappa = lambda_u / lambda_l) are then formed under several
named definitions, because a network Hessian has no single lambda_l.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from tuning.curvature._lanczos import (
    SpectrumSample,
    lanczos_probes,
    power_iteration,
    slq_density,
    weighted_quantile,
)
from tuning.curvature._operator import CurvatureOperator
from tuning.curvature.report import KAPPA_DEFINITIONS, CurvatureReport, KappaEstimate

logger = logging.getLogger(__name__)


def _sem(values: Sequence[float]) -> float:
    """Standard error of the mean; NaN if fewer than two finite values."""
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if arr.size < 2:
        return float("nan")
    return float(arr.std(ddof=1) / math.sqrt(arr.size))


def _positive_quantile(res: SpectrumSample, thr: float, q: float) -> tuple[float, list[float]]:
    """q-quantile of the SLQ measure restricted to *resolved* positive eigenvalues.

    A Ritz value counts when ``theta > thr`` and ``theta > r`` (its residual bound ``r``:
    some eigenvalue lies in ``[theta - r, theta + r]``, so it is certified positive). Why:
    on a network most SLQ mass sits in unresolved Ritz values near zero, and without the
    certificate the quantile is simply the noisiest of them (measured on a digits MLP:
    kappa 1965-2520 over seeds, equal to the 'lanczos' one; with it 13.2-13.7). The value
    therefore describes the part of the spectrum ``lanczos_steps`` resolve.
    """
    pooled_t = np.concatenate(res.ritz)
    pooled_w = np.concatenate(res.weights)
    pooled_r = np.concatenate(res.residuals)
    mask = (pooled_t > thr) & (pooled_t > pooled_r)
    pooled = weighted_quantile(pooled_t[mask], pooled_w[mask], q)
    per = []
    for t, w, r in zip(res.ritz, res.weights, res.residuals, strict=True):
        m = (t > thr) & (t > r)
        per.append(weighted_quantile(t[m], w[m], q))
    return pooled, per


def _ratio(num: float, den: float) -> float:
    if not (math.isfinite(num) and math.isfinite(den)) or num <= 0 or den <= 0:
        return float("nan")
    return num / den


def estimate_curvature(
    model: torch.nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Sequence[tuple[Tensor, Tensor]],
    *,
    kappa_methods: Sequence[str] = ("lanczos", "trace", "slq_quantile"),
    lanczos_steps: int = 30,
    num_probes: int = 8,
    power_iters: int = 50,
    tol: float = 1e-3,
    ggn: bool = False,
    seed: int = 0,
    density_quantile: float = 0.1,
    grid_points: int = 256,
    positive_threshold: float | None = None,
    batched_hvp: bool | None = None,
    max_basis_bytes: int = 2 * 1024**3,
    preconditioner: Tensor | None = None,
) -> CurvatureReport:
    """Estimate the spectrum of the loss Hessian (``ggn=False``) or Gauss-Newton matrix.

    Args:
        model: any ``torch.nn.Module``; its trainable parameters define the matrix, its device
            and dtype are used for all products (CPU or CUDA). It is put in ``eval()`` mode while
            the graphs are built (deterministic curvature) and restored afterwards.
        loss_fn: ``loss_fn(model(x), y)`` -> scalar, mean-reduced over the batch.
        batches: ``(x, y)`` pairs; the matrix is their batch-size weighted mean Hessian.
        kappa_methods: names from :data:`KAPPA_DEFINITIONS`.
        lanczos_steps, num_probes: Lanczos steps per probe (capped at the number of params) and
            Rademacher probes (SLQ density, Hutchinson trace, per-probe spreads).
        power_iters, tol: cap and relative tolerance of the power iteration confirming
            lambda_max; not converging gives ``converged=False`` and a warning.
        ggn: use the Gauss-Newton matrix (PSD) instead of the Hessian.
        seed: probes are drawn on the CPU from this seed, so results do not depend on device.
        density_quantile: ``q`` of the ``slq_quantile``/``ggn`` definitions.
        positive_threshold: eigenvalues above ``positive_threshold * lambda_max`` count as
            positive; default ``100 * eps(dtype)`` (the float round-off floor of H v).
        batched_hvp: push all probes through one vmapped backward (default: on CUDA only).
        max_basis_bytes: memory for the stored Lanczos vectors; probes beyond it run in
            sequential groups (same number of products).
        preconditioner: flat positive diagonal P (``model.parameters()`` order): estimate the
            spectrum of ``P^-1/2 H P^-1/2`` (= that of ``P^-1 H``), the matrix a preconditioned
            optimizer such as Adam effectively steps on; ``matrix`` then says
            ``"preconditioned_hessian"``. Not combined with ``ggn`` or the ``ggn`` kappa.

    Raises:
        ValueError: no trainable parameters, no batches, an empty batch, a non-finite loss or
            Hessian-vector product, an unknown kappa method, or an out-of-range setting.
    """
    unknown = [m for m in kappa_methods if m not in KAPPA_DEFINITIONS]
    if unknown:
        raise ValueError(
            f"unknown kappa method(s) {unknown}; valid: {sorted(KAPPA_DEFINITIONS)}"
        )
    for name, val in (("lanczos_steps", lanczos_steps), ("num_probes", num_probes),
                      ("power_iters", power_iters), ("grid_points", grid_points)):
        if int(val) < 1:
            raise ValueError(f"{name} must be >= 1, got {val}")
    if not (tol > 0):
        raise ValueError(f"tol must be > 0, got {tol}")
    if not (0.0 < density_quantile < 1.0):
        raise ValueError(f"density_quantile must be in (0, 1), got {density_quantile}")

    if preconditioner is not None and (ggn or "ggn" in kappa_methods):
        raise ValueError("preconditioner cannot be combined with ggn / the 'ggn' kappa")

    t_start = time.perf_counter()
    op = CurvatureOperator(model, loss_fn, batches, ggn=ggn, batched=batched_hvp,
                           preconditioner=preconditioner)
    gen = torch.Generator().manual_seed(int(seed))
    warnings: list[str] = []

    lz = lanczos_probes(op.matvec, op.n, num_probes, lanczos_steps, generator=gen,
                        device=op.device, dtype=op.dtype, max_basis_bytes=max_basis_bytes)
    t_lanczos = time.perf_counter()
    hvp_lanczos = op.hvp_count

    all_ritz = np.concatenate(lz.ritz)
    top_probe = int(np.argmax([r[-1] for r in lz.ritz]))
    theta_top = float(lz.ritz[top_probe][-1])
    lambda_min_ritz = float(all_ritz.min())

    # --- lambda_max: shifted power iteration from the top Ritz vector -----------------------
    shift = min(0.0, lambda_min_ritz)
    power = power_iteration(
        lambda v: op.matvec(v, per_batch=True),  # type: ignore[arg-type,return-value]
        lz.top_vector.to(op.dtype),
        shift=shift, max_iters=int(power_iters), tol=tol,
    )
    t_power = time.perf_counter()
    hvp_power = op.hvp_count - hvp_lanczos
    lambda_max = max(theta_top, power.value) if math.isfinite(power.value) else theta_top
    lambda_max_spread = _sem(power.per_batch)
    if not power.converged:
        warnings.append(
            f"power iteration for lambda_max did not converge to tol={tol} in {power.iterations} "
            f"iteration(s) (last Rayleigh quotients {power.history[-3:]}); lambda_max "
            f"{lambda_max:.6g} is a lower bound only"
        )
    if lambda_max <= 0:
        warnings.append(
            f"lambda_max = {lambda_max:.6g} <= 0: no positive curvature, kappa is undefined"
        )

    # --- trace (Hutchinson from the first Lanczos step, deflated by another probe's Krylov
    # space: no extra products, far lower variance when a few outliers dominate) -----------
    hutch = lz.trace_estimates
    trace = float(hutch.mean())
    trace_std = _sem(hutch.tolist())

    # --- bottom of the spectrum -------------------------------------------------------------
    rel = positive_threshold if positive_threshold is not None else 100 * torch.finfo(op.dtype).eps
    thr = rel * lambda_max if lambda_max > 0 else float("inf")
    pos_mask = all_ritz > thr
    all_res = np.concatenate(lz.residuals)
    if pos_mask.any():
        i_min = int(np.argmin(np.where(pos_mask, all_ritz, np.inf)))
        lambda_min_positive = float(all_ritz[i_min])
        lmp_res = float(all_res[i_min])
        if lmp_res > 0.5 * lambda_min_positive:
            warnings.append(
                f"smallest positive Ritz value {lambda_min_positive:.4g} is not converged "
                f"(residual bound {lmp_res:.3g}); the 'lanczos' kappa is indicative only - "
                "more lanczos_steps would tighten it"
            )
    else:
        lambda_min_positive, lmp_res = float("nan"), float("nan")
    bottom_res = float(all_res[int(np.argmin(all_ritz))])

    # --- density ----------------------------------------------------------------------------
    lo, hi = lambda_min_ritz, max(float(all_ritz.max()), lambda_max)
    width = max(hi - lo, abs(hi), 1e-30)
    sigma = 0.01 * width
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, int(grid_points))
    density = slq_density(lz, grid, sigma)

    # --- kappas -----------------------------------------------------------------------------
    t_shared = t_power - t_start
    hvp_shared = op.hvp_count
    kappas: list[KappaEstimate] = []
    per_probe_top = [float(r[-1]) for r in lz.ritz]
    for method in kappa_methods:
        if method == "lanczos":
            per = []
            for t, top in zip(lz.ritz, per_probe_top, strict=True):
                pos = t[t > thr]
                per.append(_ratio(top, float(pos.min())) if pos.size else float("nan"))
            kappas.append(KappaEstimate(
                "lanczos", _ratio(lambda_max, lambda_min_positive), _sem(per),
                KAPPA_DEFINITIONS["lanczos"], hvp_shared, t_shared,
            ))
        elif method == "trace":
            value = _ratio(lambda_max, trace / op.n)
            spread = float("nan")
            if math.isfinite(value):
                rel_l = lambda_max_spread / lambda_max if math.isfinite(lambda_max_spread) else 0.0
                rel_t = trace_std / trace if math.isfinite(trace_std) else 0.0
                spread = value * math.hypot(rel_l, rel_t)
            elif trace <= 0:
                warnings.append(f"trace = {trace:.4g} <= 0: the 'trace' kappa is undefined")
            kappas.append(KappaEstimate(
                "trace", value, spread, KAPPA_DEFINITIONS["trace"], hvp_shared, t_shared
            ))
        elif method == "slq_quantile" or (method == "ggn" and ggn):
            pooled, per = _positive_quantile(lz, thr, density_quantile)
            kappas.append(KappaEstimate(
                method, _ratio(lambda_max, pooled),
                _sem([_ratio(t, p) for t, p in zip(per_probe_top, per, strict=True)]),
                f"{KAPPA_DEFINITIONS[method]} (q={density_quantile})", hvp_shared, t_shared,
            ))
        elif method == "ggn":
            kappas.append(_ggn_kappa(model, loss_fn, batches, lanczos_steps, num_probes,
                                     seed, rel, density_quantile, warnings, batched_hvp,
                                     max_basis_bytes))

    seconds = time.perf_counter() - t_start
    extra_hvp = sum(k.hvp_count for k in kappas if k.definition == "ggn" and not ggn)
    report = CurvatureReport(
        matrix="ggn" if ggn else ("hessian" if preconditioner is None
                                  else "preconditioned_hessian"),
        num_params=op.n,
        num_batches=op.num_batches,
        num_samples=op.num_samples,
        lambda_max=lambda_max,
        lambda_max_spread=lambda_max_spread,
        lambda_min_ritz=lambda_min_ritz,
        lambda_min_positive=lambda_min_positive,
        lambda_min_positive_residual=lmp_res,
        positive_threshold=thr,
        trace=trace,
        trace_std=trace_std,
        density_grid=grid.tolist(),
        density_values=density.tolist(),
        kappas=kappas,
        converged=bool(power.converged),
        warnings=warnings,
        cost={
            "hvp_count": op.hvp_count + extra_hvp,
            "hvp_lanczos": hvp_lanczos,
            "hvp_power": hvp_power,
            "backward_calls": op.backward_calls,
            "seconds": seconds,
            "seconds_lanczos": t_lanczos - t_start,
            "seconds_power": t_power - t_lanczos,
        },
        top_ritz_values=[float(x) for x in lz.ritz[top_probe][::-1][:5]],
        power_iterations=power.iterations,
        lambda_max_history=power.history,
        settings={
            "kappa_methods": list(kappa_methods), "lanczos_steps": lz.steps,
            "num_probes": num_probes, "probe_groups": lz.groups,
            "power_iters": power_iters, "tol": tol, "ggn": ggn,
            "seed": seed, "density_quantile": density_quantile,
            "smallest_ritz_residual": bottom_res, "device": str(op.device),
            "dtype": str(op.dtype).replace("torch.", ""), "batched_hvp": op._batched,
        },
    )
    logger.info(
        "curvature (%s, %d params): lambda_max=%.4g trace=%.4g kappas=%s in %.2fs, %d HVPs",
        report.matrix, op.n, lambda_max, trace,
        {k.definition: round(k.value, 4) for k in kappas}, seconds, report.cost["hvp_count"],
    )
    return report


def _ggn_kappa(
    model: torch.nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Sequence[tuple[Tensor, Tensor]],
    steps: int,
    probes: int,
    seed: int,
    rel: float,
    q: float,
    warnings: list[str],
    batched: bool | None,
    max_basis_bytes: int,
) -> KappaEstimate:
    """kappa of the Gauss-Newton matrix: lambda_max(G) / q-quantile of G's positive density.

    Why a quantile rather than the smallest positive eigenvalue: G = J^T H_L J has rank at
    most (samples x outputs), so its bottom is an exact (numerically noisy) zero block.
    """
    t0 = time.perf_counter()
    op = CurvatureOperator(model, loss_fn, batches, ggn=True, batched=batched)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    lz = lanczos_probes(op.matvec, op.n, probes, steps, generator=gen, device=op.device,
                        dtype=op.dtype, max_basis_bytes=max_basis_bytes)
    tops = [float(r[-1]) for r in lz.ritz]
    lmax = max(tops)
    p = int(np.argmax(tops))
    if lz.residuals[p][-1] > 1e-2 * abs(lmax):
        warnings.append(
            f"GGN lambda_max {lmax:.4g} not converged (residual bound "
            f"{lz.residuals[p][-1]:.3g}); the 'ggn' kappa is indicative only"
        )
    thr = rel * lmax if lmax > 0 else float("inf")
    pooled, per = _positive_quantile(lz, thr, q)
    return KappaEstimate(
        "ggn", _ratio(lmax, pooled),
        _sem([_ratio(t, x) for t, x in zip(tops, per, strict=True)]),
        f"{KAPPA_DEFINITIONS['ggn']} (q={q})", op.hvp_count, time.perf_counter() - t0,
    )
