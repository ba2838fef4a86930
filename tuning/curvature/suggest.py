"""phi suggestions from curvature, a measured calibration, past studies and the paper.

Four sources, each labelled with what it is valid for (design.md: "never present an untested
mapping as fact"):

* ``history``: weighted geometric mean of the tuned phi of the most similar finished studies
  (same optimizer family; same model/dataset preferred; nearest log budget and log kappa).
* ``calibrated``: ``log phi = a + b log kappa`` fitted on tuned phi of noisy quadratics by
  ``bench/curvature_calibration.py`` (coefficients and leave-one-out error in
  ``calibration.json``); the rationale states the provenance and the measured error.
* ``paper_default``: phi = 5 for SGD, 0.5 for AdamW (paper, Section 4.1 / Appendix E.5).
* ``theory``: phi = 2 kappa (Prop. 1), exact only for the rescaled quadratic of Eq. (6).

The list is ordered from the most to the least specific evidence: history, calibrated,
paper_default, theory.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from tuning.curvature.report import CurvatureReport, json_safe
from tuning.schedules._uba import PAPER_DEFAULT_PHI  # paper §4.1, defined once with Eq. (5)

logger = logging.getLogger(__name__)

CALIBRATION_PATH = Path(__file__).with_name("calibration.json")

#: Optimizer name -> family whose tuned phi are comparable (momentum/adaptivity class).
OPTIMIZER_FAMILIES: dict[str, str] = {
    "sgd": "sgd", "momentum": "sgd", "nesterov": "sgd", "sgd_momentum": "sgd",
    "adamw": "adam", "adam": "adam",
}

THEORY_VALID_FOR = (
    "exact only for the rescaled quadratic of Prop. 1 (Eq. 6: eigenvalues in [lambda_l, "
    "lambda_u], eta_max = 1, eta_min = 0, no gradient noise); an upper reference, not a tuned "
    "value, for noisy network training"
)

Source = Literal["theory", "calibrated", "history", "paper_default"]


@dataclass(frozen=True)
class HistoryPoint:
    """One finished study: what was tuned and the phi that won.

    ``kappa`` is optional (studies without a curvature report); ``kappa_definition`` names its
    definition (default: the same as the query's). ``metric`` is kept for the evidence only:
    metrics of different datasets are not comparable, so it does not weight neighbours.
    """

    model: str
    dataset: str
    optimizer: str
    budget_steps: int
    tuned_phi: float
    kappa: float | None = None
    metric: float | None = None
    kappa_definition: str | None = None
    study_id: str | None = None


@dataclass(frozen=True)
class PhiSuggestion:
    """A phi value with where it comes from and when it can be trusted."""

    source: Source
    phi: float
    kappa_definition: str | None
    rationale: str
    valid_for: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (NaN/inf -> None)."""
        return json_safe(asdict(self))


def optimizer_family(optimizer: str) -> str:
    """Family of an optimizer name; ValueError lists the known names."""
    key = optimizer.lower()
    if key not in OPTIMIZER_FAMILIES:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; known: {sorted(OPTIMIZER_FAMILIES)}"
        )
    return OPTIMIZER_FAMILIES[key]


@lru_cache(maxsize=4)
def _load_calibration_file(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def load_calibration(path: str | Path | None = None) -> dict[str, Any] | None:
    """The calibration written by bench/curvature_calibration.py, or None if absent."""
    p = Path(path) if path is not None else CALIBRATION_PATH
    if not p.exists():
        return None
    return _load_calibration_file(str(p))


def _finite_kappas(report: CurvatureReport | None) -> dict[str, float]:
    if report is None:
        return {}
    return {k.definition: k.value for k in report.kappas if k.finite}


def _theory(report: CurvatureReport | None) -> list[PhiSuggestion]:
    out = []
    if report is None:
        return out
    for k in report.kappas:
        if not k.finite:
            continue
        spread = f" +- {2 * k.spread:.3g}" if math.isfinite(k.spread) else ""
        out.append(PhiSuggestion(
            "theory", 2.0 * k.value, k.definition,
            f"Prop. 1: phi = 2 kappa with kappa = {k.value:.4g} ({k.description}); "
            f"phi = {2 * k.value:.4g}{spread}",
            THEORY_VALID_FOR,
            {"kappa": k.value, "kappa_spread": k.spread, "matrix": report.matrix},
        ))
    return out


def _real_check(calibration: Mapping[str, Any], family: str) -> str:
    """One sentence on the held-out real-network check of the calibration, if it was run."""
    val = (calibration.get("validation_real") or {}).get(family)
    if not val:
        return "; not validated on real networks"
    scores = val["scores"]
    cal = next((v for k, v in scores.items() if k.startswith("calibrated (")), None)
    # (the entry is what suggest_phi itself returned for the real networks' reports)
    default = scores.get("paper default")
    if cal is None or default is None:
        return ""
    return (
        f"; held-out check on {val['n_points']} real digits-MLP tunings: median regret "
        f"{cal['median_regret']:.1%} (paper default {default['median_regret']:.1%})"
    )


def _unreliable(report: CurvatureReport | None, definition: str) -> str | None:
    """Why a report's kappa should not be fed to the calibration, or None.

    A kappa whose relative spread over probes exceeds 50 % (typical of the bottom of a
    network spectrum, where the smallest positive Ritz values sit in the noise floor) would
    turn estimator noise into a confident-looking phi.
    """
    if report is None:
        return "no report"
    k = report.kappa(definition)
    if math.isfinite(k.spread) and k.spread > 0.5 * k.value:
        return f"relative spread {k.spread / k.value:.0%} > 50%"
    if definition == "lanczos" and any("smallest positive Ritz" in w for w in report.warnings):
        return "smallest positive Ritz value not converged"
    return None


def _calibrated(
    report: CurvatureReport | None, family: str, calibration: Mapping[str, Any] | None
) -> list[PhiSuggestion]:
    if calibration is None or family not in calibration.get("families", {}):
        return []
    fam = calibration["families"][family]
    src = calibration.get("created_by", "?")
    kappas = _finite_kappas(report)
    fits = fam["fits"]
    # Lowest leave-one-out regret first; ties go to the definitions that stay meaningful on
    # networks (a quantile of the density over the noise-floor-limited smallest Ritz value).
    robust = {"slq_quantile": 0, "ggn": 1, "trace": 2, "lanczos": 3}
    order = sorted(fits, key=lambda d: (round(fits[d]["loo"].get("mean_log_regret", 0.0), 3),
                                        robust.get(d, 9)))
    const_err = fam["constant_loo"].get("mean_log_regret", float("nan"))
    skipped: list[str] = []
    for name in order:
        if name not in kappas:
            continue
        why = _unreliable(report, name)
        if why:
            skipped.append(f"{name} kappa skipped ({why})")
            continue
        fit, kappa = fits[name], kappas[name]
        lo, hi = fit["clip"]
        raw = math.exp(fit["a"] + fit["b"] * math.log(kappa))
        phi = min(max(raw, lo), hi)
        kmin, kmax = fit["kappa_range"]
        notes = []
        if not kmin <= kappa <= kmax:
            notes.append(
                f"kappa {kappa:.4g} is outside the calibrated range [{kmin:.3g}, {kmax:.3g}]: "
                "extrapolated"
            )
        if phi != raw:
            notes.append(f"clipped from {raw:.4g} to the tuned grid [{lo:g}, {hi:g}]")
        loo = fit["loo"]
        if not fam.get("kappa_helps", True):
            notes.append(
                f"on the calibration problems kappa did not beat a constant phi "
                f"(LOO mean log loss regret {loo.get('mean_log_regret', float('nan')):.3f} vs "
                f"{const_err:.3f})"
            )
        rationale = (
            f"log phi = {fit['a']:.3f} + {fit['b']:.3f} log kappa ({name} kappa = {kappa:.4g}), "
            f"fitted by {src} on {fam['n_points']} tuned noisy quadratics "
            f"({fam.get('optimizer_simulated', family)}); leave-one-out error: median factor "
            f"{loo['median_factor']:.2f} in phi, median loss regret {loo['median_regret']:.1%} "
            f"(paper default: {fam['paper_default']['median_regret']:.1%}, 2 kappa: "
            f"{fam['theory_2kappa']['median_regret']:.1%})"
        )
        rationale += _real_check(calibration, family)
        if notes or skipped:
            rationale += "; " + "; ".join(skipped + notes)
        return [PhiSuggestion(
            "calibrated", phi, name, rationale,
            "noisy quadratic problems like the calibration set; unverified on networks unless "
            "the calibration data include them",
            {"a": fit["a"], "b": fit["b"], "kappa": kappa, "loo": loo,
             "calibration": calibration.get("data"), "created": calibration.get("created")},
        )]
    # No usable kappa: the calibrated constant (the best kappa-free phi of the calibration).
    why = "; ".join(skipped) if skipped else "no finite kappa available"
    return [PhiSuggestion(
        "calibrated", fam["constant_phi"], None,
        f"{why}: the best single phi over the {fam['n_points']} calibration problems of "
        f"{src}; leave-one-out median loss regret "
        f"{fam['constant_loo'].get('median_regret', float('nan')):.1%}",
        "noisy quadratic problems like the calibration set",
        {"loo": fam["constant_loo"], "calibration": calibration.get("data")},
    )]


def _history(
    report: CurvatureReport | None,
    family: str,
    history: Sequence[HistoryPoint],
    model: str | None,
    dataset: str | None,
    budget_steps: int | None,
    max_neighbours: int,
    max_distance: float,
) -> list[PhiSuggestion]:
    """Nearest past studies; distance = 1 per differing model/dataset + 0.5 per doubling of
    budget + 0.5 per decade of kappa (+0.25 when kappa is known on one side only)."""
    kappas = _finite_kappas(report)
    scored = []
    for h in history:
        if optimizer_family(h.optimizer) != family:
            continue
        if not (math.isfinite(h.tuned_phi) and h.tuned_phi > 0):
            continue
        d = 0.0
        if model is not None and h.model != model:
            d += 1.0
        if dataset is not None and h.dataset != dataset:
            d += 1.0
        if budget_steps and h.budget_steps and h.budget_steps > 0:
            d += 0.5 * abs(math.log2(h.budget_steps / budget_steps))
        if kappas:
            defn = h.kappa_definition or next(iter(kappas))
            qk = kappas.get(defn)
            if h.kappa is not None and h.kappa > 0 and qk is not None:
                d += 0.5 * abs(math.log10(h.kappa / qk))
            else:
                d += 0.25
        if d <= max_distance:
            scored.append((d, h))
    if not scored:
        return []
    scored.sort(key=lambda t: t[0])
    near = scored[:max_neighbours]
    weights = [math.exp(-d) for d, _ in near]
    phi = math.exp(sum(w * math.log(h.tuned_phi) for w, (_, h) in zip(weights, near,
                                                                         strict=True))
                   / sum(weights))
    named = ", ".join(
        f"{h.study_id or '?'} ({h.model}/{h.dataset}, {h.optimizer}, {h.budget_steps} steps, "
        f"phi={h.tuned_phi:.3g}, distance {d:.2f})" for d, h in near
    )
    spread = max(h.tuned_phi for _, h in near) / min(h.tuned_phi for _, h in near)
    return [PhiSuggestion(
        "history", phi, next(iter(kappas)) if kappas else None,
        f"weighted geometric mean (weights exp(-distance)) of the tuned phi of the "
        f"{len(near)} most similar past {family}-family studies: {named}; max/min ratio of "
        f"their phi {spread:.2g}",
        "runs like the neighbours (distance 0 = same model, dataset, budget and kappa)",
        {"neighbours": [{"distance": d, **asdict(h)} for d, h in near]},
    )]


def suggest_phi(
    report: CurvatureReport | None,
    optimizer: str,
    *,
    history: Sequence[HistoryPoint] = (),
    model: str | None = None,
    dataset: str | None = None,
    budget_steps: int | None = None,
    calibration: Mapping[str, Any] | str | Path | None = None,
    max_neighbours: int = 5,
    max_distance: float = 3.0,
) -> list[PhiSuggestion]:
    """phi suggestions, most specific evidence first (history, calibrated, default, theory).

    Args:
        report: a curvature report (None: no theory suggestion, the calibrated one falls back
            to its kappa-free constant).
        optimizer: "sgd" or "adamw" (aliases in :data:`OPTIMIZER_FAMILIES`).
        history: finished studies; only the same optimizer family is used.
        model, dataset, budget_steps: the query study, for the similarity to ``history``.
        calibration: a loaded calibration dict or a path (default: the packaged
            ``calibration.json``; missing file -> no calibrated suggestion).
    """
    family = optimizer_family(optimizer)
    cal = calibration if isinstance(calibration, Mapping) else load_calibration(calibration)
    default = PAPER_DEFAULT_PHI[optimizer.lower()] if optimizer.lower() in PAPER_DEFAULT_PHI \
        else PAPER_DEFAULT_PHI[family]
    out: list[PhiSuggestion] = []
    out += _history(report, family, history, model, dataset, budget_steps, max_neighbours,
                    max_distance)
    out += _calibrated(report, family, cal)
    out.append(PhiSuggestion(
        "paper_default", default, None,
        f"paper default for {family.upper()}-family optimizers (Section 4.1; phi ablation in "
        "Section 4.3 / Appendix E.6: AdamW prefers small phi, SGD larger)",
        "the paper's CIFAR/ImageNet/OLMo setups; a robust untuned start",
    ))
    out += _theory(report)
    logger.debug("phi suggestions for %s: %s", optimizer, [(s.source, s.phi) for s in out])
    return out
