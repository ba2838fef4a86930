"""Tracker settings (MLflow, W&B): off by default, carried to the driver through its
environment and the study spec, and a startup error naming the setting when the tracker's
package is missing. The trackers logging a real study: tests/tuning/test_tracking.py."""

from __future__ import annotations

import os
import sys

import pytest

from service.api.main import create_app
from service.config import Settings
from service.launch.env import driver_env
from service.launch.runner import spec_from_study
from service.launch.study_driver import configure_trackers
from service.schemas import StudyCreate
from tuning.specs import TrackingSpec

SPEC = StudyCreate.model_validate({"model": "mlp", "dataset": "digits", "budget": {"steps": 40},
                                   "num_trials": 2})


def test_trackers_are_off_by_default(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert spec_from_study("s", SPEC, settings, 40).tracking == TrackingSpec()
    env = driver_env(settings)
    assert "PHITUNE_MLFLOW_TRACKING_URI" not in env and "PHITUNE_WANDB_PROJECT" not in env
    settings.check_trackers()  # nothing configured, nothing to check


def test_tracker_settings_reach_the_driver_and_its_spec(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "")  # recorded, so what the driver sets is undone after
    monkeypatch.delenv("WANDB_MODE")
    settings = Settings(data_dir=tmp_path, mlflow_tracking_uri="sqlite:///m.db",
                        mlflow_experiment="phi", wandb_project="uba", wandb_mode="offline")
    env = driver_env(settings)
    assert env["PHITUNE_MLFLOW_TRACKING_URI"] == "sqlite:///m.db"
    for key, value in env.items():  # the driver's Settings read them back
        monkeypatch.setenv(key, value)
    driver = Settings()
    configure_trackers(driver)
    assert os.environ["WANDB_MODE"] == "offline", "Ray's W&B callback skips the API key"
    assert spec_from_study("s", SPEC, driver, 40).tracking == TrackingSpec(
        mlflow_tracking_uri="sqlite:///m.db", mlflow_experiment="phi", wandb_project="uba",
        wandb_mode="offline")


@pytest.mark.parametrize(("field", "module", "setting"), [
    ("mlflow_tracking_uri", "mlflow", "PHITUNE_MLFLOW_TRACKING_URI"),
    ("wandb_project", "wandb", "PHITUNE_WANDB_PROJECT"),
])
def test_a_tracker_without_its_package_stops_the_api_at_startup(
        tmp_path, monkeypatch, field, module, setting) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed (CI: really absent)
    settings = Settings(data_dir=tmp_path, **{field: "x"})
    with pytest.raises(ValueError, match=rf"{setting} is set but {module} is not installed"):
        create_app(settings)
