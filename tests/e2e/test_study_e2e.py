"""End to end, as a user runs it: a real uvicorn server, a real driver process, a real local Ray,
Optuna + the horizon ladder, real training on scikit-learn's digits; driven through the client
and the CLI."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.cli.demo import _stop, start_api
from service.client import Conflict, PhiTuneClient, Validation

pytestmark = pytest.mark.e2e

PHI_RANGE = (0.2, 40.0)
SPEC = {
    "name": "e2e digits",
    "model": "mlp",
    "dataset": "digits",
    "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9},
    "batch_size": 64,
    "budget": {"steps": 120},
    "search": {"phi": {"min": PHI_RANGE[0], "max": PHI_RANGE[1]}, "phases": {"min": 1, "max": 2}},
    "num_trials": 4,
    "max_concurrent_trials": 2,
    "eval_every": 30,
    "seed": 1,
}


def eq5(t: int, T: int, phi: float, eta_max: float, eta_min: float, phases: int) -> float:
    """Eq. (5) of the paper written out independently, restart variant (each phase decays):
    update t (1-based) inside phase k of equal length, c restarted at every phase."""
    bounds = [round(i * T / phases) for i in range(phases + 1)]
    k = next(i for i in range(phases) if bounds[i] < t <= bounds[i + 1])
    lo, hi = bounds[k], bounds[k + 1]
    c = (2 * (t - lo) - 1) * math.pi / (2 * (hi - lo))
    g = 1 + math.cos(c)
    return (eta_max - eta_min) * 2 * g / (2 * phi + (2 - phi) * g) + eta_min


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("phitune")
    env = {"PHITUNE_RAY_NUM_CPUS": "2", "PHITUNE_RAY_DASHBOARD": "false",
           "PHITUNE_DATASET_DIR": os.environ.get("PHITUNE_DATASET_DIR", str(data_dir / "data"))}
    proc, url = start_api(data_dir, None, data_dir / "api.log", extra_env=env)
    yield url, data_dir
    _stop(proc)
    log = data_dir / "api.log"
    if log.exists():
        print(log.read_text()[-4000:])


def driver_log(data_dir: Path, study_id: str) -> str:
    path = data_dir / "logs" / f"{study_id}.log"
    return path.read_text()[-6000:] if path.exists() else "(no driver log)"


def test_study_end_to_end(server):
    url, data_dir = server
    with PhiTuneClient(url) as client:
        study = client.submit(SPEC, idempotency_key="e2e-digits")
        assert study.status in ("queued", "running")
        again = client.submit(SPEC, idempotency_key="e2e-digits")
        assert again.id == study.id, "same Idempotency-Key must return the same study"

        final = client.wait(study.id, timeout=480, poll=1.0)
        assert final.status == "succeeded", (final.error, driver_log(data_dir, study.id))
        best = client.best(study.id)
        trials = client.trials(study.id).data

    assert len(trials) >= 4
    assert PHI_RANGE[0] <= best.phi <= PHI_RANGE[1]
    assert 1 <= best.phases <= 2
    # the best is the best of the trials that trained the whole budget
    full = [t for t in trials if t.step >= 120 and "val_accuracy" in t.metrics]
    assert full, trials
    assert best.value == pytest.approx(max(t.metrics["val_accuracy"] for t in full))
    assert best.value > 0.5, "an MLP on digits learns far beyond chance (0.1) in 120 steps"
    # its LR curve is Eq. (5) for the tuned φ
    assert len(best.lr_curve) == 120
    for t in (1, 2, 60, 61, 119, 120):
        want = eq5(t, 120, best.phi, best.eta_max, best.eta_min, best.phases)
        assert best.lr_curve[t - 1] == pytest.approx(want, rel=1e-9, abs=1e-12), t
    # progress: the best finished run at the longest horizon, not a mix of rungs
    assert final.progress.best_value_steps == 120
    assert final.progress.best_value == pytest.approx(
        max(t.metrics["val_accuracy"] for t in full if t.status == "terminated"))


def test_recommendation_learns_from_the_finished_study(server):
    url, _ = server
    with PhiTuneClient(url) as client:
        (study,) = client.list(status="succeeded").data
        best = client.best(study.id)
        rec = client.recommend_phi("mlp", "digits", "sgd", budget=120)
        assert rec.source == "history" and rec.history_studies == 1
        assert rec.phi == pytest.approx(best.phi, rel=1e-6)
        assert study.id in str(rec.suggestions[0])
        assert {s["source"] for s in rec.suggestions} >= {"history", "paper_default"}
        # SGD history is no evidence for AdamW: a history-free source leads
        adamw = client.recommend_phi("mlp", "digits", "adamw")
        assert adamw.source in ("calibrated", "paper_default")
        assert "history" not in {s["source"] for s in adamw.suggestions}
        with pytest.raises(Validation) as err:
            client.recommend_phi("mlp", "digits", "lion")
        assert err.value.status_code == 422 and "optimizer" in str(err.value)


def test_cli_reads_the_finished_study(server, tmp_path):
    url, _ = server
    with PhiTuneClient(url) as client:
        study = client.list(status="succeeded").data[0]
    cli = [sys.executable, "-m", "service.cli", "--url", url]
    out = subprocess.run([*cli, "best", study.id], capture_output=True, text=True, check=True)
    assert "φ=" in out.stdout and "val_accuracy" in out.stdout
    out = subprocess.run([*cli, "status", study.id], capture_output=True, text=True, check=True)
    assert "succeeded" in out.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "search": {"phi": {"min": -1, "max": 3}}}))
    out = subprocess.run([*cli, "submit", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "search.phi.min" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([*cli, "submit", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "cannot read spec" in out.stderr


def test_study_whose_trials_all_fail_ends_failed_with_reason(server):
    url, data_dir = server
    # a bad model_kwargs is a 422 at submit now; η_max in [1e3, 1e4] passes validation and
    # every trial diverges (NaN within a few steps)
    spec = {**SPEC, "name": "e2e failing", "num_trials": 2,
            "search": {"phi": {"min": 0.2, "max": 0.3}, "phases": {"min": 1, "max": 1},
                       "eta_max": {"min": 1e3, "max": 1e4}}}
    with PhiTuneClient(url) as client:
        study = client.submit(spec)
        final = client.wait(study.id, timeout=300, poll=1.0)
        assert final.status == "failed", driver_log(data_dir, study.id)
        assert "no trial finished" in (final.error or "")
        assert "diverged" in (final.error or ""), final.error
        with pytest.raises(Conflict) as err:
            client.best(study.id)
        assert err.value.status_code == 409


def test_budget_study_with_baselines_through_the_api(server):
    url, data_dir = server
    spec = {**SPEC, "name": "e2e budgets", "budget": {"steps": 60, "fractions": [0.5, 1.0]},
            "num_trials": 2, "eval_every": 15, "compare": ["cosine"], "seeds": 1,
            "target": 0.5}
    with PhiTuneClient(url) as client:
        study = client.submit(spec)
        final = client.wait(study.id, timeout=480, poll=1.0)
        assert final.status == "succeeded", (final.error, driver_log(data_dir, study.id))
        budgets = client.budgets(study.id)
        png = client.plot(study.id, "budgets")
        phi_png = client.plot(study.id, "phi")
        trials = client.trials(study.id).data
    assert [row.budget_steps for row in budgets.curve] == [30, 60]
    assert {b.schedule for b in budgets.baselines} == {"uba", "cosine"}
    assert all(row.best_baseline == "cosine" for row in budgets.curve)
    assert budgets.target is not None and budgets.target.kind in (
        "measured", "interpolated", "not_reached")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and phi_png[:8] == b"\x89PNG\r\n\x1a\n"
    assert {t.params["kind"] for t in trials} == {"search", "compare"}


def test_curvature_job_runs_on_ray_and_returns_report_suggestions_and_density(server):
    url, data_dir = server
    with PhiTuneClient(url) as client:
        job = client.curvature({"model": "mlp", "dataset": "digits", "num_batches": 2,
                                "batch_size": 64, "lanczos_steps": 12, "num_probes": 2,
                                "at_steps": [0, 20, 40], "train_steps": 40, "phases": 2,
                                "lr": 0.2, "train_batch_size": 64},
                               timeout=300)
        assert job.status == "succeeded", (job.error, (data_dir / "logs").glob("curv*"))
        report = job.report
        assert report["lambda_max"] > 0 and report["trace"] is not None
        definitions = {k["definition"] for k in report["kappas"]}
        assert definitions, report
        sources = {s["source"] for s in job.suggestions}
        assert {"theory", "paper_default"} <= sources
        theory = next(s for s in job.suggestions if s["source"] == "theory")
        assert "quadratic" in theory["valid_for"] or "Prop" in theory["rationale"]
        # measured along a real 2-phase run: start, phase boundary, end; per-phase φ
        assert [(p["step"], p["phase"]) for p in job.timeline] == [(0, 1), (20, 2), (40, 2)]
        for point in job.timeline:
            assert point["report"]["lambda_max"] > 0
            assert "theory" in {s["source"] for s in point["suggestions"]}
        png = client._http.get(f"/v1/curvature/{job.id}/density.png")
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
        with pytest.raises(Validation) as err:
            client.curvature({"model": "nope", "dataset": "digits"})
        assert err.value.status_code == 422 and "model" in str(err.value)
        with pytest.raises(Validation) as err:
            client.curvature({"model": "mlp", "dataset": "digits", "num_probes": 0})
        assert err.value.status_code == 422 and "num_probes" in str(err.value)
        with pytest.raises(Validation) as err:
            client.curvature({"model": "mlp", "dataset": "digits", "at_steps": [10]})
        assert err.value.status_code == 422 and "train_steps" in str(err.value)
        assert client._http.get("/v1/curvature/unknown-id").status_code == 404


def _run_signature(client: PhiTuneClient, study_id: str) -> tuple:
    """Everything a study decided, without ids or timings: every run (horizon, kind, params,
    steps, value), the best and its seeds, the rungs and the compute."""
    trials = client.trials(study_id).data
    runs = sorted((t.budget_steps, t.params["kind"], round(t.params["phi"], 12),
                   t.params["phases"], t.params.get("seed"), t.status, t.step,
                   t.metrics.get("val_accuracy")) for t in trials)
    best = client.best(study_id)
    result = client.result(study_id)
    return (runs, (best.phi, best.phases, best.value, best.value_std, tuple(best.seeds)),
            [r.model_dump() for r in result.rungs], result.compute.model_dump())


def test_the_same_spec_and_seed_give_the_same_study(server):
    """Determinism: ladder rungs asked before told, seeded sampler, shared search seed and
    derived finalist seeds. Two runs of one spec (the second while nothing else runs, the
    first with two trials at a time) must agree on every trial, value and the best."""
    url, data_dir = server
    spec = {**SPEC, "name": "e2e determinism", "budget": {"steps": 90}, "eval_every": 15,
            "num_trials": 4, "finalists": 1, "finalist_seeds": 1, "seed": 3}
    with PhiTuneClient(url) as client:
        first = client.submit(spec)
        done = client.wait(first.id, timeout=480, poll=1.0)
        assert done.status == "succeeded", (done.error, driver_log(data_dir, first.id))
        second = client.submit({**spec, "max_concurrent_trials": 1})
        done = client.wait(second.id, timeout=480, poll=1.0)
        assert done.status == "succeeded", (done.error, driver_log(data_dir, second.id))
        a, b = _run_signature(client, first.id), _run_signature(client, second.id)
    runs, best, rungs, compute = a
    assert [(r["steps"], r["num_trials"]) for r in rungs] == [(30, 4), (90, 1)]
    assert len(runs) == 4 + 1 + 1 and best[4] and len(best[4]) == 2
    assert compute["units"] == pytest.approx((4 * 30 + 2 * 90) / 90)
    assert a == b
