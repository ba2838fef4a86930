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
