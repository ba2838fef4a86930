"""Result types of the curvature estimator.

Every number carries what it is: a condition number is a :class:`KappaEstimate` with the name
of its definition, an uncertainty and its cost, because "kappa" of a network Hessian (which
has negative and near-zero eigenvalues) means nothing without a definition
(see design.md, "Curvature and phi").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Definitions understood by :func:`tuning.curvature.estimate_curvature` (``kappa_methods``).
KAPPA_DEFINITIONS: dict[str, str] = {
    "lanczos": "lambda_max / smallest positive Ritz value (Lanczos, all probes)",
    "trace": "lambda_max / (trace / n): top eigenvalue over the mean eigenvalue (Hutchinson)",
    "slq_quantile": "lambda_max / q-quantile of the resolved positive part of the SLQ density "
    "(Ritz values certified positive by their residual bound)",
    "ggn": "lambda_max / q-quantile of the resolved positive SLQ density of the Gauss-Newton "
    "matrix (positive semi-definite)",
}


def json_safe(x: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (strict JSON has no NaN/inf)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def _unclean(x: Any) -> Any:
    if x is None:
        return float("nan")
    return x


@dataclass(frozen=True)
class KappaEstimate:
    """One condition-number estimate.

    ``spread`` is a standard error (over probes for Lanczos/SLQ quantities, propagated from the
    spread of lambda_max over batches and of the Hutchinson trace otherwise); NaN when it could
    not be measured (e.g. a single probe). ``hvp_count``/``seconds`` are the cost of everything
    this estimate needed (shared work is counted in each estimate that used it).
    """

    definition: str
    value: float
    spread: float
    description: str = ""
    hvp_count: int = 0
    seconds: float = 0.0

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value) and self.value > 0


@dataclass
class CurvatureReport:
    """Spectrum summary of the training-loss Hessian (or GGN) at the model's parameters.

    ``lambda_max_spread``: standard error over batches of ``v^T H_b v`` for the top vector ``v``
    (NaN with one batch). ``lambda_min_ritz``: the smallest Ritz value (an upper bound on the
    true smallest eigenvalue, tight once converged). ``lambda_min_positive``: the smallest Ritz
    value above ``positive_threshold`` (floating-point noise floor relative to lambda_max).
    ``density_grid``/``density_values``: SLQ density (integrates to ~1). ``converged`` is the
    power iteration's verdict on lambda_max; ``warnings`` says what else is not trustworthy.
    """

    matrix: str
    num_params: int
    num_batches: int
    num_samples: int
    lambda_max: float
    lambda_max_spread: float
    lambda_min_ritz: float
    lambda_min_positive: float
    lambda_min_positive_residual: float
    positive_threshold: float
    trace: float
    trace_std: float
    density_grid: list[float]
    density_values: list[float]
    kappas: list[KappaEstimate]
    converged: bool
    warnings: list[str]
    cost: dict[str, float]
    top_ritz_values: list[float] = field(default_factory=list)
    power_iterations: int = 0
    lambda_max_history: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def kappa(self, definition: str) -> KappaEstimate:
        """The estimate with this definition name; KeyError lists the available ones."""
        for k in self.kappas:
            if k.definition == definition:
                return k
        raise KeyError(
            f"no kappa with definition {definition!r}; this report has "
            f"{[k.definition for k in self.kappas]}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (NaN/inf -> None); inverse of :meth:`from_dict`."""
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CurvatureReport:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        kw["kappas"] = [
            KappaEstimate(**{k: _unclean(v) for k, v in kd.items()}) for kd in data["kappas"]
        ]
        for key in (
            "lambda_max", "lambda_max_spread", "lambda_min_ritz", "lambda_min_positive",
            "lambda_min_positive_residual", "positive_threshold", "trace", "trace_std",
        ):
            kw[key] = _unclean(kw[key])
        kw["density_values"] = [_unclean(v) for v in kw["density_values"]]
        return cls(**kw)
