"""The two lock files pin exactly what the venv has, say how they are made, and are what the
Makefile installs with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCKS = (REPO / "requirements" / "runtime.lock", REPO / "requirements" / "dev.lock")


def test_locks_match_the_installed_venv() -> None:
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "lock.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_locks_name_their_command_and_split_runtime_from_dev() -> None:
    runtime, dev = ({line.split("==")[0].lower() for line in p.read_text().splitlines()
                     if line and not line.startswith("#")} for p in LOCKS)
    for p in LOCKS:
        assert "make lock" in p.read_text().split("\n\n")[0]
    assert {"ray", "optuna", "torch", "fastapi", "psycopg", "httpx"} <= runtime
    assert {"pytest", "ruff", "hypothesis", "import-linter"} <= dev
    assert not runtime & dev and "pytest" not in runtime


def test_makefile_installs_server_postgres_test_with_both_locks() -> None:
    make = (REPO / "Makefile").read_text()
    assert "-c requirements/runtime.lock -c requirements/dev.lock" in make
    assert "-e '.[server,postgres,test]'" in make
    assert "constraints.txt" not in make and not (REPO / "constraints.txt").exists()
