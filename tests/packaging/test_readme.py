"""Every claim of README's install and integration sections is run here or named test file.

The python blocks between ``<!-- interop:begin -->`` and ``<!-- interop:end -->`` run in order
in one namespace whose ``best`` is what ``client.best(id)`` returns (a ``BestSchedule`` parsed
from JSON); then what their comments state is checked. The install section's extras, lock
files and Docker line are checked against pyproject.toml, the Makefile and the Dockerfile
(the fresh-venv install itself: test_wheel_install.py; the image: tests/deploy).
"""

from __future__ import annotations

import re
import tomllib
import types
from pathlib import Path

import pytest
import torch

from service.schemas import BestSchedule
from tuning.schedules import StepUpdateScheduler, create_schedule

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _section(name: str) -> str:
    m = re.search(rf"<!-- {name}:begin -->(.*?)<!-- {name}:end -->", README, re.S)
    assert m, f"README has no {name} markers"
    return m.group(1)


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.fixture()
def best() -> BestSchedule:
    curve = create_schedule("uba", 40, phi=0.8, phases=2, eta_max=0.05, eta_min=0.001).values()
    payload = BestSchedule(schedule="uba", phi=0.8, phases=2, eta_max=0.05, eta_min=0.001,
                           variant="restart", total_steps=40, metric="val_accuracy",
                           value=0.9, trial_id="t1", lr_curve=curve).model_dump_json()
    return BestSchedule.model_validate_json(payload)  # as the client receives it


def test_interop_snippets_run_and_do_what_they_say(best: BestSchedule) -> None:
    torch.set_num_threads(1)
    blocks = _python_blocks(_section("interop"))
    assert len(blocks) == 4
    ns: dict = {"best": best}
    exec(compile(blocks[0], "README interop 1", "exec"), ns)
    # the loop ran the whole budget on the tuned absolute LRs
    assert ns["scheduler"].last_epoch == best.total_steps
    assert ns["scheduler"].get_last_lr()[0] == pytest.approx(best.lr_curve[-1], rel=1e-12)

    exec(compile(blocks[1], "README interop 2", "exec"), ns)
    hf = ns["scheduler"]
    assert isinstance(hf, torch.optim.lr_scheduler.LambdaLR)
    assert ns["optimizer"].param_groups[0]["lr"] == pytest.approx(3e-4 / 100)  # warmup 1/W

    exec(compile(blocks[2], "README interop 3", "exec"), ns)
    module = types.SimpleNamespace(parameters=ns["model"].parameters,
                                   trainer=types.SimpleNamespace(estimated_stepping_batches=500))
    conf = ns["configure_optimizers"](module)
    assert conf["lr_scheduler"]["interval"] == "step" and conf["lr_scheduler"]["frequency"] == 1
    assert conf["lr_scheduler"]["scheduler"].optimizer is conf["optimizer"]

    exec(compile(blocks[3], "README interop 4", "exec"), ns)
    assert isinstance(ns["scheduler"], StepUpdateScheduler)
    assert ns["optimizer"].param_groups[0]["lr"] == pytest.approx(
        3e-4 * ns["schedule"].lr(500), rel=1e-12)
    ns["scheduler"].step(3)  # no-op
    assert ns["optimizer"].param_groups[0]["lr"] == pytest.approx(
        3e-4 * ns["schedule"].lr(500), rel=1e-12)

    for style in ("timm", "lightning"):  # the prose's other two styles
        best.to_scheduler(torch.optim.SGD(ns["model"].parameters(), lr=1.0), style=style)


def test_install_section_matches_pyproject_makefile_and_dockerfile() -> None:
    text = _section("install")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    named = set(re.findall(r"`\[(\w+)\]`|phitune\[(\w+)\]", text))
    named = {a or b for a, b in named}
    assert named == set(extras) == {"schedules", "server", "postgres", "vision", "dashboard",
                                    "mlflow", "wandb", "test"}
    base = sorted(d.split(">")[0].lower() for d in project["dependencies"])
    assert base == ["httpx", "pydantic", "pyyaml"] and "httpx, pydantic, PyYAML only" in text
    server = " ".join(extras["server"])
    assert "ray[default,tune]>=2.52,<3" in server and "optuna>=4.0,<6" in server
    assert "Ray >= 2.52 < 3, Optuna >= 4 < 6" in text
    assert any(r.startswith("optuna-dashboard") for r in extras["dashboard"])
    assert any(r.startswith("psycopg") for r in extras["postgres"])
    make = (REPO / "Makefile").read_text()
    assert "make lock" in text and re.search(r"^lock:", make, re.M)
    assert "`.[server,postgres,test]`" in text and "-e '.[server,postgres,test]'" in make
    for lock in ("requirements/runtime.lock", "requirements/dev.lock"):
        assert lock in text and (REPO / lock).exists() and lock in make
    assert "`.[server,postgres]`" in text
    assert "'.[server,postgres]'" in (REPO / "deploy" / "Dockerfile").read_text()
