"""Every committed benchmark script runs at a tiny size here, writing into a temp dir, so none
of them can rot (the full sizes run by hand: see bench/README.md)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ray_heads import RUN_MARKER

ROOT = Path(__file__).parents[2]


def run_script(*args: str, timeout: float = 300) -> None:
    """A fresh environment, as a user's shell would give: only the run's marker is kept (so a
    Ray head the script leaves is found and fails the run, ``tests/conftest.py``)."""
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout, env={"PYHESSIAN_DIR": "", "PATH": "/usr/bin:/bin",
                                               "HOME": str(Path.home()),
                                               RUN_MARKER: os.environ[RUN_MARKER]})
    assert out.returncode == 0, out.stderr[-3000:]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_curvature_bench_quick(tmp_path):
    run_script("-m", "bench.curvature_bench", "--quick", "--repeats", "1", "--out",
               str(tmp_path))
    data = rows(tmp_path / "curvature_bench.csv")
    phitune = [r for r in data if r["tool"] == "phitune"]
    assert phitune and all(float(r["lambda_max_max_rel_err"]) < 1e-3 for r in phitune)
    assert (tmp_path / "curvature_bench.md").exists()


def test_schedule_overhead_small(tmp_path):
    run_script("bench/schedule_overhead.py", "--steps", "200", "--repeats", "1", "--out",
               str(tmp_path))
    assert any(tmp_path.glob("schedule_overhead.*"))


def test_load_api_smoke(tmp_path):
    run_script("-m", "bench.load_api", "--smoke", "--out", str(tmp_path))
    assert any(tmp_path.glob("load_api_smoke.*"))


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_load_api_wrk_smoke_lease_rows(tmp_path):
    """The wrk bench's lease rows, a second each, paced (agents with think time, each pace)
    and in closed loop: every call answered as its row says (a new lease, also on the large
    study, a renewed one, the 204 poll, each lease reported once, then idempotently)."""
    run_script("-m", "bench.load_api", "--wrk", "--smoke", "--out", str(tmp_path))
    table = rows(tmp_path / "load_api_wrk_smoke.csv")
    expected = {"claim (201)": "201", "heartbeat": "200", "claim (204 poll)": "204",
                "result (first)": "200", "result (repeat)": "200",
                "claim (201), large study": "201"}
    paces = {float(r["think_ms"]) for r in table}
    assert paces == {0.0, 100.0, 1000.0}, paces
    for think in paces:
        data = {r["scenario"]: r for r in table if float(r["think_ms"]) == think}
        assert data["/healthz"]["non_2xx"] == "0", data["/healthz"]
        for name, code in expected.items():
            row = data[name]
            assert row["loop"] == ("paced" if think else "closed"), row
            assert int(row["requests"]) > 0 and float(row["p99_ms"]) > 0, row
            assert row["statuses"].split(":")[0] == code and " " not in row["statuses"], row
        # each lease reports once; the run stops at the end of its list (the requests then
        # in flight, at most one per connection, are the only repeats)
        first = data["result (first)"]
        assert int(first["repeats"]) <= 5 and int(first["items"]) >= 10, first
        # the large study holds its finished trials besides the offered ones
        small, large = data["claim (201)"], data["claim (201), large study"]
        assert int(large["study_trials"]) >= 2000 + int(large["study_offered"]), large
        assert int(small["study_trials"]) == int(small["study_offered"]), small
    assert {"/healthz", "GET study", "GET list(20)"} <= {r["scenario"] for r in table}
    md = (tmp_path / "load_api_wrk_smoke.md").read_text()
    assert "## The lease calls, 5 agents, 100 ms think time" in md
    assert "## Saturation: the same calls in closed loop" in md
    assert "at most **50 calls a second**" in md and "the lease goal (p99 ≤ 50 ms" in md
    assert "## A claim's cost and the study's size" in md


@pytest.mark.e2e
def test_service_overhead_smoke(tmp_path):
    run_script("bench/service_overhead.py", "--smoke", "--out", str(tmp_path), timeout=600)
    (row,) = rows(tmp_path / "service_overhead_smoke.csv")
    assert 0 < float(row["post_s"]) <= float(row["first_trial_s"]) <= float(row["done_s"])
