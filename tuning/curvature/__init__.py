"""Hessian spectrum estimation and phi suggestions (design.md, "Curvature and phi").

Public API::

    report = estimate_curvature(model, loss_fn, batches)        # CurvatureReport
    report.kappa("slq_quantile").value
    suggestions = suggest_phi(report, "sgd", history=[...])     # list[PhiSuggestion]
    png = hessian_density_plot(report)

Needs only torch, numpy and the standard library (matplotlib lazily, for the plot).
"""

from tuning.curvature.estimate import estimate_curvature
from tuning.curvature.report import KAPPA_DEFINITIONS, CurvatureReport, KappaEstimate

__all__ = [
    "KAPPA_DEFINITIONS",
    "CurvatureReport",
    "KappaEstimate",
    "estimate_curvature",
]
