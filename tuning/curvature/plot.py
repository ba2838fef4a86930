"""PNG plot of the SLQ Hessian spectral density of a :class:`CurvatureReport`.

Why a log density axis: network spectra are a huge bulk near zero plus a few outliers; on a
linear axis the outliers (which set lambda_max and the theory phi) are invisible. matplotlib
is imported lazily (object-oriented API with the Agg canvas, no pyplot global state), so
``tuning.curvature`` itself needs only torch and numpy and plotting is thread-safe.
"""

from __future__ import annotations

import io
import math

import numpy as np

from tuning.curvature.report import CurvatureReport


def hessian_density_plot(report: CurvatureReport, *, title: str | None = None) -> bytes:
    """Return PNG bytes: SLQ density (log scale) with lambda_max, lambda_min+ and the kappas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = np.asarray(report.density_grid, dtype=float)
    dens = np.asarray(report.density_values, dtype=float)
    if grid.size == 0 or grid.size != dens.size:
        raise ValueError("report has no density to plot (density_grid/density_values empty)")
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    floor = max(float(dens.max()) * 1e-8, 1e-300)
    ax.semilogy(grid, np.maximum(dens, floor), color="C0", lw=1.5, label="SLQ density")
    ax.axvline(report.lambda_max, color="C3", ls="--", lw=1,
               label=f"lambda_max = {report.lambda_max:.4g}")
    if math.isfinite(report.lambda_min_positive):
        ax.axvline(report.lambda_min_positive, color="C2", ls=":", lw=1,
                   label=f"lambda_min+ = {report.lambda_min_positive:.3g}")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_ylim(bottom=floor)
    kap = ", ".join(f"{k.definition} {k.value:.3g}" for k in report.kappas if k.finite)
    ax.set_title(title or f"{report.matrix} spectrum, {report.num_params} params"
                 + ("" if report.converged else " (NOT converged)"), fontsize=10)
    if kap:
        ax.text(0.02, 0.97, "kappa: " + kap, transform=ax.transAxes, va="top", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
