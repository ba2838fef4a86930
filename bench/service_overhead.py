"""Service + driver overhead: time from ``POST /v1/studies`` to the first trial running.

Starts a real Ray head and the real API server (as ``phitune demo`` does), submits small studies
one after another through the client, and polls the trials endpoint every 50 ms. Phases:
POST returned (202) → study ``running`` (driver connected to Ray) → first trial reported
``running`` (Tune started it) → study ``succeeded``. Writes CSV + PNG + markdown under
``bench/results/``.

    python bench/service_overhead.py            # 5 studies
    python bench/service_overhead.py --smoke    # 1 study, used by the test suite
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import provenance, provenance_md, sidecar_path  # noqa: E402
from service.cli.demo import _stop, start_api, start_ray_head  # noqa: E402
from service.client import PhiTuneClient  # noqa: E402

SPEC = {"model": "mlp", "dataset": "digits", "budget": {"steps": 40}, "num_trials": 2,
        "max_concurrent_trials": 2, "eval_every": 20, "batch_size": 64}


def measure_one(client: PhiTuneClient, i: int) -> dict[str, float]:
    t0 = time.perf_counter()
    study = client.submit({**SPEC, "name": f"overhead {i}", "seed": i})
    t_post = time.perf_counter() - t0
    t_running = t_trial = None
    while True:
        now = time.perf_counter() - t0
        s = client.get(study.id)
        if t_running is None and s.status in ("running", "succeeded"):
            t_running = now
        if t_trial is None and client.trials(study.id).count > 0:
            t_trial = now
        if s.status in ("succeeded", "failed", "cancelled"):
            if s.status != "succeeded":
                raise RuntimeError(f"study {study.id} {s.status}: {s.error}")
            return {"post_s": t_post, "driver_running_s": t_running or now,
                    "first_trial_s": t_trial or now, "done_s": now}
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    n = 1 if args.smoke else args.studies
    prov = provenance(command="python bench/service_overhead.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), seeds=f"study seeds 0..{n - 1}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        ray_proc, address, _ = start_ray_head(data_dir / "ray.log", num_cpus=2)
        try:
            api_proc, url = start_api(data_dir, address, data_dir / "api.log")
            try:
                with PhiTuneClient(url) as client:
                    for i in range(n):
                        rows.append({"study": i, **measure_one(client, i)})
                        print(rows[-1], flush=True)
            finally:
                _stop(api_proc)
        finally:
            _stop(ray_proc)
    name = "service_overhead_smoke" if args.smoke else "service_overhead"
    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    keys = ["post_s", "driver_running_s", "first_trial_s", "done_s"]
    med = {k: statistics.median(r[k] for r in rows) for k in keys}
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    for r in rows:
        ax.plot([r[k] for k in keys], range(len(keys)), "o-", alpha=0.6)
    ax.set_yticks(range(len(keys)), ["202 returned", "driver on Ray", "first trial", "done"])
    ax.set_xlabel("seconds since POST")
    ax.set_title("POST → first trial (local Ray head, 2 CPUs)")
    ax.grid(alpha=0.3)
    FigureCanvasAgg(fig)
    fig.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
    lo = {k: min(r[k] for r in rows) for k in keys}
    (out / f"{name}.md").write_text(
        f"# Service + driver overhead\n\n{provenance_md(prov)}\n"
        f"{n} studies of {SPEC['num_trials']} "
        f"trials × {SPEC['budget']['steps']} steps (mlp on digits), submitted one after another "
        "to a local Ray head (already running) through the real API server.\n\n"
        "| phase | min s | median s |\n|---|---|---|\n"
        + "".join(f"| {k} | {lo[k]:.2f} | {med[k]:.2f} |\n" for k in keys)
        + "\n`driver_running_s` = the first poll that reads the study as `running` (when the "
        "service sets that status is the service's choice: if it equals `post_s`, the status "
        "is set at launch, before the driver has imported torch/Ray); `first_trial_s` = the "
        "first poll that lists a trial, i.e. after the driver started, connected to Ray and "
        "Tune started a trial actor.\n")
    sidecar_path(out / f"{name}.md").write_text(json.dumps(prov, indent=2) + "\n")
    print(f"median: {med}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
