"""Per-update gradient norms of finished trials, one row per trial beside ``phitune_trials``.

A separate table, not a trial column: a run of 20 000 steps has 20 000 values (80 kB as
float32), which the trial list, the study summary and the polled study reads never need; only
``GET /v1/studies/{id}/trials/{trial}/grad_norms`` (and a refinement) reads them. Values are
stored as little-endian float32 bytes, the resolution the trial recorded them in
(:mod:`trainables.grad_norms`: one per step up to 20 000 steps, block means of ``stride``
steps beyond).
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from service.store.db import Base, Store, utcnow

__all__ = ["TrialGradNormsRow", "decode_values", "encode_values", "get_grad_norms",
           "save_grad_norms"]


class TrialGradNormsRow(Base):
    __tablename__ = "phitune_trial_grad_norms"

    study_id: Mapped[str] = mapped_column(ForeignKey("phitune_studies.id"), primary_key=True)
    trial_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    norm: Mapped[str] = mapped_column(String(2))
    total_steps: Mapped[int] = mapped_column(Integer)
    stride: Mapped[int] = mapped_column(Integer)
    values: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def encode_values(values: Sequence[float]) -> bytes:
    data = array("f", values)
    if sys.byteorder == "big":
        data.byteswap()
    return data.tobytes()


def decode_values(blob: bytes) -> list[float]:
    data = array("f")
    data.frombytes(blob)
    if sys.byteorder == "big":
        data.byteswap()
    return data.tolist()


def save_grad_norms(store: Store, study_id: str, trial_id: str,
                    norms: Mapping[str, Any]) -> None:
    """Store (or replace) a trial's norms: ``GradNorms.to_dict()`` (norm, total_steps,
    stride, values)."""
    values = [float(v) for v in norms["values"]]
    with store.session() as s:
        row = s.get(TrialGradNormsRow, (study_id, trial_id))
        if row is None:
            row = TrialGradNormsRow(study_id=study_id, trial_id=trial_id)
            s.add(row)
        row.norm = str(norms["norm"])
        row.total_steps = int(norms["total_steps"])
        row.stride = int(norms["stride"])
        row.values = encode_values(values)
        row.updated_at = utcnow()


def get_grad_norms(store: Store, study_id: str, trial_id: str) -> dict[str, Any] | None:
    """``{"trial_id", "norm", "total_steps", "stride", "values"}`` or None when not stored.
    Non-finite values (a gradient that overflowed) read as None: JSON has no NaN."""
    with store.session() as s:
        row = s.get(TrialGradNormsRow, (study_id, trial_id))
        if row is None:
            return None
        values = decode_values(row.values)
        return {"trial_id": row.trial_id, "norm": row.norm, "total_steps": row.total_steps,
                "stride": row.stride,
                "values": [v if math.isfinite(v) else None for v in values]}
