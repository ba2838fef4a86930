"""The UBA schedule of Eq. (5), as pure per-step functions.

Paper: "Stepsize anything: a unified learning rate schedule for budgeted-iteration
training" (NeurIPS 2025), Eq. (5). For update ``t`` (1-based) in phase ``k`` (1-based),
``t in [1 + T_k, T_{k+1}]``::

    c   = (2 (t - T_k) - 1) pi / (2 (T_{k+1} - T_k)) + (k - 1) pi
    eta = (eta_max - eta_min) * 2 (1 + cos c) / (2 phi + (2 - phi)(1 + cos c)) + eta_min

A PyTorch scheduler's 0-based step ``i`` is update ``t = i + 1``.

Conventions (see ``shared/design.md``):

* The paper's ``K`` counts the boundaries ``T_1 = 0 < T_2 < ... < T_K = T``; ``K = 2`` is a
  single phase. This module says ``phases = K - 1`` to avoid that ambiguity.
* ``variant="cyclic"`` keeps the literal ``(k - 1) pi`` term: even-numbered phases *rise*
  from ``eta_min`` to ``eta_max``. ``variant="restart"`` drops it: every phase decays.
  :data:`DEFAULT_VARIANT` (``"restart"``) is the default of every function, scheduler and
  spec in phitune, so a tuned schedule rebuilt without naming its variant is the same curve
  the service tuned (the two differ only for ``phases >= 2``).
* ``phi = 0`` is the constant-``eta_max`` limit (the fraction is 2q / 2q = 1); ``phi < 0``
  puts a pole inside the interval and is refused.

Why a closed form per step: the value of step ``i`` is computed from ``i`` alone, so there is
no accumulated multiplicative error and resuming at any step is exact.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_VARIANT", "PAPER_DEFAULT_PHI", "UBA_VARIANTS", "equal_boundaries", "uba_lr", "UBACurve", "uba_array"]

UBA_VARIANTS: tuple[str, ...] = ("cyclic", "restart")
#: The one default variant (registry, ``UBALR``, ``get_uba_schedule``, specs, schemas).
DEFAULT_VARIANT: str = "restart"
#: The paper's default φ per optimizer (§4.1: 5 for SGD, 0.5 for AdamW; Adam as AdamW): the
#: one definition, used by the trial config, the search's first point and the φ suggestions.
PAPER_DEFAULT_PHI: dict[str, float] = {"sgd": 5.0, "adamw": 0.5, "adam": 0.5}

_PI = math.pi


def equal_boundaries(total_steps: int, phases: int) -> list[int]:
    """Return ``[T_1, ..., T_K]`` for ``phases`` near-equal phases over ``total_steps`` updates.

    ``T_k = floor((k - 1) * T / phases)`` in exact integer arithmetic, so ``T_1 = 0`` and
    ``T_K = T``; every phase has at least one update when ``phases <= total_steps``.
    """
    if phases < 1:
        raise ValueError(f"phases={phases} must be >= 1")
    if phases > total_steps:
        raise ValueError(
            f"phases={phases} must be <= total_steps={total_steps} (each phase needs a step)"
        )
    return [(k * total_steps) // phases for k in range(phases + 1)]


def _check_phi(phi: float, where: str = "phi") -> float:
    phi = float(phi)
    if not math.isfinite(phi) or phi < 0.0:
        raise ValueError(
            f"{where}={phi!r} must be a finite number >= 0 (phi < 0 puts a pole in Eq. 5; "
            "phi = 0 is the constant eta_max limit)"
        )
    return phi


def _fraction(q: float, phi: float) -> float:
    """``2q / (2 phi + (2 - phi) q)`` of Eq. (5), with ``q = 1 + cos c`` in ``[0, 2]``.

    It lies in ``[0, 1]`` for ``phi >= 0`` (the denominator is linear in ``q`` and positive at
    both ends); ``phi = 0`` is the limit 1 even where ``q`` rounds to 0.
    """
    if phi == 0.0:
        return 1.0
    v = 2.0 * q / (2.0 * phi + (2.0 - phi) * q)
    return v if v < 1.0 else 1.0


def uba_lr(
    step: int,
    total_steps: int,
    *,
    phi: float,
    eta_max: float,
    eta_min: float = 0.0,
    phases: int = 1,
    variant: str = DEFAULT_VARIANT,
) -> float:
    """Learning rate of 0-based ``step`` under Eq. (5) with ``phases`` equal-length phases.

    ``step`` is 0-based (update ``t = step + 1``); it must lie in ``[0, total_steps)``.
    For per-phase ``phi``/``eta_max``, explicit boundaries or warmup use
    ``create_schedule("uba", ...)``; this function is the plain formula.

    >>> round(uba_lr(0, 100, phi=2.0, eta_max=1.0), 6)  # cosine, half a step later
    0.999938
    """
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} must be >= 1")
    if not 0 <= step < total_steps:
        raise ValueError(f"step={step} must be in [0, total_steps={total_steps})")
    if variant not in UBA_VARIANTS:
        raise ValueError(f"variant={variant!r} must be one of {UBA_VARIANTS}")
    phi = _check_phi(phi)
    if not 0.0 <= eta_min <= eta_max:
        raise ValueError(f"need 0 <= eta_min={eta_min} <= eta_max={eta_max}")
    if not 1 <= phases <= total_steps:
        raise ValueError(f"phases={phases} must be in [1, total_steps={total_steps}]")
    # Phase k (0-based) of equal_boundaries: the largest k with floor(k T / P) <= step.
    k = ((step + 1) * phases - 1) // total_steps
    t_k = (k * total_steps) // phases
    length = ((k + 1) * total_steps) // phases - t_k
    cos_c = math.cos((2 * (step + 1 - t_k) - 1) * _PI / (2 * length))
    if k % 2 == 1 and variant == "cyclic":
        cos_c = -cos_c
    eta = (eta_max - eta_min) * _fraction(1.0 + cos_c, phi) + eta_min
    return min(max(eta, eta_min), eta_max)


class UBACurve:
    """Eq. (5) over explicit boundaries with per-phase ``phi`` and ``eta_max``.

    ``bounds`` is the paper's ``[T_1 = 0, T_2, ..., T_K = T]`` in updates; ``phis`` and
    ``eta_maxs`` have one entry per phase (``K - 1``). ``phase_offset = 1`` is Table 1's
    ``k <- k + 1`` (the cyclic variant then starts with a rising phase, as CLR/OneCycle do);
    it has no effect on the restart variant. Arguments are assumed validated by
    the caller (``create_schedule`` does it); :meth:`lr` is the hot path and stays small.
    """

    __slots__ = ("bounds", "phis", "eta_maxs", "eta_min", "variant", "phase_offset", "_inner",
                 "_single", "_flip")

    def __init__(
        self,
        bounds: Sequence[int],
        phis: Sequence[float],
        eta_maxs: Sequence[float],
        eta_min: float,
        variant: str,
        phase_offset: int = 0,
    ) -> None:
        self.bounds = tuple(int(b) for b in bounds)
        self.phis = tuple(float(p) for p in phis)
        self.eta_maxs = tuple(float(e) for e in eta_maxs)
        self.eta_min = float(eta_min)
        self.variant = variant
        self.phase_offset = int(phase_offset)
        # Phases whose (k - 1 + offset) pi term is an odd multiple of pi flip the cosine.
        self._flip = tuple(
            variant == "cyclic" and (k + self.phase_offset) % 2 == 1 for k in range(len(self.phis))
        )
        # bisect over the interior boundaries T_2..T_{K-1} finds the phase index in O(log K).
        self._inner = self.bounds[1:-1]
        self._single = len(self.phis) == 1

    @property
    def total_steps(self) -> int:
        return self.bounds[-1]

    def lr(self, step: int) -> float:
        """LR of 0-based ``step`` (``0 <= step < T``); update ``t = step + 1`` (Eq. 5)."""
        k = 0 if self._single else bisect_right(self._inner, step)
        t_k = self.bounds[k]
        length = self.bounds[k + 1] - t_k
        s = step + 1 - t_k  # t - T_k, in [1, length]
        cos_c = math.cos((2 * s - 1) * _PI / (2 * length))
        if self._flip[k]:
            # (k-1)pi with 1-based k: cos(x + pi) = -cos(x), exact and free of the
            # rounding of adding a large multiple of pi.
            cos_c = -cos_c
        eta_max = self.eta_maxs[k]
        eta = (eta_max - self.eta_min) * _fraction(1.0 + cos_c, self.phis[k]) + self.eta_min
        # Clamp the last-ulp rounding of eta_min + (eta_max - eta_min) * v.
        if eta > eta_max:
            return eta_max
        return eta if eta > self.eta_min else self.eta_min


def uba_array(
    total_steps: int,
    phi: float | np.ndarray,
    *,
    eta_max: float = 1.0,
    eta_min: float = 0.0,
    phases: int = 1,
    variant: str = DEFAULT_VARIANT,
    boundaries: Sequence[int] | None = None,
    phase_offset: int = 0,
) -> np.ndarray:
    """Eq. (5) for all steps at once, vectorised over ``phi`` (used by the fit).

    ``phi`` may be an array of shape ``(G,)``; the result then has shape ``(G, T)``.
    ``boundaries`` (interior phase starts, replacing equal ``phases``) and ``phase_offset``
    mean what they mean for :class:`UBACurve`. Agrees with it to rounding (numpy's ``cos``).
    """
    if boundaries is not None:
        bounds = np.asarray([0, *boundaries, total_steps])
    else:
        bounds = np.asarray(equal_boundaries(total_steps, phases))
    steps = np.arange(total_steps)
    k = np.searchsorted(bounds[1:-1], steps, side="right")
    length = bounds[k + 1] - bounds[k]
    s = steps + 1 - bounds[k]
    cos_c = np.cos((2 * s - 1) * np.pi / (2 * length))
    if variant == "cyclic":
        cos_c = np.where((k + phase_offset) % 2 == 1, -cos_c, cos_c)
    q = 1.0 + cos_c
    phi_arr = np.atleast_1d(np.asarray(phi, dtype=float))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        v = 2.0 * q / (2.0 * phi_arr + (2.0 - phi_arr) * q)
    v = np.where(phi_arr == 0.0, 1.0, np.minimum(v, 1.0))
    out = np.clip((eta_max - eta_min) * v + eta_min, eta_min, eta_max)
    return out if np.ndim(phi) else out[0]
