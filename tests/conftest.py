"""Test-suite wide settings.

Under CI (``CI=true``) hypothesis runs derandomized: the same examples every run, so a red CI
is reproducible and a green one is not luck. Locally it explores new examples each run.

Every process the run starts carries :data:`tests.ray_heads.RUN_MARKER`; at the end of the
session a Ray head started by the run and still running is stopped and fails the run
(``pytest_sessionfinish``): tests stop what they start.
"""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import settings

from tests.ray_heads import RUN_MARKER, leftover_heads, stop

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# `phitune serve` starts (or attaches to) one long-lived Ray head by default; a test must not
# leave one behind or share one with another test by accident. Tests of the shared head set
# PHITUNE_LOCAL_RAY=shared with their own ports and stop it themselves.
os.environ.setdefault("PHITUNE_LOCAL_RAY", "per-study")
os.environ[RUN_MARKER] = uuid.uuid4().hex  # fresh per run, a nested pytest too


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No Ray head this run started may outlive it: stop any left and fail the run."""
    import sys

    if "ray" in sys.modules:  # an in-process ray.init a test did not shut down
        import ray

        if ray.is_initialized():
            ray.shutdown()
    left = leftover_heads(os.environ[RUN_MARKER])
    if not left:
        return
    for head in left:
        stop(head)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{len(left)} Ray head(s) started by this test run were still running; stopped:"]
    lines += [f"  pid {h.pid} (session {h.session}): {h.cmdline}" for h in left]
    if reporter is not None:
        reporter.write("\n")
    for line in lines:
        if reporter is not None:
            reporter.write_line(line, red=True)
        else:
            print(line, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
