"""Library mode (:func:`tuning.library.tune_schedule`): a user's own PyTorch loop, which
imports nothing of phitune's trainables, tuned on a real local Ray with real training on
scikit-learn's digits (a logistic regression, ``examples/library_digits.py``'s shape).

What is checked: a StudyResult with a best schedule and trial counts that match the trials
Ray ran; the same seed gives the same candidates; a rerun with the same name restores the
finished rungs instead of training again; a trial Ray restarts resumes from its checkpoint on
the same schedule; bad arguments are ValueErrors naming the argument; a function that never
reports the metric fails its trials with a message saying what to report.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
import torch.nn.functional as F

from trainables.function_trial import Trial, TrialReportError
from tuning.executor import RestoredRunMismatchError, candidate_config, run_candidates
from tuning.ladder import Candidate
from tuning.library import build_spec, tune_schedule, user_trainable
from tuning.results import RecordingSink
from tuning.schedules import create_schedule
from tuning.study import StudyFailedError

pytestmark = pytest.mark.slow  # real Ray and ~10 small studies (~2-3 min on 2 CPUs)

T = 30
SMALL = dict(budget_steps=T, optimizer_lr=0.1, budget_fractions=(0.5, 1.0), num_trials=4,
             seed=0, resources={"cpu": 1})


def load_digits() -> dict[str, torch.Tensor]:
    """scikit-learn's digits from its csv.gz (the user's own loader, not phitune's)."""
    spec = importlib.util.find_spec("sklearn")
    assert spec is not None and spec.submodule_search_locations
    arr = np.loadtxt(Path(list(spec.submodule_search_locations)[0])
                     / "datasets/data/digits.csv.gz", delimiter=",")
    x = torch.tensor(arr[:, :-1] / 16.0, dtype=torch.float32)
    y = torch.tensor(arr[:, -1], dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    va, tr = perm[:360], perm[360:]
    return {"x_train": x[tr], "y_train": y[tr], "x_val": x[va], "y_val": y[va]}


def logreg(trial, data, calls: str | None = None, crash_at: int | None = None) -> None:
    """The user's loop: SGD along ``trial.scheduler``, a checkpointed report every 10 steps.
    ``calls``: a directory where every start leaves a file (counts trainings); ``crash_at``:
    the first start dies after that step (a lost worker), the restart resumes."""
    torch.set_num_threads(1)
    torch.manual_seed(trial.seed)
    model = torch.nn.Linear(64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=trial.lr, momentum=0.9)
    sched = trial.scheduler(opt)
    gen = torch.Generator().manual_seed(trial.seed)
    start, state = 0, trial.checkpoint
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["gen"])
        start = state["step"]
    if calls is not None:
        Path(calls, f"{trial.trial_id}-{trial.total_steps}-from{start}").touch()
    lrs = []
    for step in range(start + 1, trial.total_steps + 1):
        idx = torch.randint(len(data["y_train"]), (32,), generator=gen)
        loss = F.cross_entropy(model(data["x_train"][idx]), data["y_train"][idx])
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 0 or step == trial.total_steps:
            with torch.no_grad():
                val = F.cross_entropy(model(data["x_val"]), data["y_val"]).item()
            trial.report({"step": step, "val_loss": val, "train_loss": loss.item(),
                          "lr_ok": float(lrs == trial.lr_curve[start:step])},
                         checkpoint={"step": step, "model": model.state_dict(),
                                     "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict(), "gen": gen.get_state()})
            if crash_at is not None and step >= crash_at and state is None:
                raise RuntimeError("worker lost")  # first start only: the restart resumes


def one_step(trial) -> None:
    trial.report({"step": trial.total_steps, "val_loss": 1.0 / trial.lr})


def test_without_ray_initialised_it_starts_a_local_ray_and_stops_it(tmp_path, monkeypatch
                                                                   ) -> None:
    # first in the module, before the shared fixture starts Ray; never attaches to a head
    # some `ray start` left recorded on this machine (Ray's default for address=None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    result = tune_schedule(one_step, budget_steps=4, optimizer_lr=0.1, budget_fractions=(1.0,),
                           num_trials=1, finalist_seeds=0, storage_path=str(tmp_path),
                           name="own-ray", resources={"cpu": 1})
    assert result.best is not None and result.best.total_steps == 4
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data():
    return load_digits()


def _search_params(sink: RecordingSink) -> list[tuple]:
    return sorted((r.budget_steps, r.params.get("candidate"), r.params.get("phi"),
                   r.params.get("phases"), r.params.get("lr"))
                  for r in sink.trials.values() if r.params.get("kind") == "search")


def test_a_user_loop_is_tuned_deterministically_and_restored(local_ray, data, tmp_path
                                                            ) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()
    kw = dict(SMALL, storage_path=str(tmp_path / "runs"),
              with_parameters={"data": data, "calls": str(calls)})
    sink = RecordingSink()
    result = tune_schedule(logreg, name="a", sink=sink, **kw)

    best = result.best
    assert best is not None and best.total_steps == T and best.metric == "val_loss"
    assert len(best.lr_curve) == T and np.isfinite(best.value)
    assert result.mode == "min"
    # the counts are the trials Ray ran: one record per trial, all finished at their horizon
    assert sum(r.num_trials for r in result.rungs) == len(sink.trials) == len(list(calls.iterdir()))
    assert result.rungs[0].num_trials == 4 and result.rungs[0].steps == T // 2
    for rung in result.rungs:
        recs = [r for r in sink.trials.values() if r.budget_steps == rung.steps]
        assert rung.num_completed == rung.num_trials == len(recs)
        assert all(r.status == "terminated" and r.step == rung.steps for r in recs)
        assert all(r.metrics["val_loss"] > 0 for r in recs)
    assert result.compute.search_steps == sum(r.steps * r.num_trials for r in result.rungs)

    again = RecordingSink()  # same seed, new name: the same candidates, trained afresh
    second = tune_schedule(logreg, name="b", sink=again, **kw)
    assert _search_params(again) == _search_params(sink)
    assert (second.best.phi, second.best.phases, second.best.eta_max) == (
        best.phi, best.phases, best.eta_max)

    before = len(list(calls.iterdir()))
    restored_sink = RecordingSink()  # same name: every rung restored, nothing trained again
    restored = tune_schedule(logreg, name="a", sink=restored_sink, **kw)
    assert len(list(calls.iterdir())) == before
    assert not restored_sink.trials
    assert restored.best.value == best.value and restored.best.trial_id == best.trial_id

    other = dict(kw, optimizer_lr=0.05)  # another plan under the same name: refused, with how
    with pytest.raises(RestoredRunMismatchError, match="name='a' holds runs of another plan"):
        tune_schedule(logreg, name="a", **other)


def test_a_restarted_trial_resumes_from_its_checkpoint(local_ray, data, tmp_path) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()
    spec = build_spec(name="resume", storage_path=str(tmp_path), max_failures=1, **SMALL)
    runs = [(Candidate(0, {"phi": 1.0, "phases": 1, "lr": 0.1}), 0)]
    plain = run_candidates(spec, "plain", T, runs,
                           user_trainable(logreg, {"data": data}), RecordingSink())
    crashing = run_candidates(spec, "crash", T, runs, user_trainable(
        logreg, {"data": data, "calls": str(calls), "crash_at": 20}), RecordingSink())
    starts = sorted(p.name.split("-from")[1] for p in calls.iterdir())
    assert starts == ["0", "20"]  # the restart began after the last checkpoint, not at 0
    # the user's optimizer followed trial.lr_curve exactly (checked by the loop itself)
    assert plain[0].metrics["lr_ok"] == crashing[0].metrics["lr_ok"] == 1.0
    assert crashing[0].completed
    assert crashing[0].value == pytest.approx(plain[0].value, rel=1e-6)  # same run, resumed


def never_reports_the_metric(trial) -> None:
    trial.report({"step": trial.total_steps, "val_accuracy": 0.5})


def returns_early(trial) -> None:
    trial.report({"step": 1, "val_loss": 1.0})


def test_a_function_without_the_final_metric_fails_its_trials_saying_why(local_ray, tmp_path
                                                                        ) -> None:
    kw = dict(SMALL, num_trials=1, budget_fractions=(1.0,), finalist_seeds=0,
              storage_path=str(tmp_path))
    with pytest.raises(StudyFailedError, match="must carry the study's metric 'val_loss'"):
        tune_schedule(never_reports_the_metric, name="no-metric", **kw)
    with pytest.raises(StudyFailedError, match="returned after reporting up to step 1 of "
                                               f"total_steps={T} without the final report"):
        tune_schedule(returns_early, name="early", **kw)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(budget_steps=0), "budget_steps must be an integer >= 1, got 0"),
    (dict(budget_steps=-5), "budget_steps"),
    (dict(budget_steps=2.5), "budget_steps"),
    (dict(optimizer_lr=0.0), "optimizer_lr must be a finite number > 0"),
    (dict(optimizer_lr=float("nan")), "optimizer_lr"),
    (dict(metric="val_f1"), "metric must be one of val_loss, val_accuracy, val_perplexity"),
    (dict(metric="val_loss", mode="max"), "mode='max' contradicts metric 'val_loss'"),
    (dict(optimizer="lion"), "optimizer must be 'sgd' or 'adamw'"),
    (dict(num_trials=0), "num_trials must be an integer >= 1"),
    (dict(budget_fractions=(0.0, 1.0)), r"budget fraction 0.0 is outside \(0, 1\]"),
    (dict(compare=["nope"]), "compare: unknown baseline 'nope'"),
    (dict(compare=["schedulefree"]), "compare: 'schedulefree' needs phitune"),
    (dict(resources={"cpu": 1, "tpu": 1}), r"resources: unknown key\(s\) \['tpu'\]"),
    (dict(phi_min=0.0), "phi_min must be > 0"),
    (dict(seed=-1), "seed must be an integer >= 0"),
])
def test_bad_arguments_are_value_errors_naming_them(kwargs, match) -> None:
    args = dict(budget_steps=T, optimizer_lr=0.1, storage_path="/nonexistent", name="x")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        tune_schedule(never_reports_the_metric, **args)  # refused before Ray starts


def test_unknown_settings_and_a_non_callable_are_refused() -> None:
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['phi_maxx'\]"):
        tune_schedule(returns_early, budget_steps=T, optimizer_lr=0.1, phi_maxx=3)
    with pytest.raises(ValueError, match="train_fn must be callable"):
        tune_schedule("train.py", budget_steps=T, optimizer_lr=0.1)  # type: ignore[arg-type]


def _trial(**params) -> Trial:
    spec = build_spec(name="t", budget_steps=T, optimizer_lr=0.1)
    cand = Candidate(0, {"phi": 2.0, "phases": 2, "lr": 0.2, **params})
    return Trial({"trial": {"candidate": 0, **candidate_config(spec, cand, T, 3).to_dict()}})


def test_the_trial_object_carries_the_schedule_and_checks_reports() -> None:
    trial = _trial()
    assert (trial.total_steps, trial.seed, trial.lr, trial.metric) == (T, 3, 0.2, "val_loss")
    assert trial.config["schedule"] == "uba" and trial.config["phi"] == 2.0
    assert trial.tags == {"candidate": 0}
    ref = create_schedule("uba", T, eta_max=0.2, phi=2.0, phases=2, variant="restart",
                          eta_min=0.0, warmup_steps=0).values()
    assert trial.lr_curve == pytest.approx(ref, rel=1e-12)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = trial.scheduler(opt)
    seen = []
    for _ in range(T):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(trial.lr_curve, rel=1e-12)

    with pytest.raises(TrialReportError, match="needs the step"):
        trial.report({"val_loss": 1.0})
    with pytest.raises(TrialReportError, match=r"outside 1..total_steps=30"):
        trial.report({"val_loss": 1.0}, step=31)
    with pytest.raises(TrialReportError, match="must carry the study's metric 'val_loss'; got "
                                               r"keys \['val_accuracy'\]"):
        trial.report({"step": T, "val_accuracy": 0.9})
    with pytest.raises(TrialReportError, match="not a finite number: the run diverged"):
        trial.report({"step": 5, "val_loss": float("nan")})
    with pytest.raises(TrialReportError, match="without the final report"):
        trial.finish()


def test_the_readme_snippet_runs_as_written(local_ray, tmp_path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("<!-- library:begin -->")[1].split("<!-- library:end -->")[0]
    (block,) = section.split("```python\n")[1:]
    code = block.split("```")[0].replace("/tmp/phitune-readme", str(tmp_path))
    ns: dict = {"__name__": "readme_library"}  # not importable: Ray pickles train_fn by value
    exec(compile(code, "README library mode", "exec"), ns)
    result = ns["result"]
    assert result.best.total_steps == 40 and np.isfinite(result.best.value)
    assert [r.steps for r in result.rungs] == [20, 40] and result.rungs[0].num_trials == 4
