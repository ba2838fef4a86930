"""Where to watch a study: the Ray dashboard, TensorBoard and optuna-dashboard.

Every study response carries them (``StudyPublic``); ``GET /v1/info`` names the service-wide
ones. Computed from the settings, so they cost nothing per request.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from service.config import Settings


def optuna_storage(settings: Settings) -> str | None:
    """The Optuna RDB storage URL (the store's database), password hidden; None when the
    search state is kept in memory (``PHITUNE_OPTUNA_IN_STORE=false``)."""
    if not settings.optuna_in_store:
        return None
    return _without_password(settings.sqlalchemy_url)


@lru_cache(maxsize=16)
def _without_password(url: str) -> str:
    """Parsing a URL costs more than the rest of a study response; every study has the same."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def ray_mode(settings: Settings) -> str:
    if settings.ray_address:
        return "shared" if settings.local_ray == "shared" and settings.ray_address.startswith(
            "127.0.0.1:") else "cluster"
    return "per-study"


@dataclass(frozen=True)
class WatchRoots:
    """What every study's watch fields derive from, computed once per settings: building
    them per study (paths, the database URL) cost more than the rest of a page's row."""

    tensorboard_root: str
    optuna_storage: str | None
    optuna_dashboard_command: str | None

    @classmethod
    def of(cls, settings: Settings) -> WatchRoots:
        storage = optuna_storage(settings)
        return cls(str(settings.ray_results_path), storage,
                   _dashboard_command(storage) if storage else None)

    def fields(self, study_id: str) -> dict[str, Any]:
        """``tensorboard_logdir``, ``optuna_storage`` and ``optuna_dashboard_command`` of a
        study (its Ray dashboard URL is stored by its driver)."""
        return {"tensorboard_logdir": os.path.join(self.tensorboard_root, study_id),
                "optuna_storage": self.optuna_storage,
                "optuna_dashboard_command": self.optuna_dashboard_command}


def study_watch_fields(settings: Settings, study_id: str) -> dict[str, Any]:
    """:meth:`WatchRoots.fields` of ``study_id`` for ``settings``."""
    return WatchRoots.of(settings).fields(study_id)


@lru_cache(maxsize=16)
def _dashboard_command(storage: str) -> str:
    return f"optuna-dashboard {shlex.quote(storage)}"
