"""Test-suite wide settings.

Under CI (``CI=true``) hypothesis runs derandomized: the same examples every run, so a red CI
is reproducible and a green one is not luck. Locally it explores new examples each run.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# `phitune serve` starts (or attaches to) one long-lived Ray head by default; a test must not
# leave one behind or share one with another test by accident. Tests of the shared head set
# PHITUNE_LOCAL_RAY=shared with their own ports and stop it themselves.
os.environ.setdefault("PHITUNE_LOCAL_RAY", "per-study")
