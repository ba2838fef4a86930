"""The end-of-run check (``tests/conftest.py``) finds exactly the Ray heads this run started and
stops them: a stand-in GCS without the run's marker is never touched, and the real shared head
``phitune serve`` starts (``service.launch.ray_head.ensure_head``) is found and stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.ray_heads import RUN_MARKER, heads_of, leftover_heads, stop


def _fake_gcs(tmp_path: Path, marker: str | None) -> subprocess.Popen:
    """A ``sleep`` named ``gcs_server`` in a session of its own, like ``ray start``'s."""
    exe = tmp_path / "gcs_server"
    if not exe.exists():
        shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    env = {k: v for k, v in os.environ.items() if k != RUN_MARKER}
    if marker is not None:
        env[RUN_MARKER] = marker
    return subprocess.Popen([str(exe), "300"], env=env, start_new_session=True)


def test_only_heads_with_the_runs_marker_are_found_and_stopped(tmp_path) -> None:
    marker = os.environ[RUN_MARKER]
    ours = _fake_gcs(tmp_path, marker)
    foreign = _fake_gcs(tmp_path, None)  # another user's, or the developer's own head
    other_run = _fake_gcs(tmp_path, "another-test-run")
    try:
        deadline = time.monotonic() + 10
        while not heads_of(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        (head,) = heads_of(marker)
        assert head.pid == ours.pid and head.session == ours.pid
        stop(head)
        assert ours.wait(10) != 0
        assert leftover_heads(marker, grace_s=0) == []
        assert foreign.poll() is None and other_run.poll() is None, "not ours: left alone"
    finally:
        for proc in (ours, foreign, other_run):
            proc.kill()
            proc.wait()


@pytest.mark.e2e
def test_the_shared_head_phitune_serve_starts_is_found_and_stopped(tmp_path) -> None:
    from service.config import Settings
    from service.launch.ray_head import _free_port, ensure_head

    marker = os.environ[RUN_MARKER]
    before = {h.pid for h in heads_of(marker)}
    settings = Settings(data_dir=tmp_path, ray_head_port=_free_port(),
                        ray_head_dashboard_port=_free_port(), ray_num_cpus=1)
    head = ensure_head(settings)
    assert head.started
    try:
        new = [h for h in heads_of(marker) if h.pid not in before]
        assert [h.session for h in new] == [head.session_id], new
    finally:
        for h in heads_of(marker):
            if h.session == head.session_id:
                stop(h)
    assert all(h.session != head.session_id for h in leftover_heads(marker))
