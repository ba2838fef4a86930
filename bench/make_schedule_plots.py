"""Generate the README's schedule plots into docs/img/ (``python bench/make_schedule_plots.py``).

uba_phi.png: UBA for the paper's phi grid; uba_vs_baselines.png: UBA phi=2 / 5 / 30 / 0.8
against the baselines Table 1 relates them to; uba_multiphase.png: cyclic, restart,
per-phase phi and the Table 1 step schedule.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tuning.schedules import create_schedule
from tuning.schedules.plot import plot_schedules

log = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    T = args.steps
    args.out.mkdir(parents=True, exist_ok=True)

    phis = [0.25, 0.5, 1.0, 2.5, 5.0, 10.0]  # the paper's ablation grid
    png = plot_schedules([create_schedule("uba", T, phi=p) for p in phis],
                         title="UBA (Eq. 5) for the paper's φ grid")
    (args.out / "uba_phi.png").write_bytes(png)

    pairs = [
        ("uba", {"phi": 2.0}), ("cosine", {}),
        ("uba", {"phi": 30.0}), ("exponential", {"final_ratio": 0.01}),
        ("uba", {"phi": 0.8}), ("rex", {}),
        ("step", {}), ("uba", {"phi": 5.0}),
    ]
    scheds = [create_schedule(n, T, **kw) for n, kw in pairs]
    png = plot_schedules(scheds, title="UBA and the baselines of Table 1",
                         linestyles=["-" if s.name == "uba" else "--" for s in scheds])
    (args.out / "uba_vs_baselines.png").write_bytes(png)

    multi = [
        create_schedule("uba", T, phi=5.0, phases=3, variant="cyclic"),
        create_schedule("uba", T, phi=5.0, phases=3, variant="restart"),
        create_schedule("uba", T, phi=[1.0, 10.0], boundaries=[T // 2], variant="restart"),
        create_schedule("uba", T, phi=[0.0, 0.0, 0.0], boundaries=[T // 2, 3 * T // 4],
                        eta_max=[1.0, 0.5, 0.25]),
    ]
    labels = ["3 phases, cyclic (paper's (k-1)π)", "3 phases, restart",
              "per-phase φ = 1, 10 (restart)", "φ=0, η_max=0.5^k: step schedule"]
    png = plot_schedules(multi, labels=labels, title="Multi-phase UBA")
    (args.out / "uba_multiphase.png").write_bytes(png)
    log.info("wrote %s", sorted(p.name for p in args.out.glob("uba_*.png")))


if __name__ == "__main__":
    main()
