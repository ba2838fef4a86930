"""The one mapping from a curvature request to what its driver runs
(:func:`service.launch.runner.curvature_spec_from_request`): every request field arrives."""

from __future__ import annotations

from service.config import Settings
from service.launch.runner import curvature_spec_from_request
from service.schemas import CurvatureCreate


def test_every_request_field_reaches_the_spec(tmp_path):
    settings = Settings(data_dir=tmp_path)
    req = CurvatureCreate(
        model="mlp", model_kwargs={"hidden_sizes": [16]}, dataset="digits",
        dataset_kwargs={"subset": 100}, optimizer="adamw", num_batches=3, batch_size=32,
        lanczos_steps=7, num_probes=2, ggn=True, seed=5,
        resources={"cpu": 2, "gpu": 0}, at_steps=[0, 10], train_steps=20, lr=0.05, phi=3.0,
        phases=2, train_batch_size=16)
    job = curvature_spec_from_request(req, settings)
    t = job.train
    assert (t.model, t.dataset, t.optimizer) == ("mlp", "digits", "adamw")
    assert t.model_kwargs == {"hidden_sizes": [16]} and t.dataset_kwargs == {"subset": 100}
    assert t.data_dir == str(settings.datasets_path)
    c = job.curv
    assert (c.num_batches, c.batch_size, c.lanczos_steps, c.num_probes, c.ggn, c.seed) == (
        3, 32, 7, 2, True, 5)
    assert (job.resources.cpu, job.resources.gpu) == (2, 0)
    assert job.at_steps == (0, 10) and job.train_steps == 20
    assert (job.phi, job.phases) == (3.0, 2)
    assert job.timeline_train is not None
    assert (job.timeline_train.lr, job.timeline_train.batch_size) == (0.05, 16)
    assert job.timeline_train.model == "mlp"

    plain = curvature_spec_from_request(CurvatureCreate(model="mlp", dataset="digits"), settings)
    assert plain.timeline_train is None and plain.at_steps == ()
