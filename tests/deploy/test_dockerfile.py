"""deploy/Dockerfile installs what docker-compose.yml and the KubeRay manifests need.

The image runs the API (``phitune serve``), the Ray head/workers and the study drivers, and
compose/k8s hand it ``postgresql+psycopg://`` URLs: so its install line must carry the
``server`` extra (FastAPI, Ray, Optuna, torch) and the extra that provides ``psycopg``, pinned
by the runtime lock, with the Ray version KubeRay declares. The image is built only where a
Docker engine answers (none on the CI machine: then that test skips and says so).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def _run_lines() -> list[str]:
    """The Dockerfile's RUN instructions with continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    return [line[4:] for line in text.splitlines() if line.startswith("RUN ")]


def _pip_installs() -> list[list[str]]:
    cmds = []
    for line in _run_lines():
        for part in line.split("&&"):
            words = shlex.split(part)
            if words[:2] == ["pip", "install"]:
                cmds.append(words[2:])
    return cmds


def _project_install() -> tuple[set[str], list[str]]:
    """(extras, other args) of the ``pip install .[...]`` of the project itself."""
    for args in _pip_installs():
        for a in args:
            m = re.fullmatch(r"\.(?:\[([\w,\s-]+)\])?", a)
            if m:
                extras = {e.strip() for e in (m.group(1) or "").split(",") if e.strip()}
                return extras, args
    raise AssertionError("deploy/Dockerfile has no `pip install .[...]` of the project")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _extras_providing(package: str) -> set[str]:
    opt = _pyproject()["optional-dependencies"]
    return {name for name, reqs in opt.items()
            if any(Requirement(r).name.lower() == package for r in reqs)}


def _deploy_text() -> str:
    files = [DEPLOY / "docker-compose.yml", *sorted((DEPLOY / "k8s").glob("*.yaml"))]
    return "\n".join(f.read_text() for f in files)


def test_image_installs_the_server_and_the_database_driver_compose_and_k8s_use() -> None:
    extras, args = _project_install()
    assert "server" in extras, "the image runs `phitune serve`, Ray and the drivers"
    text = _deploy_text()
    drivers = set(re.findall(r"postgresql\+(\w+)://", text))
    assert drivers == {"psycopg"}, drivers  # what compose and k8s/api.yaml hand the API
    for driver in drivers:
        providing = _extras_providing(driver)
        assert providing & extras, (
            f"compose/k8s use postgresql+{driver}:// but the image installs extras "
            f"{sorted(extras)}; {driver} comes with {sorted(providing)}")
    assert "server" in _extras_providing("ray") and "server" in _extras_providing("fastapi")


def test_image_pins_the_runtime_lock_and_kuberays_ray_version() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY requirements ./requirements" in dockerfile
    for args in _pip_installs():
        assert "-c" in args and args[args.index("-c") + 1] == "requirements/runtime.lock", args
    lock = (REPO / "requirements" / "runtime.lock").read_text()
    ray = re.search(r"^ray==(\S+)$", lock, re.M)
    assert ray, "runtime.lock pins ray"
    kuberay = re.search(r'rayVersion:\s*"([^"]+)"', (DEPLOY / "k8s" / "raycluster.yaml")
                        .read_text())
    assert kuberay and kuberay.group(1) == ray.group(1)
    assert "psycopg==" in lock and "psycopg-binary==" in lock


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@pytest.mark.slow
def test_image_builds_and_imports_server_and_driver() -> None:
    if not _docker_works():
        pytest.skip("no Docker engine answers `docker info` here")
    tag = "phitune-test:ci"
    subprocess.run(["docker", "build", "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(REPO)],
                   check=True, timeout=3600)
    out = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python", tag, "-c",
         "import psycopg, ray, optuna, fastapi, service.api.main, service.launch.study_driver;"
         " print(ray.__version__)"], check=True, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip()
