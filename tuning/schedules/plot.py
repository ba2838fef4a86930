"""PNG plots of schedules (matplotlib's Agg canvas, no pyplot global state).

Used by the README images (``bench/make_schedule_plots.py``), the CLI and
``GET /v1/schedules/plot``. A ``Figure`` is created per call and dropped afterwards, so
concurrent requests in a server never share figure state.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from ._registry import SCHEDULES
from ._schedule import Schedule

__all__ = ["default_label", "plot_schedules"]

_SHORT = {"phi": "φ", "eta_max": "η_max", "eta_min": "η_min"}


def default_label(schedule: Schedule) -> str:
    """``name`` plus the parameters that differ from the registry defaults (``uba φ=5``)."""
    info = SCHEDULES[schedule.name]
    parts = []
    for key, value in schedule.params.items():
        default = info.params[key].default
        if key == "phases" and value == 1:
            continue
        if value != default or key == "phi":
            shown = list(value) if isinstance(value, tuple) else value
            parts.append(f"{_SHORT.get(key, key)}={shown:g}" if isinstance(shown, float)
                         else f"{_SHORT.get(key, key)}={shown}")
    return " ".join([schedule.name, *parts])


def plot_schedules(
    schedules: Sequence[Schedule],
    labels: Sequence[str] | None = None,
    title: str | None = None,
    *,
    width: float = 7.0,
    height: float = 4.0,
    dpi: int = 110,
    log_y: bool = False,
    linestyles: Sequence[str] | None = None,
) -> bytes:
    """Plot LR against step for each schedule and return the PNG bytes.

    ``labels`` defaults to :func:`default_label`; ``log_y`` helps compare fast decays;
    ``linestyles`` (matplotlib styles such as ``"-"``, ``"--"``) tells overlaid curves apart.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not schedules:
        raise ValueError("plot_schedules needs at least one schedule")
    for what, seq in (("labels", labels), ("linestyles", linestyles)):
        if seq is not None and len(seq) != len(schedules):
            raise ValueError(f"{len(seq)} {what} for {len(schedules)} schedules")
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, s in enumerate(schedules):
        label = labels[i] if labels is not None else default_label(s)
        style = linestyles[i] if linestyles is not None else "-"
        ax.plot(range(s.total_steps), s.values(), style, label=label, linewidth=1.6)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate" + (" (relative)" if all(s.relative for s in schedules)
                                     else ""))
    if log_y:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
