"""Library mode recorded in a real phitune server (``service.library.tune_schedule(...,
server=URL)``): the user's own loop (``tests/tuning/test_library.py``'s logistic regression on
digits) runs on a real local Ray in this process; a real API (``phitune serve``, with a token)
shows the study like any other: running, then succeeded, its trials, ``/best`` equal to the
local result's best, and ``phitune best ID`` printing it. A study whose function never reports
the metric ends failed there, with the reason, and the error is re-raised here.
"""

from __future__ import annotations

import pytest
import ray

from service.cli.demo import _stop, start_api
from service.cli.format import format_best
from service.cli.main import main as cli_main
from service.client import PhiTuneClient
from service.library import tune_schedule
from tests.tuning.test_library import load_digits, logreg, never_reports_the_metric
from tuning.study import StudyFailedError

pytestmark = pytest.mark.e2e

TOKEN = "library-e2e-token"
T = 30
KW = dict(budget_steps=T, optimizer_lr=0.1, budget_fractions=(0.5, 1.0), num_trials=2,
          finalist_seeds=0, seed=0, resources={"cpu": 1})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("library-api")
    api, url = start_api(tmp, None, tmp / "api.log", extra_env={
        "PHITUNE_API_TOKEN": TOKEN, "PHITUNE_RAY_DASHBOARD": "false"})
    try:
        yield url
    finally:
        _stop(api)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_library_study_shows_in_the_server_like_any_study(server, local_ray, tmp_path,
                                                           capsys) -> None:
    seen: dict[str, object] = {}

    def created(study) -> None:
        with PhiTuneClient(server, token=TOKEN) as c:
            listed = {s.id: s.status for s in c.list().data}
        seen.update(id=study.id, listed=listed.get(study.id), trainer=study.spec.trainer)

    result = tune_schedule(logreg, server=server, token=TOKEN, name="lib-e2e",
                           storage_path=str(tmp_path), on_created=created,
                           with_parameters={"data": load_digits()}, **KW)
    study_id = str(seen["id"])
    assert (seen["listed"], seen["trainer"]) == ("running", "library")
    assert result.best is not None
    with PhiTuneClient(server, token=TOKEN) as client:
        study = client.get(study_id)
        assert study.status == "succeeded" and study.error is None
        assert study.spec.budget.steps == T and study.spec.metric == "val_loss"
        assert {s.id: s.status for s in client.list().data}[study_id] == "succeeded"
        trials = client.trials(study_id)
        assert trials.count >= KW["num_trials"]
        assert {t.status for t in trials.data} == {"terminated"}
        assert {t.budget_steps for t in trials.data} == {T // 2, T}
        assert all("val_loss" in t.metrics for t in trials.data)
        best = client.best(study_id)
        assert best.model_dump() == result.best.to_dict()
        assert study.progress.best_value == pytest.approx(
            min(t.metrics["val_loss"] for t in trials.data if t.budget_steps == T))
        assert client.result(study_id).budgets[-1].budget_steps == T
    capsys.readouterr()
    assert cli_main(["--url", server, "--token", TOKEN, "best", study_id]) == 0
    out = capsys.readouterr().out
    assert format_best(best) in out


def test_a_failing_study_is_marked_failed_and_the_error_raised(server, local_ray,
                                                              tmp_path) -> None:
    ids: list[str] = []
    with pytest.raises(StudyFailedError, match="must carry the study's metric 'val_loss'"):
        tune_schedule(never_reports_the_metric, server=server, token=TOKEN, name="lib-fail",
                      storage_path=str(tmp_path), on_created=lambda s: ids.append(s.id),
                      **dict(KW, num_trials=1, budget_fractions=(1.0,)))
    with PhiTuneClient(server, token=TOKEN) as client:
        study = client.get(ids[0])
        assert study.status == "failed"
        assert study.error is not None and "StudyFailedError" in study.error
        assert "val_loss" in study.error
        assert {t.status for t in client.trials(ids[0]).data} == {"error"}
