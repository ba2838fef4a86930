"""``pip install phitune`` is the light client: build the wheel, install it without extras in
a fresh virtualenv, and drive a real phitune server from there.

What it shows (README "Install"): the base install pulls only httpx, pydantic and PyYAML (and
their dependencies), torch / Ray / FastAPI / SQLAlchemy are absent, and the `phitune` CLI
still reads a running server (`status`, `list`, `--json`); a verb that needs the server extra
(`serve`) says which extra to install instead of a traceback. The server runs from the
project's own venv (the ``[server]`` extra). pip uses the machine's configured index, pinned
by requirements/runtime.lock so the client's versions are the tested ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest

from tests.servers import api_with_one_cancelled_study

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "optuna", "fastapi", "sqlalchemy", "uvicorn", "numpy", "alembic")

pytestmark = pytest.mark.slow


def _build_wheel(out: Path) -> Path:
    """Build from a copy of the sources (setuptools builds in-tree; keep the repo clean)."""
    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("service", "tuning", "trainables"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(src)], check=True, timeout=300)
    (wheel,) = out.glob("phitune-*.whl")
    return wheel


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(tmp)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    "-c", str(REPO / "requirements" / "runtime.lock"), str(wheel)],
                   check=True, timeout=600)
    yield venv, wheel


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real API (project venv) whose store holds one finished study (no Ray needed)."""
    spec = {"name": "wheel", "model": "mlp", "dataset": "digits",
            "optimizer": {"name": "sgd", "lr": 0.1}, "budget": {"steps": 100}, "num_trials": 2}
    with api_with_one_cancelled_study(tmp_path_factory.mktemp("server"), spec, "wheel") as api:
        yield api


def _phitune(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([str(venv / "bin" / "phitune"), *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=venv)


def test_wheel_metadata_base_is_the_client_and_extras_add(client_venv) -> None:
    _, wheel = client_venv
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_name).decode())
    requires = meta.get_all("Requires-Dist") or []
    base = sorted(r.split(">")[0].split("=")[0].split("[")[0].strip()
                  for r in requires if "extra ==" not in r)
    assert base == ["httpx", "pydantic", "pyyaml"]
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"server", "schedules", "vision", "postgres", "dashboard", "test"} <= extras
    server = [r for r in requires if "extra == \"server\"" in r]
    assert any(r.startswith("ray[default,tune]") and "<3" in r and ">=2.52" in r for r in server)
    assert any(r.startswith("optuna") and "<6" in r for r in server)


def test_base_install_has_no_torch_or_ray(client_venv) -> None:
    venv, _ = client_venv
    code = ("import importlib.util as u, json, sys; "
            f"print(json.dumps({{m: u.find_spec(m) is not None for m in {HEAVY!r}}}))")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True,
                         text=True, check=True, cwd=venv)
    found = json.loads(out.stdout)
    assert not any(found.values()), found
    # the client imports with what the base install has
    subprocess.run([str(venv / "bin" / "python"), "-c",
                    "import service.client, service.schemas, service.cli"], check=True, cwd=venv)
    # a tuned result names the extra that turns it into a scheduler
    code = ("from service.schemas import BestSchedule as B\n"
            "b = B(schedule='uba', phi=1.0, phases=1, eta_max=0.1, eta_min=0.0, "
            "variant='restart', total_steps=3, metric='val_accuracy', value=0.5, trial_id='t', "
            "lr_curve=[0.1, 0.05, 0.0])\n"
            "try:\n    b.to_scheduler(None)\nexcept ModuleNotFoundError as e:\n    print(e)\n")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True,
                         text=True, check=True, cwd=venv)
    assert "pip install 'phitune[schedules]'" in out.stdout, out


def test_client_cli_drives_a_running_server(client_venv, server) -> None:
    venv, _ = client_venv
    url, study_id = server
    res = _phitune(venv, "--url", url, "status", study_id)
    assert res.returncode == 0, res.stderr
    assert study_id in res.stdout and "cancelled" in res.stdout
    res = _phitune(venv, "--url", url, "status", study_id, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["status"] == "cancelled"
    res = _phitune(venv, "--url", url, "list")
    assert res.returncode == 0 and study_id in res.stdout, res.stderr
    res = _phitune(venv, "--url", url, "status", "no-such-study")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "phitune: error:" in res.stderr


def test_server_verbs_name_the_missing_extra(client_venv) -> None:
    venv, _ = client_venv
    res = _phitune(venv, "serve")
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert "phitune[server]" in res.stderr
