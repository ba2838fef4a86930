"""PNG figures of a study: metric vs budget (tuned UBA against the best baseline) and the φ
response (final metric of every search trial against its φ, one series per budget).

Matplotlib's object API on an Agg canvas: no pyplot global state, safe in a server thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_budget_curve(curve: Sequence[dict[str, Any]], baselines: Sequence[dict[str, Any]],
                      metric: str, target: dict[str, Any] | None = None) -> bytes:
    """Metric vs budget (log steps): tuned UBA (mean ± std over seeds when compared) and every
    compared baseline; the target and its (measured or interpolated) budget when given."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    steps = [r["budget_steps"] for r in curve]
    uba = [r["uba_mean"] for r in curve]
    err = [r["uba_std"] or 0.0 for r in curve]
    ax.errorbar(steps, uba, yerr=err, marker="o", lw=2, capsize=3, label="UBA (tuned φ)")
    for name in sorted({b["schedule"] for b in baselines if b["schedule"] != "uba"}):
        rows = sorted((b for b in baselines if b["schedule"] == name and b["mean"] is not None),
                      key=lambda b: b["budget_steps"])
        if rows:
            ax.errorbar([b["budget_steps"] for b in rows], [b["mean"] for b in rows],
                        yerr=[b["std"] or 0.0 for b in rows], marker=".", lw=1, capsize=2,
                        alpha=0.8, label=name)
    if target is not None:
        ax.axhline(target["target"], color="grey", ls=":", lw=1, label=f"target {target['target']}")
        if target.get("steps"):
            ax.axvline(target["steps"], color="grey", ls="--", lw=1,
                       label=f"{target['kind']}: {target['steps']} steps")
    ax.set_xscale("log")
    ax.set_xlabel("budget (optimizer steps, each trained from scratch)")
    ax.set_ylabel(metric)
    ax.set_title("metric vs budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_phi_response(points: Sequence[tuple[int, float, float]], metric: str) -> bytes:
    """``points`` = (budget_steps, φ, final metric) of search trials that trained the whole
    budget; φ on a log axis, one colour per budget."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for budget in sorted({p[0] for p in points}):
        pts = sorted((phi, v) for b, phi, v in points if b == budget)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=5, lw=1,
                label=f"{budget} steps")
    ax.set_xscale("log")
    ax.set_xlabel("φ")
    ax.set_ylabel(metric)
    ax.set_title("φ response (search trials that ran the whole budget)")
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=8)
    return _png(fig)
