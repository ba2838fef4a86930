"""Hessian spectrum estimation and phi suggestions (design.md, "Curvature and phi").

Public API::

    report = estimate_curvature(model, loss_fn, batches)        # CurvatureReport
    report.kappa("slq_quantile").value
    suggestions = suggest_phi(report, "sgd", history=[...])     # list[PhiSuggestion]
    png = hessian_density_plot(report)
    features = spectrum_features(report, eta_max=0.1, limit=stability_limit("sgd"), prefix="")
    load_phi_model().predict(features, "sgd").phi             # fitted nearest-case phi model

Modules: ``_operator`` (Hessian/GGN products), ``_lanczos`` (Lanczos, SLQ, power iteration),
``estimate`` (``estimate_curvature``), ``report`` (result types), ``suggest`` (phi
suggestions, calibration loading), ``features`` (curvature features of a schedule: stability
ratio, Adam preconditioner), ``recommend`` (the fitted phi model), ``plot`` (PNG). Needs only torch, numpy and the standard
library (matplotlib lazily, for the plot).
"""

from tuning.curvature.estimate import estimate_curvature
from tuning.curvature.features import adam_preconditioner, spectrum_features, stability_limit
from tuning.curvature.plot import hessian_density_plot
from tuning.curvature.recommend import PhiModel, load_phi_model
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
    "PhiModel",
    "PhiSuggestion",
    "adam_preconditioner",
    "estimate_curvature",
    "hessian_density_plot",
    "load_calibration",
    "load_phi_model",
    "optimizer_family",
    "spectrum_features",
    "stability_limit",
    "suggest_phi",
]
