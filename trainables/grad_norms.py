"""Per-step gradient norms of a trial: the signal refinement (Defazio et al. 2023) needs.

Every run of :func:`trainables.loop.run_training` records the norm of the full gradient of
every update, in the norm its optimizer's analysis uses: ℓ2 for SGD (with momentum, and
schedule-free SGD), ℓ1 for the Adam type (AdamW, schedule-free AdamW). The final report
carries them under :data:`GRAD_NORMS` as :meth:`GradNorms.to_dict`, which is what the study
stores with the trial and the API serves (``GET /v1/studies/{id}/trials/{trial}/grad_norms``).

Why it is cheap: per step one ``torch._foreach_norm`` over the gradients (one fused kernel
per dtype/device on CUDA) whose per-tensor results stay on the device; they are reduced
(ℓ2: the norm of the per-tensor norms; ℓ1: their sum) and copied to the host only when the
loop reads its loss buffer anyway (every 16 steps and at each report), so no step waits on a
host sync (bench/grad_norm_overhead.py measures the cost).

Resolution: one value per step up to :data:`MAX_FULL_RESOLUTION` steps (20 000, 80 kB as
float32), which refinement uses as is. Longer runs keep the mean of each block of ``stride =
ceil(T / 20000)`` consecutive steps; :meth:`GradNorms.per_step` repeats each block mean over
its steps. Refinement smooths with a median filter 10 % of the run wide (≥ 2000 steps there),
so block means of ≤ 0.05 % of the run change it very little. Values are stored as float32.

Resume: the norms recorded so far are part of the checkpoint (:meth:`GradNormRecorder.
state_dict`), so a restored trial reports the same sequence as an uninterrupted one. A run
resumed from a checkpoint made before norms were recorded reports none (a partial sequence
would not refine the run it came from).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = ["GRAD_NORMS", "MAX_FULL_RESOLUTION", "GradNormRecorder", "GradNorms", "NormType",
           "norm_type"]

#: Key of the final report (and of ``Outcome.metrics``) holding :meth:`GradNorms.to_dict`.
GRAD_NORMS = "grad_norms"
#: Longest run recorded at one value per step; longer runs keep block means (module doc).
MAX_FULL_RESOLUTION = 20_000

NormType = Literal["l1", "l2"]
_NORM_TYPES: tuple[str, ...] = ("l1", "l2")
#: The ``optimizer`` family of ``create_schedule("refined", ...)`` for each norm.
_REFINE_FAMILY = {"l2": "sgd", "l1": "adam"}


def norm_type(optimizer: str) -> NormType:
    """The norm refinement uses for ``optimizer``: ``l1`` for the Adam type, ``l2`` for SGD."""
    if optimizer in ("adamw", "adamw_schedulefree", "adam"):
        return "l1"
    if optimizer in ("sgd", "sgd_schedulefree"):
        return "l2"
    raise ValueError(f"optimizer={optimizer!r}: no gradient norm defined; allowed: 'sgd', "
                     "'adamw', 'sgd_schedulefree', 'adamw_schedulefree'")


def stride_for(total_steps: int) -> int:
    """Steps per stored value: 1 up to :data:`MAX_FULL_RESOLUTION` steps, else the block."""
    return max(1, math.ceil(total_steps / MAX_FULL_RESOLUTION))


@dataclass(frozen=True)
class GradNorms:
    """The gradient norms of one run: ``values[j]`` is the mean norm of updates
    ``j·stride .. (j+1)·stride - 1`` (0-based; ``stride = 1``: one value per update)."""

    norm: NormType
    total_steps: int
    stride: int
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.norm not in _NORM_TYPES:
            raise ValueError(f"norm={self.norm!r} is invalid; allowed: 'l1' or 'l2'")
        if self.total_steps < 1 or self.stride < 1:
            raise ValueError(f"total_steps={self.total_steps}, stride={self.stride}: both "
                             "must be >= 1")
        want = math.ceil(self.total_steps / self.stride)
        if len(self.values) != want:
            raise ValueError(f"values: {len(self.values)} given, {want} expected for "
                             f"total_steps={self.total_steps} at stride {self.stride}")

    def per_step(self) -> tuple[float, ...]:
        """One value per update (``total_steps`` of them): block means repeated."""
        if self.stride == 1:
            return self.values
        out = [v for v in self.values for _ in range(self.stride)]
        return tuple(out[: self.total_steps])

    def schedule_params(self) -> dict[str, Any]:
        """``norms`` and ``optimizer`` of ``create_schedule("refined", total_steps, ...)``:
        the refinement of this run (add ``eta_max``)."""
        return {"norms": list(self.per_step()), "optimizer": _REFINE_FAMILY[self.norm]}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``{"norm", "total_steps", "stride", "values"}``."""
        return {"norm": self.norm, "total_steps": self.total_steps, "stride": self.stride,
                "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GradNorms:
        return cls(data["norm"], int(data["total_steps"]), int(data["stride"]),
                   tuple(float(v) for v in data["values"]))

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any] | None) -> GradNorms | None:
        """The norms in a trial's final report, or None when it has none."""
        data = (metrics or {}).get(GRAD_NORMS)
        return cls.from_dict(data) if isinstance(data, Mapping) else None


class GradNormRecorder:
    """Records the gradient norm of every update of one run (see the module docstring).

    Call :meth:`record` after ``loss.backward()`` (before the optimizer step; grads are
    unchanged by it either way), :meth:`flush` when the loop reads its other per-step values.
    """

    def __init__(self, params: Sequence[torch.Tensor], norm: NormType, total_steps: int,
                 start_step: int = 0) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.norm = norm
        self.ord = 2.0 if norm == "l2" else 1.0
        self.total_steps = total_steps
        self.stride = stride_for(total_steps)
        self.sums = [0.0] * math.ceil(total_steps / self.stride)
        self.recorded = start_step  # steps 1..recorded are in sums
        #: False when steps before ``recorded`` were never measured (old checkpoint)
        self.complete = start_step == 0
        self._pending: list[list[torch.Tensor]] = []

    def record(self) -> None:
        """Queue the per-tensor norms of the current gradients (no host sync)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        self._pending.append(list(torch._foreach_norm(grads, self.ord)) if grads else [])

    def _reduce(self, rows: list[list[torch.Tensor]]) -> list[float]:
        n = len(rows[0])
        if n and all(len(r) == n for r in rows):
            flat = torch.stack([t for r in rows for t in r]).view(len(rows), n).double()
            total = (torch.linalg.vector_norm(flat, 2, dim=1) if self.norm == "l2"
                     else flat.sum(dim=1))
            return total.tolist()  # the one host sync
        out = []
        for r in rows:  # grads appeared or vanished between steps: reduce each row alone
            if not r:
                out.append(0.0)
                continue
            t = torch.stack(r).double()
            out.append(float(torch.linalg.vector_norm(t, 2) if self.norm == "l2" else t.sum()))
        return out

    def flush(self) -> None:
        """Move the queued norms to the host (one transfer)."""
        if not self._pending:
            return
        values = self._reduce(self._pending)
        self._pending.clear()
        for v in values:
            self.sums[self.recorded // self.stride] += v
            self.recorded += 1

    def result(self) -> GradNorms | None:
        """The norms of steps 1..T once all are recorded (None if incomplete)."""
        self.flush()
        if not self.complete or self.recorded != self.total_steps:
            return None
        T, s = self.total_steps, self.stride
        means = [total / (min((j + 1) * s, T) - j * s) for j, total in enumerate(self.sums)]
        as_f32 = torch.tensor(means, dtype=torch.float32).tolist()
        return GradNorms(self.norm, T, s, tuple(as_f32))

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers (a checkpoint loads with ``weights_only=True``)."""
        self.flush()
        return {"norm": self.norm, "stride": self.stride, "recorded": self.recorded,
                "complete": self.complete,
                "sums": torch.tensor(self.sums, dtype=torch.float64)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["norm"] != self.norm or int(state["stride"]) != self.stride:
            raise ValueError(f"checkpoint norms ({state['norm']}, stride {state['stride']}) "
                             f"do not match this run ({self.norm}, stride {self.stride})")
        self.sums = [float(v) for v in state["sums"].tolist()]
        self.recorded = int(state["recorded"])
        self.complete = bool(state["complete"])
        self._pending.clear()
