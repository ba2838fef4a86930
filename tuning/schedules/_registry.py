"""The schedule registry: every name ``create_schedule`` accepts, with its parameters.

The service validates schedule specs against this mapping (kinds, defaults, bounds), so it is
the single source of truth for what a spec may contain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from . import _baselines as B
from ._base import Curve, ParamInfo, ScheduleInfo, ScheduleParamError
from ._piecewise import build_piecewise
from ._refined import DEFAULT_WINDOW_FRAC, REFINED_OPTIMIZERS, build_refined
from ._uba import DEFAULT_VARIANT, UBA_VARIANTS, UBACurve, equal_boundaries

__all__ = ["SCHEDULES", "schedule_names"]

INF = math.inf


def _eta_max(kind: str = "float") -> ParamInfo:
    return ParamInfo(
        "eta_max", kind, None,
        "peak LR; null = relative mode: peak 1.0, a multiplier of each param group's own LR"
        + (" (a list gives one eta_max per phase)" if kind == "float_or_list" else ""),
        low=0.0, low_open=True, nullable=True)


def _eta_min(default: float = 0.0) -> ParamInfo:
    return ParamInfo("eta_min", "float", default,
                     "lowest LR (a fraction of the group LR in relative mode)", low=0.0)


_WARMUP = ParamInfo(
    "warmup_steps", "int", 0,
    "linear warmup steps before the schedule, included in total_steps: step i < W has "
    "LR eta_max (i + 1) / W; the schedule itself then runs over total_steps - W steps",
    low=0)


def _uba_resolve(T: int, p: Mapping[str, Any]) -> tuple[list[int], list[float], list[float]]:
    """Turn UBA params into the paper's boundaries ``[T_1=0, ..., T_K]`` of the body and
    per-phase phi / eta_max lists, checking that they agree."""
    warmup = p["warmup_steps"]
    phases = p["phases"]
    if p["boundaries"] is not None:
        starts = list(p["boundaries"])
        if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
            raise ScheduleParamError("uba", "boundaries", f"{starts} must be strictly increasing")
        if starts[0] <= warmup or starts[-1] >= T + warmup:
            raise ScheduleParamError(
                "uba", "boundaries",
                f"{starts} must lie in ({warmup}, {T + warmup}): the 0-based training steps "
                "where phases 2..K start, after warmup and before the end")
        if phases is not None and phases != len(starts) + 1:
            raise ScheduleParamError(
                "uba", "phases", f"{phases} disagrees with {len(starts)} boundaries "
                f"({len(starts) + 1} phases)")
        bounds = [0] + [b - warmup for b in starts] + [T]
    else:
        n = 1 if phases is None else phases
        if n > T:
            raise ScheduleParamError(
                "uba", "phases", f"{n} must be <= the {T} steps after warmup "
                "(every phase needs at least one step)")
        bounds = equal_boundaries(T, n)
    n = len(bounds) - 1

    def per_phase(name: str, value: Any) -> list[float]:
        if isinstance(value, tuple):
            if len(value) != n:
                raise ScheduleParamError(
                    "uba", name, f"{len(value)} values given for {n} phases; give one value "
                    "or one per phase")
            return [float(v) for v in value]
        return [float(value)] * n

    phis = per_phase("phi", p["phi"])
    eta_maxs = per_phase("eta_max", 1.0 if p["eta_max"] is None else p["eta_max"])
    decay = float(p["peak_decay"])
    return bounds, phis, [e * decay**k for k, e in enumerate(eta_maxs)]


def _build_uba(T: int, p: Mapping[str, Any]) -> Curve:
    bounds, phis, eta_maxs = _uba_resolve(T, p)
    eta_min = B.check_eta_min("uba", p, min(eta_maxs))
    curve = UBACurve(bounds, phis, eta_maxs, eta_min, p["variant"], p["phase_offset"])
    return curve.lr, max(eta_maxs)


def _uba_normalize(p: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``phases=None`` to 1 or ``len(boundaries) + 1`` so ``params`` is explicit."""
    if p["phases"] is None:
        p["phases"] = 1 if p["boundaries"] is None else len(p["boundaries"]) + 1
    return p


def _info(name: str, description: str, params: list[ParamInfo], build: Any,
          torch_equivalent: str | None = None, normalize: Any = None) -> ScheduleInfo:
    return ScheduleInfo(name, description, MappingProxyType({q.name: q for q in params}),
                        build, torch_equivalent, normalize)


_ENTRIES = [
    _info(
        "uba",
        "Unified Budget-Aware schedule, Eq. (5) of 'Stepsize anything' (NeurIPS 2025); "
        "phi=2 ~ cosine, phi~30 ~ exponential to 1%, phi~0.8 ~ REX, phi=0 constant",
        [
            ParamInfo("phi", "float_or_list", 5.0,
                      "variation speed: larger decays faster (paper: 5 for SGD, 0.5 for AdamW);"
                      " a list gives one phi per phase", low=0.0),
            ParamInfo("phases", "int", None,
                      "number of equal phases (the paper's K - 1); null = 1, or "
                      "len(boundaries) + 1", low=1, nullable=True),
            ParamInfo("boundaries", "int_list", None,
                      "0-based training steps where phases 2..K start (instead of equal "
                      "phases)", low=1, nullable=True),
            _eta_max("float_or_list"),
            _eta_min(),
            ParamInfo("variant", "str", DEFAULT_VARIANT,
                      "cyclic: paper's (k-1)pi offset, even phases rise; restart: every phase "
                      "decays", choices=UBA_VARIANTS),
            ParamInfo("phase_offset", "int", 0,
                      "added to the phase index k in the (k-1)pi term; 1 = Table 1's k <- k+1: "
                      "the cyclic variant starts rising (CLR, OneCycle)", low=0, high=1),
            ParamInfo("peak_decay", "float", 1.0,
                      "phase k's peak is eta_max x peak_decay^(k-1) (TensorFlow's m_mul of "
                      "cosine decay with restarts; the paper's step schedule is 0.5): 1 = every "
                      "phase restarts at eta_max", low=0.0, high=1.0, low_open=True),
            _WARMUP,
        ],
        _build_uba, None, _uba_normalize),
    _info("constant", "constant LR eta_max", [_eta_max(), _WARMUP], B.build_constant,
          "ConstantLR(factor=1)"),
    _info(
        "step",
        "multi-step decay: x gamma at each milestone (default x0.1 at 50 %, x0.01 at 75 %), "
        "or every step_size steps",
        [
            _eta_max(),
            ParamInfo("milestones", "float_list", None,
                      "fractions of the run where the LR is multiplied by gamma; null = "
                      "[0.5, 0.75]", low=0.0, high=1.0, low_open=True, high_open=True,
                      nullable=True),
            ParamInfo("step_size", "int", None, "StepLR period in steps (instead of "
                      "milestones)", low=1, nullable=True),
            ParamInfo("gamma", "float", 0.1, "multiplicative factor per milestone", low=0.0,
                      low_open=True),
            _WARMUP,
        ],
        B.build_step, "MultiStepLR / StepLR"),
    _info("cosine", "cosine annealing from eta_max to eta_min (CosineAnnealingLR, T_max=T)",
          [_eta_max(), _eta_min(), _WARMUP], B.build_cosine, "CosineAnnealingLR"),
    _info("linear", "linear decay from eta_max to eta_min", [_eta_max(), _eta_min(), _WARMUP],
          B.build_linear, "LinearLR(1, 0)"),
    _info(
        "rex", "reflected exponential (Chen et al. 2022): (1-z)/((1-beta z)/2 + 1/2)",
        [_eta_max(), _eta_min(),
         ParamInfo("beta", "float", 1.0, "REX shape; 1 = paper profile, 0.9 = their code",
                   low=0.0, high=1.0),
         _WARMUP],
        B.build_rex),
    _info(
        "exponential", "exponential decay to final_ratio * eta_max at the end of the run",
        [_eta_max(),
         ParamInfo("final_ratio", "float", 0.01, "LR ratio reached at step T", low=0.0,
                   high=1.0, low_open=True),
         _WARMUP],
        B.build_exponential, "ExponentialLR(gamma=final_ratio**(1/T))"),
    _info(
        "onecycle", "1cycle policy (Smith & Topin 2017), same values as OneCycleLR",
        [_eta_max(),
         ParamInfo("pct_start", "float", 0.3, "fraction of the run spent rising", low=0.0,
                   high=1.0, low_open=True, high_open=True),
         ParamInfo("div_factor", "float", 25.0, "initial LR = eta_max / div_factor", low=1.0),
         ParamInfo("final_div_factor", "float", 1e4, "final LR = initial / final_div_factor",
                   low=1.0),
         ParamInfo("anneal_strategy", "str", "cos", "annealing shape", choices=("cos", "linear")),
         ParamInfo("three_phase", "bool", False, "fast.ai-style third phase"),
         _WARMUP],
        B.build_onecycle, "OneCycleLR"),
    _info(
        "triangular", "cyclical LR (Smith 2017) between eta_min and eta_max, as CyclicLR",
        [_eta_max(), _eta_min(),
         ParamInfo("step_size_up", "int", None, "rising steps per cycle; null = half the run",
                   low=1, nullable=True),
         ParamInfo("step_size_down", "int", None, "falling steps; null = step_size_up", low=1,
                   nullable=True),
         ParamInfo("mode", "str", "triangular", "amplitude policy",
                   choices=("triangular", "triangular2", "exp_range")),
         ParamInfo("gamma", "float", 1.0, "exp_range factor per step", low=0.0, high=1.0,
                   low_open=True),
         _WARMUP],
        B.build_triangular, "CyclicLR"),
    _info(
        "wsd", "warmup-stable-decay: eta_max, then decay over the last decay_frac of the run",
        [_eta_max(), _eta_min(),
         ParamInfo("decay_frac", "float", 0.2, "fraction of the (post-warmup) run that decays",
                   low=0.0, high=1.0, low_open=True),
         ParamInfo("decay_shape", "str", "linear", "decay shape",
                   choices=("linear", "cosine", "sqrt")),
         _WARMUP],
        B.build_wsd),
    _info(
        "refined",
        "refinement of one run's gradient norms (Defazio et al. 2023): w = Ĝ^-2 (SGD) or "
        "Ĝ^-1 (Adam), eta_t ∝ w_t Σ_{p>t} w_p, peak eta_max, 0 on the last step; constant "
        "norms = linear decay",
        [_eta_max(),
         ParamInfo("norms", "float_list", None,
                   "gradient norm of every update of the run being refined (length "
                   "total_steps; l2 for SGD, l1 for Adam-type); null = constant norms",
                   low=0.0, low_open=True, nullable=True),
         ParamInfo("optimizer", "str", "sgd",
                   "optimizer family of the norms: sgd (w = Ĝ^-2) or adam/adamw (w = Ĝ^-1)",
                   choices=REFINED_OPTIMIZERS),
         ParamInfo("window_frac", "float", DEFAULT_WINDOW_FRAC,
                   "median-filter width as a fraction of the run (odd, >= 1 step)", low=0.0,
                   high=1.0)],
        build_refined),
    _info(
        "piecewise",
        "piecewise-constant LR: eta_max x factors[j] on segment j, segments starting at "
        "boundaries (a stage-wise schedule, e.g. the stage lrs of an AutoLRS run; "
        "MultiStepLR with factors gamma**j)",
        [_eta_max(),
         ParamInfo("boundaries", "int_list", None,
                   "0-based training steps where segments 2..n start, strictly increasing, "
                   "after warmup and before total_steps; null = one segment", low=1,
                   nullable=True),
         ParamInfo("factors", "float_list", None,
                   "multiplier of eta_max for each segment (len(boundaries) + 1 values); "
                   "null = 1.0 for every segment", low=0.0, high=1.0, low_open=True,
                   nullable=True),
         _WARMUP],
        build_piecewise, "MultiStepLR (factors gamma**j) / LambdaLR"),
]

#: name -> :class:`ScheduleInfo` (description, parameters with kinds/defaults/bounds).
SCHEDULES: Mapping[str, ScheduleInfo] = MappingProxyType({e.name: e for e in _ENTRIES})


def schedule_names() -> list[str]:
    """Names accepted by :func:`create_schedule`, in registry order."""
    return list(SCHEDULES)
