"""Gradient norms from a real Ray Tune trial to the API: the trainable's final report, the Tune
callback's terminal TrialRecord, the ladder's Outcome, the store (its own table, migration
0008), ``GET /v1/studies/{id}/trials/{trial}/grad_norms`` and the client; then refined."""

from __future__ import annotations

import dataclasses
import math

import pytest
from fastapi.testclient import TestClient

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from service.api.main import create_app  # noqa: E402
from service.config import Settings  # noqa: E402
from service.launch.study_driver import StoreSink  # noqa: E402
from service.schemas import GradNormsPublic  # noqa: E402
from service.store import Store  # noqa: E402
from service.store.grad_norms import get_grad_norms, save_grad_norms  # noqa: E402
from trainables.grad_norms import GRAD_NORMS, GradNorms  # noqa: E402
from trainables.tune_trainable import TRIAL_KEY, uba_trainable  # noqa: E402
from tuning.executor import SinkCallback  # noqa: E402
from tuning.ladder import Candidate, Outcome  # noqa: E402
from tuning.results import TrialRecord  # noqa: E402
from tuning.schedules import create_schedule  # noqa: E402

T = 24
CONFIG = {
    "model": "mlp", "model_kwargs": {"hidden_sizes": [16]}, "dataset": "digits",
    "optimizer": "adamw", "lr": 3e-3, "batch_size": 32, "total_steps": T, "eval_every": 12,
    "schedule": "cosine", "seed": 0, "device": "cpu", "metric": "val_accuracy",
}


class EventSink:
    """A StudySink that keeps every trial event in order (RecordingSink keeps the last)."""

    def __init__(self) -> None:
        self.trials: list[TrialRecord] = []

    def on_start(self, *, dashboard_url: str | None) -> None:
        pass

    def on_trial(self, record: TrialRecord) -> None:
        self.trials.append(record)

    def on_finish(self, result) -> None:
        pass


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_mirror_has_the_dataclass_fields() -> None:
    assert set(GradNormsPublic.model_fields) == {
        f.name for f in dataclasses.fields(GradNorms)} | {"trial_id"}


def test_a_trials_norms_reach_the_api_and_refine(ray_local, tmp_path) -> None:
    sink = EventSink()
    tuner = tune.Tuner(
        tune.with_resources(uba_trainable, {"cpu": 1}),
        param_space={TRIAL_KEY: CONFIG},
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(name="norms", storage_path=str(tmp_path / "ray"), verbose=0,
                                  callbacks=[SinkCallback(sink, T, kind="search")]))
    result = tuner.fit()[0]
    assert result.error is None
    # the final report keeps the nested dict (Tune does not flatten what it hands back)
    norms = GradNorms.from_metrics(result.metrics)
    assert norms is not None and norms.norm == "l1" and len(norms.values) == T
    outcome = Outcome(candidate=Candidate(0, {}), steps=T, seed=0, trained_steps=T,
                      value=1.0, last_value=1.0, status="terminated",
                      metrics=dict(result.metrics))
    assert outcome.grad_norms == norms
    running = [r for r in sink.trials if r.status == "running"]
    final = sink.trials[-1]
    assert running and all(r.grad_norms is None for r in running)
    assert final.status == "terminated" and final.grad_norms == norms.to_dict()
    assert GRAD_NORMS not in final.metrics  # the trial list stays small

    settings = Settings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        store = Store(settings.sqlalchemy_url)
        sid = store.create_study({"model": "mlp"}, "norms")[0].id
        sink_store = StoreSink(store, sid, "val_accuracy")
        for record in sink.trials:
            sink_store.on_trial(record)
        r = c.get(f"/v1/studies/{sid}/trials/{final.trial_id}/grad_norms")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["trial_id"] == final.trial_id and body["norm"] == "l1"
        assert body["values"] == list(norms.values)  # float32 round trip, exact
        assert c.get(f"/v1/studies/{sid}/trials/nope/grad_norms").status_code == 404
        assert c.get(f"/v1/studies/nope/trials/{final.trial_id}/grad_norms").status_code == 404

        from service.client import NotFound, PhiTuneClient

        with PhiTuneClient("http://127.0.0.1", transport=c._transport) as client:
            got = client.grad_norms(sid, final.trial_id)
            with pytest.raises(NotFound):
                client.grad_norms(sid, "nope")
        assert got.per_step() == list(norms.per_step())
        refined = create_schedule("refined", got.total_steps, norms=got.per_step(),
                                  optimizer=got.refine_optimizer(), eta_max=3e-3)
        assert refined.values() == create_schedule(
            "refined", T, eta_max=3e-3, **norms.schedule_params()).values()
        store.engine.dispose()


def test_store_keeps_strided_norms_and_reads_non_finite_as_null(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    sid = store.create_study({}, None)[0].id
    save_grad_norms(store, sid, "t0", {"norm": "l2", "total_steps": 5, "stride": 2,
                                       "values": [1.5, float("inf"), 0.25]})
    got = get_grad_norms(store, sid, "t0")
    assert got == {"trial_id": "t0", "norm": "l2", "total_steps": 5, "stride": 2,
                   "values": [1.5, None, 0.25]}
    save_grad_norms(store, sid, "t0", {"norm": "l2", "total_steps": 1, "stride": 1,
                                       "values": [2.0]})  # replaced, not duplicated
    assert get_grad_norms(store, sid, "t0")["values"] == [2.0]
    assert get_grad_norms(store, sid, "t1") is None
    public = GradNormsPublic(trial_id="t", norm="l2", total_steps=5, stride=2,
                             values=[1.0, 2.0, 3.0])
    assert public.per_step() == [1.0, 1.0, 2.0, 2.0, 3.0]
    assert not math.isnan(public.per_step()[0])


def test_refined_through_the_schedule_route_and_the_cli(tmp_path, capsys) -> None:
    """``GET /v1/schedules/refined`` and ``phitune plot-schedule refined`` take the norms as a
    list like any list parameter; bad norms are a 422 (CLI error) naming ``norms``."""
    import json

    from fastapi import FastAPI

    from service.api.routes.schedules import router
    from service.cli import main

    app = FastAPI()
    app.include_router(router)
    c = TestClient(app, base_url="http://127.0.0.1")
    norms = [4.0, 3.0, 1.0, 1.0, 1.0, 0.5]
    r = c.get("/v1/schedules/refined", params={"steps": 6, "norms": ",".join(map(str, norms)),
                                               "optimizer": "adam", "eta_max": "0.1"})
    assert r.status_code == 200, r.text
    want = create_schedule("refined", 6, norms=norms, optimizer="adam", eta_max=0.1)
    assert r.json()["values"] == want.values()
    for bad in ("1,2,3", "1,nan,1,1,1,1", "1,-1,1,1,1,1"):
        r = c.get("/v1/schedules/refined", params={"steps": 6, "norms": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "norms"]
    r = c.get("/v1/schedules/refined", params={"steps": 6, "optimizer": "lion"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "optimizer"]
    assert c.get("/v1/schedules/plot", params={"name": "refined", "steps": 6}).status_code == 200

    rc = main(["plot-schedule", "refined", "--steps", "6", "--param",
               "norms=" + ",".join(map(str, norms)), "--param", "optimizer=adam", "--param",
               "eta_max=0.1", "--values"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["values"] == want.values()
    rc = main(["plot-schedule", "refined", "--steps", "6", "--param", "norms=1,2", "--values"])
    assert rc != 0 and "'norms'" in capsys.readouterr().err
