"""Hessian spectrum estimation and phi suggestions (design.md, "Curvature and phi").

Public API::

    report = estimate_curvature(model, loss_fn, batches)        # CurvatureReport
    report.kappa("slq_quantile").value
    suggestions = suggest_phi(report, "sgd", history=[...])     # list[PhiSuggestion]
    png = hessian_density_plot(report)

Modules: ``_operator`` (Hessian/GGN products), ``_lanczos`` (Lanczos, SLQ, power iteration),
``estimate`` (``estimate_curvature``), ``report`` (result types), ``suggest`` (phi
suggestions, calibration loading), ``plot`` (PNG). Needs only torch, numpy and the standard
library (matplotlib lazily, for the plot).
"""

from tuning.curvature.estimate import estimate_curvature
from tuning.curvature.plot import hessian_density_plot
from tuning.curvature.report import KAPPA_DEFINITIONS, CurvatureReport, KappaEstimate
from tuning.curvature.suggest import (
    CALIBRATION_PATH,
    OPTIMIZER_FAMILIES,
    PAPER_DEFAULT_PHI,
    HistoryPoint,
    PhiSuggestion,
    load_calibration,
    optimizer_family,
    suggest_phi,
)

__all__ = [
    "CALIBRATION_PATH",
    "KAPPA_DEFINITIONS",
    "OPTIMIZER_FAMILIES",
    "PAPER_DEFAULT_PHI",
    "CurvatureReport",
    "HistoryPoint",
    "KappaEstimate",
    "PhiSuggestion",
    "estimate_curvature",
    "hessian_density_plot",
    "load_calibration",
    "optimizer_family",
    "suggest_phi",
]
