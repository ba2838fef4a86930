"""A φ recommendation fitted on tuned cases: nearest neighbours in a standardized feature space.

Why this model (issue 13 §3): it is small and every answer can be explained by the cases it
came from. A *case* is one tuned setting (model × data × optimizer × budget × η_max) with its
features (:mod:`tuning.curvature.features`, plus budget and η_max) and its measured regret
curve: for each φ tried, how far its tuning-split metric was from the case's best, in the
goal's units (accuracy points, or % relative loss). For a query the model takes the ``k``
nearest cases of the same optimizer (standardized features, distances over the features both
sides have) and recommends the φ that minimises their distance-weighted mean regret — the
"best constant φ" restricted to similar cases (with ``k`` = all cases it *is* the best
constant). Finished studies become cases too (:meth:`PhiModel.with_cases`): their trials give a
sparse regret curve and their spec the budget features, so history feeds the same model.

The packaged fit is ``phi_model.json`` (written by ``python -m bench.phi_suggestions --refit``
from ``bench/results/phi_corpus.csv``); its provenance and leave-one-case-out validation
travel with every answer. Needs only the standard library and numpy.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

MODEL_PATH = Path(__file__).with_name("phi_model.json")

#: Feature transforms: "log" features are positive quantities compared by ratio.
LOG = "log"
IDENTITY = "id"


def regret_curve(values: Mapping[float, float], mode: str, unit: str) -> dict[float, float]:
    """Regret of each φ relative to the best of ``values`` (mean metric per φ).

    ``unit`` "points": (best - value) * 100 for accuracies; "relative_%": (value / best - 1)
    * 100 for losses. Non-finite values (diverged runs) get the worst finite regret * 2 (at
    least 100), so a neighbour that diverged at some φ steers the answer away from it.
    """
    finite = {p: v for p, v in values.items() if math.isfinite(v)}
    if not finite:
        raise ValueError("no finite metric value to build a regret curve from")
    best = max(finite.values()) if mode == "max" else min(finite.values())

    def reg(v: float) -> float:
        if unit == "points":
            return (best - v) * 100.0 if mode == "max" else (v - best) * 100.0
        return (v / best - 1.0) * 100.0 if mode == "min" else (1.0 - v / best) * 100.0

    out = {p: reg(v) for p, v in finite.items()}
    worst = max(100.0, 2.0 * max(out.values()))
    out.update({p: worst for p, v in values.items() if not math.isfinite(v)})
    return dict(sorted(out.items()))


def gap_unit(metric: str) -> str:
    """Units of a gap: accuracy points for accuracies, % relative loss otherwise."""
    return "points" if metric.endswith("accuracy") else "relative_%"


@dataclass(frozen=True)
class Case:
    """One tuned setting: features and the regret curve over the φ values tried."""

    case: str
    optimizer: str
    features: dict[str, float]
    phis: tuple[float, ...]
    regrets: tuple[float, ...]
    source: str = "corpus"
    best_phases: int = 1

    @property
    def tuned_phi(self) -> float:
        return self.phis[int(np.argmin(self.regrets))]

    def regret_at(self, phi: float) -> float:
        """Regret at ``phi``, linear in log φ between tried values, constant beyond them."""
        lp = np.log(np.asarray(self.phis))
        return float(np.interp(math.log(phi), lp, np.asarray(self.regrets)))


@dataclass(frozen=True)
class Neighbour:
    case: str
    source: str
    distance: float
    weight: float
    tuned_phi: float


@dataclass(frozen=True)
class Prediction:
    """A recommended φ with the neighbours it came from and the validated error."""

    phi: float
    phases: int
    neighbours: list[Neighbour]
    features_used: list[str]
    expected_gap: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _transform(value: float, how: str) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return math.nan
    if how == LOG:
        return math.log(value) if value > 0 else math.nan
    return float(value)


class PhiModel:
    """k-nearest tuned cases → φ with the lowest weighted mean regret (see module docstring)."""

    def __init__(self, features: Sequence[tuple[str, str]], k: int, cases: Sequence[Case],
                 *, center: Sequence[float] | None = None, scale: Sequence[float] | None = None,
                 validation: Mapping[str, Any] | None = None,
                 provenance: Mapping[str, Any] | None = None,
                 phases: Mapping[str, Any] | None = None) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not cases:
            raise ValueError("a PhiModel needs at least one tuned case")
        self.features = [(str(n), str(t)) for n, t in features]
        self.k = int(k)
        self.cases = list(cases)
        x = self._matrix(self.cases)
        self._x = x  # the cases' transformed features, computed once
        if center is None or scale is None:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing feature
                c = np.nanmean(x, axis=0) if x.size else np.zeros(0)
                s = np.nanstd(x, axis=0) if x.size else np.zeros(0)
            center = np.nan_to_num(c).tolist()
            scale = [v if math.isfinite(v) and v > 1e-12 else 1.0 for v in s.tolist()]
        self.center = np.asarray(center, dtype=float)
        self.scale = np.asarray(scale, dtype=float)
        self.validation = dict(validation or {})
        self.provenance = dict(provenance or {})
        self.phases = dict(phases or {"recommended": 1, "evidence": "no phase data"})

    # ------------------------------------------------------------------ features
    def vector(self, features: Mapping[str, float]) -> np.ndarray:
        return np.asarray([_transform(features.get(n, math.nan), t) for n, t in self.features])

    def _matrix(self, cases: Sequence[Case]) -> np.ndarray:
        if not self.features or not cases:
            return np.zeros((len(cases), len(self.features)))
        return np.stack([self.vector(c.features) for c in cases])

    def _distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """RMS standardized difference over the features both have; inf when none is shared
        (a model without features makes every case distance 0: the best constant)."""
        if not self.features:
            return 0.0
        m = np.isfinite(a) & np.isfinite(b)
        if not m.any():
            return math.inf if np.isfinite(a).any() else 1.0
        d = (a[m] - b[m]) / self.scale[m]
        # features one side lacks count as one standard deviation apart
        return float(math.sqrt((np.sum(d**2) + (len(a) - m.sum())) / len(a)))

    # ---------------------------------------------------------------- prediction
    def neighbours(self, features: Mapping[str, float], optimizer: str,
                   exclude: Sequence[str] = ()) -> list[Neighbour]:
        q = self.vector(features)
        scored = []
        for c, x in zip(self.cases, self._x, strict=True):
            if c.optimizer != optimizer or c.case in exclude:
                continue
            d = self._distance(q, x)
            if math.isfinite(d):
                scored.append((d, c))
        scored.sort(key=lambda t: (t[0], t[1].case))
        # a query with no usable feature is equally far from every case: all of them, equal
        # weights (the best constant), rather than an arbitrary k
        near = scored[: self.k] if np.isfinite(q).any() or not self.features else scored
        return [Neighbour(c.case, c.source, d, 1.0 / (d + 0.1), c.tuned_phi) for d, c in near]

    def predict(self, features: Mapping[str, float], optimizer: str,
                exclude: Sequence[str] = ()) -> Prediction:
        """Recommend φ for a run with these features (``exclude``: case names to leave out)."""
        near = self.neighbours(features, optimizer, exclude)
        if not near:
            raise ValueError(f"no tuned case for optimizer {optimizer!r} to recommend from; "
                             f"the model has {sorted({c.optimizer for c in self.cases})}")
        by_name = {c.case: c for c in self.cases}
        grid = sorted({p for n in near for p in by_name[n.case].phis})
        log_grid = np.log(grid)
        scores = np.zeros(len(grid))
        for n in near:  # regret_at over the whole grid at once
            c = by_name[n.case]
            scores += n.weight * np.interp(log_grid, np.log(c.phis), c.regrets)
        phi = grid[int(np.argmin(scores))]
        q = self.vector(features)
        used = [n for (n, _), v in zip(self.features, q, strict=True) if math.isfinite(v)]
        notes = []
        missing = [n for n, _ in self.features if n not in used]
        if missing:
            notes.append(f"features not available, compared without them: {missing}")
        return Prediction(phi=float(phi), phases=int(self.phases.get("recommended", 1)),
                          neighbours=near, features_used=used,
                          expected_gap=dict(self.validation.get("expected_gap", {})),
                          notes=notes)

    def with_cases(self, extra: Sequence[Case]) -> PhiModel:
        """The same fit (standardization kept) with more cases, e.g. finished studies."""
        return PhiModel(self.features, self.k, [*self.cases, *extra], center=self.center,
                        scale=self.scale, validation=self.validation,
                        provenance=self.provenance, phases=self.phases)

    @property
    def needed_features(self) -> list[str]:
        return [n for n, _ in self.features]

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "knn_regret",
            "features": [list(f) for f in self.features],
            "k": self.k,
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "phases": self.phases,
            "validation": self.validation,
            "provenance": self.provenance,
            "cases": [{**asdict(c), "phis": list(c.phis), "regrets": list(c.regrets)}
                      for c in self.cases],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhiModel:
        if data.get("kind") != "knn_regret":
            raise ValueError(f"unknown phi model kind {data.get('kind')!r}")
        cases = [Case(case=c["case"], optimizer=c["optimizer"], features=dict(c["features"]),
                      phis=tuple(c["phis"]), regrets=tuple(c["regrets"]),
                      source=c.get("source", "corpus"), best_phases=c.get("best_phases", 1))
                 for c in data["cases"]]
        return cls([tuple(f) for f in data["features"]], data["k"], cases,
                   center=data["center"], scale=data["scale"],
                   validation=data.get("validation"), provenance=data.get("provenance"),
                   phases=data.get("phases"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(_json_safe(self.to_dict()), indent=1) + "\n")


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> PhiModel:
    data = json.loads(Path(path).read_text())
    for c in data["cases"]:  # JSON null = a feature that could not be measured
        c["features"] = {k: (math.nan if v is None else v) for k, v in c["features"].items()}
    return PhiModel.from_dict(data)


def load_phi_model(path: str | Path | None = None) -> PhiModel | None:
    """The packaged (or given) fitted model, or None when the file does not exist."""
    p = Path(path) if path is not None else MODEL_PATH
    if not p.exists():
        return None
    return _load(str(p), p.stat().st_mtime)
