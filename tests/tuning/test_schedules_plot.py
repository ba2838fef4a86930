"""PNG plots: valid images, one curve per schedule, no pyplot global state."""

from __future__ import annotations

import io
import sys

import pytest

from tuning.schedules import create_schedule
from tuning.schedules.plot import default_label, plot_schedules


def test_plot_returns_png_without_pyplot_figures() -> None:
    figs_before = sys.modules["matplotlib.pyplot"].get_fignums() \
        if "matplotlib.pyplot" in sys.modules else []
    png = plot_schedules([create_schedule("uba", 200, phi=p) for p in (0.5, 5.0)],
                         title="t", log_y=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == figs_before
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(png), format="png")
    assert img.shape[0] == 440 and img.shape[1] == 770  # 4 x 7 inches at 110 dpi


def test_labels_and_errors() -> None:
    s = create_schedule("uba", 50, phi=5.0, phases=2, eta_max=0.1)
    assert default_label(s) == "uba φ=5 phases=2 η_max=0.1"
    assert default_label(create_schedule("cosine", 10)) == "cosine"
    with pytest.raises(ValueError):
        plot_schedules([])
    with pytest.raises(ValueError, match="labels"):
        plot_schedules([s], labels=["a", "b"])
